"""Every option of every config group composes, and instantiates the object it selects."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from peftlab.build import build_datamodule, build_loggers, build_method, build_trainer
from peftlab.methods import MethodConfig, list_methods
from tests.conftest import CONF


def options(group: str) -> list[str]:
    root = CONF / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("option", options("method"))
def test_method_options_instantiate_registered_configs(make_cfg, option):
    method = build_method(make_cfg(f"method={option}"))
    assert isinstance(method, MethodConfig)
    assert method.name in list_methods()


def test_every_registered_method_has_a_config():
    configured = {p.stem for p in (CONF / "method").glob("*.yaml")}
    assert set(list_methods()) <= configured


@pytest.mark.parametrize("option", options("backbone"))
def test_backbone_options_instantiate_offline(make_cfg, option):
    named = ["backbone.name=vit_tiny_patch16_224.augreg_in21k"] if option == "timm" else []  # any timm model by name
    cfg = make_cfg(f"backbone={option}", "backbone.pretrained=false", "data=demo", *named)
    model = instantiate(cfg.backbone)
    assert model.get_classifier().out_features == cfg.data.num_classes


#: the configs for your own data need a task name (and, for the VTAB layout, a class count)
CUSTOM_DATA = {"vtab_layout": ["data.task=mine", "data.num_classes=5"], "image_folder": ["data.task=mine"]}


@pytest.mark.parametrize("option", [o for o in options("data") if o not in CUSTOM_DATA])
def test_data_options_instantiate(make_cfg, option):
    dm = build_datamodule(make_cfg(f"data={option}"))
    assert dm.num_classes >= 2 and dm.split in {"search", "final"}


@pytest.mark.parametrize("group", ["trainer", "callbacks", "logger", "debug", "optim"])
def test_runtime_groups_compose_and_build(make_cfg, group, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for option in options(group):
        if group == "trainer" and option in {"gpu", "ddp"}:
            cfg = make_cfg(f"trainer={option}")  # needs GPUs/processes to build; composition is what we check
            assert cfg.trainer.max_epochs == cfg.data.epochs
            continue
        cfg = make_cfg(f"{group}={option}")
        if group == "logger":
            if option == "tensorboard":
                pytest.importorskip("tensorboard")
            build_loggers(cfg, build_method(cfg))
        elif group == "optim":
            recipe = instantiate(cfg.optim)
            assert callable(recipe["optimizer"]) and callable(recipe["scheduler"])
        else:
            build_trainer(cfg, build_method(cfg), with_loggers=False)


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_configs_compose(make_cfg, option):
    cfg = make_cfg(f"experiment={option}")
    assert cfg.experiment_name and build_method(cfg).name


def test_train_config_defaults_are_the_offline_demo(make_cfg):
    cfg = make_cfg()
    assert cfg.data.task == "demo" and cfg.backbone.pretrained is False
    assert cfg.trainer.max_epochs == cfg.data.epochs


def test_paths_come_from_environment(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("PEFTLAB_DATA", str(tmp_path / "vtab"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train")
    assert Path(cfg.paths.data_dir) == tmp_path / "vtab"


@pytest.mark.parametrize("option", options("method"))
def test_method_yaml_lists_every_option_with_the_code_default(option):
    """So that `method.<option>=value` works on the command line without `+`, and the yaml cannot drift."""
    import dataclasses

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / "method" / f"{option}.yaml")
    cls = get_class(cfg._target_)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    assert set(cfg) - {"_target_"} == fields
    assert instantiate(cfg, _convert_="all") == cls()


@pytest.mark.parametrize("launcher", ["slurm", "local_gpus"])
def test_cluster_launchers_compose(launcher):
    """Submission cannot be tested here; the launcher config must compose with the submitit plugin installed."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.hydra_submitit_launcher")
    assert cfg.hydra.launcher.gpus_per_node == 1
