"""The configs ship inside the package: Hydra finds them as ``pkg://peftlab.conf`` and adds the user config dir
(per-machine ``local/default.yaml``, the user's own config groups) after them."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from peftlab.conf import CONFIG_DIR, CONFIG_PATH, USER_CONFIG_ENV


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
