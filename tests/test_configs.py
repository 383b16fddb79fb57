"""Every option of every config group composes, and instantiates the object it selects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate

from peftlab.build import build_backbone, build_datamodule, build_loggers, build_method, build_recipe, build_trainer
from peftlab.methods import MethodConfig, list_methods
from peftlab.protocol import EPOCHS
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
    model = build_backbone(cfg)
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
            assert cfg.trainer.max_epochs == make_cfg().trainer.max_epochs  # the data set's schedule still holds
            continue
        cfg = make_cfg(f"{group}={option}")
        if group == "logger":
            if option == "tensorboard":
                pytest.importorskip("tensorboard")
            build_loggers(cfg, build_method(cfg))
        elif group == "optim":
            recipe = build_recipe(cfg)
            assert callable(recipe.optimizer) and callable(recipe.scheduler)
        else:
            build_trainer(cfg, build_method(cfg), with_loggers=False)


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_configs_compose(make_cfg, option):
    cfg = make_cfg(f"experiment={option}")
    assert cfg.experiment_name and build_method(cfg).name


def test_train_config_defaults_are_the_offline_demo(make_cfg):
    cfg = make_cfg()
    assert cfg.data.task == "demo" and cfg.backbone.pretrained is False
    assert 0 < cfg.optim.warmup_epochs < cfg.trainer.max_epochs < EPOCHS  # the demo's own short schedule
    assert cfg.trainer.check_val_every_n_epoch == 1  # and a curve point at each of its epochs


@pytest.mark.parametrize("data", ["vtab1k/dtd", "fgvc/cub", "image_folder"])
def test_other_data_train_the_protocol_schedule(make_cfg, data):
    """The demo's schedule comes with data=demo only; any other data set gets the trainer/optim defaults."""
    cfg = make_cfg(f"data={data}", "data.task=mine")
    assert (cfg.trainer.max_epochs, cfg.optim.warmup_epochs) == (EPOCHS, EPOCHS // 10)
    # the training-time evaluation (a diagnostic; on final the whole test set) runs every 10th epoch, not 100 times
    assert cfg.trainer.check_val_every_n_epoch == 10 and EPOCHS % cfg.trainer.check_val_every_n_epoch == 0


def test_experiments_and_debug_configs_override_the_demo_schedule(make_cfg):
    assert make_cfg("debug=limit").trainer.max_epochs == 2
    assert make_cfg("data=demo", "trainer.max_epochs=7").trainer.max_epochs == 7


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


# ------------------------------------------------------------------------------------- groups that don't leak
#: groups any group may read: where files live
SHARED_GROUPS = {"paths"}
#: resolvers that read no other group: task facts from the catalog, folders, the environment, Hydra's runtime
NEUTRAL_RESOLVERS = ("catalog.", "folder.", "oc.env", "hydra", "peftlab.", "now")
_INTERPOLATION = re.compile(r"\$\{([^${}:]*)(:?)([^${},]*)")


def config_groups() -> set[str]:
    return {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith(("_", "hydra"))}


def read_groups(text: str) -> set[str]:
    """The top-level nodes that the ``${...}`` interpolations in ``text`` read (relative ``${.x}`` reads its own
    node; ``oc.select`` reads its first argument; other resolvers are named as themselves)."""
    read = set()
    for key, colon, argument in _INTERPOLATION.findall(text):
        if colon and key == "oc.select":
            key = argument
        elif colon:
            read.add(f"resolver {key}" if not key.startswith(NEUTRAL_RESOLVERS) else "")
            continue
        if not key.startswith("."):
            read.add(re.split(r"[.\[]", key)[0])
    return read - {""}


def string_values(node) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in string_values(value)]
    if isinstance(node, list):
        return [s for value in node for s in string_values(value)]
    return [node] if isinstance(node, str) else []


def group_yaml_files() -> list[Path]:
    """Every option of every group that configures one part of the code (not the ``_global_`` compositions:
    experiment, debug, sweep, search, method_data, schedule)."""
    return [
        path
        for group in sorted(config_groups())
        for path in sorted((CONF / group).rglob("*.yaml"))
        if "@package _global_" not in path.read_text()
    ]


@pytest.mark.parametrize("path", group_yaml_files(), ids=lambda p: str(p.relative_to(CONF)))
def test_a_group_reads_no_other_group(path):
    """Each group configures the code it is named after: its values may read its own keys, paths and the catalog,
    never another group's (the trainer reading data.epochs, the backbone data.num_classes: build.py wires those)."""
    from omegaconf import OmegaConf

    own = path.relative_to(CONF).parts[0]
    values = string_values(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    read = set().union(*(read_groups(v) for v in values)) - {own} - SHARED_GROUPS
    leaks = {name for name in read if name in config_groups() or name.startswith("resolver")}
    assert not leaks, f"{path.relative_to(CONF)} reads {sorted(leaks)}"


def test_the_leak_check_sees_interpolations():
    assert read_groups("${oc.select:data.epochs,100}") == {"data"}
    assert read_groups("${data.num_classes}") == {"data"}
    assert read_groups("${catalog.num_classes:${.dataset},${.task}}") == set()
    assert read_groups("${paths.data_dir}/demo") == {"paths"}
    assert read_groups("${..lr}") == set()
    assert read_groups("${my.resolver:1}") == {"resolver my.resolver"}


def test_a_moved_key_on_the_command_line_names_its_new_key(capsys):
    from peftlab.options import check_moved_keys
    from peftlab.utils import run_cli

    with pytest.raises(SystemExit) as exit_code:
        run_cli(lambda: check_moved_keys(["experiment=lora_vtab1k", "optim.label_smoothing=0.1"]))
    assert exit_code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        lines[0] == "error: optim.label_smoothing has moved to module.label_smoothing: use module.label_smoothing=0.1"
    )


def test_a_moved_key_in_a_config_file_names_its_new_key(make_cfg):
    from omegaconf import open_dict

    from peftlab.options import ConfigError, check_options

    cfg = make_cfg()
    with open_dict(cfg):
        cfg.data.epochs = 30  # as an old data config or experiment would set it
    with pytest.raises(ConfigError, match="data.epochs has moved to trainer.max_epochs"):
        check_options(cfg)


def test_a_checkpoint_saved_before_the_keys_moved_is_migrated():
    from peftlab.checkpoint import run_config

    saved = {"optim": {"lr": 1e-3, "label_smoothing": 0.1}, "data": {"task": "demo", "epochs": 3}, "trainer": {}}
    saved["trainer"]["max_epochs"] = 3
    cfg = run_config({"peftlab": {"config": saved}})
    assert cfg.module.label_smoothing == 0.1 and "label_smoothing" not in cfg.optim
    assert "epochs" not in cfg.data and cfg.trainer.max_epochs == 3
