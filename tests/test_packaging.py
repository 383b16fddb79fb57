"""The configs ship inside the package: Hydra finds them as ``pkg://peftlab.conf`` and adds the user config dir
(per-machine ``local/default.yaml``, the user's own config groups) after them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from peftlab.conf import CONFIG_DIR, CONFIG_PATH, USER_CONFIG_ENV, config_groups_help

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ("pyproject.toml", "README.md", "peftlab", "hydra_plugins")


def compose_train(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def test_user_config_dir_holds_local_overrides_and_own_groups(tmp_path, monkeypatch):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text("# @package _global_\nseed: 7\n")
    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "mine.yaml").write_text("defaults:\n  - adamw\n  - _self_\nlr: 0.123\n")
    monkeypatch.setenv(USER_CONFIG_ENV, str(tmp_path))
    cfg = compose_train("optim=mine")
    assert (cfg.seed, cfg.optim.lr) == (7, 0.123)


def test_no_user_config_dir_leaves_the_shipped_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(USER_CONFIG_ENV, str(tmp_path / "absent"))
    assert compose_train().seed == OmegaConf.load(CONFIG_DIR / "train.yaml").seed


def build_wheel_into(target: Path, work: Path) -> None:
    """``pip wheel`` of a copy of the sources (the checkout stays clean), installed with ``--target`` and no deps:
    the test reuses this environment's torch instead of installing anything."""
    source = work / "source"
    source.mkdir()
    for name in PACKAGED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work / "wheel", source], check=True)
    wheel = next((work / "wheel").glob("peftlab-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True)


@pytest.mark.slow
def test_the_wheel_runs_the_demo_outside_the_repository(tmp_path, data_dir):
    site = tmp_path / "site"
    build_wheel_into(site, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PYTHONPATH": str(site),
        "PEFTLAB_DATA": str(data_dir),
        "PEFTLAB_LOGS": str(tmp_path / "logs"),
        "HF_HUB_OFFLINE": "1",
    }
    found = subprocess.run(
        [sys.executable, "-c", "import peftlab.conf as c, hydra_plugins.peftlab_searchpath as p; print(c.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(site), f"peftlab imported from {found}, not from the installed wheel"
    train = subprocess.run(
        [site / "bin" / "peftlab-train", "debug=fdr"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert train.returncode == 0, train.stderr[-2000:]
    said = train.stdout + train.stderr
    for noise in ("Tip:", "GPU available", "LeafSpec", "\r", "logging interval"):  # first contact stays quiet
        assert noise not in said, f"{noise!r} in the output of a first run:\n{said[-2000:]}"
    assert len(list((tmp_path / "logs").rglob("results.json"))) == 1
    for script in (
        "peftlab-eval",
        "peftlab-export",
        "peftlab-report",
        "peftlab-search",
        "peftlab-plots",
        "peftlab-check",
    ):
        assert (site / "bin" / script).is_file(), script


EXAMPLE = REPO / "examples" / "user_project" / "conf"


@pytest.mark.parametrize("how", ["searchpath", "user_config_dir"])
def test_the_example_user_project_composes_with_the_shipped_configs(how, monkeypatch):
    overrides = ["experiment=rlrr_mine"]
    if how == "searchpath":
        overrides.append(f"hydra.searchpath=[file://{EXAMPLE}]")
    else:
        monkeypatch.setenv(USER_CONFIG_ENV, str(EXAMPLE))
    cfg = compose_train(*overrides)
    assert (cfg.data.task, cfg.data.num_classes, cfg.data.group, cfg.data.dataset) == (
        "fashion_mnist",
        10,
        "clothes",
        "custom",
    )
    assert cfg.backbone.name == "vit_small_patch14_dinov2.lvd142m" and "patch_size" not in cfg.backbone.model_kwargs
    assert compose_train("data=my_flowers", *overrides[1:]).data._target_.endswith("ImageFolderDataModule")


def test_help_lists_the_options_without_private_entries():
    shown = config_groups_help()
    assert "experiment: adapter_fgvc" in shown and "data/vtab1k: caltech101" in shown and "backbone: timm" in shown
    options = {option for line in shown.splitlines() for option in line.split(": ", 1)[1].split(", ")}
    assert options and not any(option.startswith("_") for option in options)
