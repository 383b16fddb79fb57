"""Run identity (the semantic config and its hash) and sweep job dir names from semantic overrides only."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from peftlab.identity import TASK_KEYS, job_dirname, semantic_identity
from tests.conftest import CONF


@pytest.fixture
def hydra_conf():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def identity(*overrides: str) -> dict:
    return semantic_identity(compose("train", overrides=list(overrides)), "rlrr")


def test_identity_ignores_paths_loggers_and_devices(hydra_conf):
    base = identity()
    noise = ["logger=wandb", "logger.wandb.offline=true", "paths.data_dir=/elsewhere", "trainer.devices=2"]
    noise += ["data.num_workers=3", "callbacks=none", "experiment_name=other", "optim.optimizer.fused=true"]
    same = identity(*noise)
    assert same["hash"] == base["hash"] and same["config"] == base["config"]


@pytest.mark.parametrize(
    "override, key, value",
    [("optim.lr=0.01", "optim.lr", 0.01), ("optim.weight_decay=0", "optim.weight_decay", 0),
     ("backbone.pretrained=true", "backbone.weights", "hub:timm/vit_tiny_patch16_224.augreg_in21k"),
     ("module.label_smoothing=0.1", "module.label_smoothing", 0.1), ("seed=1", "seed", 1),
     ("data.split=search", "data.split", "search"), ("trainer.max_epochs=7", "trainer.max_epochs", 7),
     ("backbone.name=vit_small_patch14_dinov2", "backbone.name", "vit_small_patch14_dinov2")],
)  # fmt: skip
def test_identity_changes_with_every_semantic_key(hydra_conf, override, key, value):
    base, changed = identity(), identity(override)
    assert changed["config"][key] == value and changed["hash"] != base["hash"]


def test_identity_records_the_backbone_model_and_the_keys_chosen_per_task(hydra_conf):
    rlrr = identity("experiment=rlrr_vtab1k", "data=vtab1k/dtd")
    assert rlrr["config"]["backbone.name"] == "vit_base_patch16_224.orig_in21k"
    assert rlrr["config"]["method_data.name"] == "rlrr_vtab1k" and rlrr["config"]["method.name"] == "rlrr"
    assert {"optim.lr", "optim.weight_decay", "data.hflip"} <= set(rlrr["per_task"])
    assert "optim.optimizer.lr" not in rlrr["config"]  # a copy of optim.lr, recorded once
    assert {"data.task", "data.num_classes"} <= TASK_KEYS and rlrr["config"]["data.task"] == "dtd"


def test_job_dirs_are_named_from_semantic_overrides_only():
    grid = ["experiment=hta_vtab1k", "data=vtab1k/dtd", "optim.lr=0.001", "optim.weight_decay=0", "seed=1"]
    name = job_dirname(grid)
    assert name.startswith("lr=0.001,weight_decay=0,seed=1-") and len(name) <= 70
    noisy = [*grid, "logger=wandb", "+logger.wandb.offline=True", "paths.log_dir=/x", "trainer.devices=4",
             "hydra/launcher=slurm", "data.num_workers=8", "backbone.weights_file=/w/vit.safetensors"]  # fmt: skip
    assert job_dirname(list(reversed(noisy))) == name
    assert job_dirname([*grid[:2], "optim.lr=0.01", *grid[3:]]) != name
    long = [f"method.option_{i}=value_{i}" for i in range(30)]
    assert len(job_dirname(long)) <= 70 and job_dirname(long) != job_dirname(long[:-1])


def test_sweep_subdir_uses_the_semantic_name(hydra_conf):
    overrides = ["sweep=lr_wd_grid", "optim.lr=0.001", "seed=1", "logger=wandb", "logger.wandb.offline=True"]
    cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweep.subdir == "demo/" + job_dirname(["optim.lr=0.001", "seed=1"])


def test_wandb_run_names_carry_the_distinguishing_overrides(hydra_conf):
    from hydra.core.hydra_config import HydraConfig

    from peftlab.dashboard import run_name

    names = set()
    for lr in ("0.01", "0.001"):
        overrides = [f"optim.lr={lr}", "logger=wandb", "paths.log_dir=/x"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        names.add(run_name(cfg, "rlrr"))
    assert names == {"rlrr-demo-s42-lr=0.01", "rlrr-demo-s42-lr=0.001"}


def as_recorded_before_the_group_split(config: dict) -> dict:
    """The identity an older peftlab (b85e8c8) recorded for the same run: label smoothing under optim, the demo's
    epochs under data, a hub backbone as ``pretrained`` (the differences found by computing both)."""
    old = {("optim.label_smoothing" if k == "module.label_smoothing" else k): v for k, v in config.items()}
    old["data.epochs"] = config["trainer.max_epochs"]
    if str(config["backbone.weights"]).startswith("hub:"):
        old["backbone.weights"] = "pretrained"
    return old


@pytest.mark.parametrize("overrides", [(), ("backbone=vit_b16_in21k", "data=vtab1k/dtd", "module.label_smoothing=0.1")])
def test_a_run_recorded_under_old_key_names_is_the_same_configuration(hydra_conf, overrides):
    from peftlab.identity import same_configuration

    new = identity(*overrides)["config"]
    old = as_recorded_before_the_group_split(new)
    assert old != new and same_configuration(old, new)
    assert not same_configuration({**old, "optim.lr": 0.5}, new)
    assert not same_configuration({**old, "optim.label_smoothing": 0.3}, new)
