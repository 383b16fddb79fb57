"""Shared fixtures: composed configs pointed at temporary dirs, one generated demo dataset per session.
GPU tests skip without CUDA."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

import peftlab.identity  # noqa: F401  (registers the resolver sweep configs use, as the entry points do)
from peftlab.conf import CONFIG_DIR as CONF
from peftlab.conf import USER_CONFIG_ENV

os.environ[USER_CONFIG_ENV] = ""  # tests never read this machine's own overrides (~/.config/peftlab)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_wandb_settings():
    """W&B keeps its first ``wandb.init``'s settings (``WANDB_DIR``, mode) in a process-wide singleton: tear it down
    after each test so that a later test's offline run lands in its own dir (tests/test_report.py after test_train)."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A session-wide data dir (the demo is generated into it on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Compose the shipped ``train.yaml`` with overrides, writing into ``tmp_path``, reading data from ``data_dir``."""

    def _make(*overrides: str, config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.log_dir = str(tmp_path / "logs")
        GlobalHydra.instance().clear()
        return cfg

    return _make


@pytest.fixture
def cli_env(tmp_path, data_dir) -> dict[str, str]:
    """Environment for running the CLI in a subprocess: data and logs under temporary dirs, offline."""
    return {
        **os.environ,
        "PEFTLAB_DATA": str(data_dir),
        "PEFTLAB_LOGS": str(tmp_path / "logs"),
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "CI": "1",
    }
