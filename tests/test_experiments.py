"""The paper recipes (``peftlab/conf/experiment``), their per-task tables (``peftlab/conf/method_data``) and the
sweeps (``peftlab/conf/sweep``): every recipe composes with every task of its benchmark, published per-task values
resolve, sweeps expand to the documented jobs, and re-running a sweep resumes it without touching finished results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError

from peftlab.build import build_method
from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS
from peftlab.results import RESULTS_FILE, RunRecord
from tests.conftest import CONF

BENCHMARK_TASKS = {"vtab1k": [f"vtab1k/{t}" for t in VTAB_TASKS], "fgvc": [f"fgvc/{t}" for t in FGVC_TASKS]}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.name.startswith("_"))
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml") if not p.name.startswith("_"))
AUGREG = "vit_base_patch16_224.augreg_in21k"


def benchmark(experiment: str) -> str:
    return experiment.rsplit("_", 1)[-1]


def method_of(experiment: str) -> str:
    return experiment.rsplit("_", 1)[0].removesuffix("_star")


@pytest.fixture(scope="module")
def hydra_conf():
    """One Hydra initialisation for the whole module (composing is then ~0.1 s)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def resolved(*overrides: str) -> DictConfig:
    """The composed training config with every interpolation resolved (a missing per-task value fails here)."""
    cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/unused"
    OmegaConf.resolve(cfg)
    return cfg


def sweep_jobs(cfg: DictConfig, arguments: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The jobs Hydra's basic sweeper launches for a composed config (params resolved as at launch; command-line
    ``arguments`` are appended, as the sweeper does, so a command-line axis replaces the config's)."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(arguments))
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return [dict(item.split("=", 1) for item in job) for job in batch]


# ------------------------------------------------------------------------------------------------ experiments


def test_every_paper_table_has_a_recipe():
    expected = {"rlrr", "rlrr_star", "hta", "hta_star", "aoft", "aoft_adapter", "full", "linear", "bitfit", "lora"}
    expected |= {"adapter", "vpt_shallow", "vpt_deep", "arc", "arc_star", "ssf"}
    for bench in ("vtab1k", "fgvc"):
        assert {f"{name}_{bench}" for name in expected} <= set(EXPERIMENTS)
    assert all(benchmark(e) in BENCHMARK_TASKS for e in EXPERIMENTS)


def check_recipe(cfg: DictConfig, experiment: str, data: str) -> None:
    assert cfg.experiment_name == experiment and cfg.data.task == data.split("/")[-1] and cfg.data.split == "final"
    assert cfg.trainer.max_epochs == 100 and cfg.optim.warmup_epochs == 10
    assert cfg.data.batch_size in (32, 64) and cfg.optim.lr > 0
    assert build_method(cfg).name == method_of(experiment)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_its_default_task_and_instantiates_its_method(hydra_conf, experiment):
    cfg = resolved(f"experiment={experiment}")
    check_recipe(cfg, experiment, BENCHMARK_TASKS[benchmark(experiment)][0])
    augreg = "_star_" in experiment or experiment.startswith("ssf_")  # the papers' "*" rows; SSF's row is AugReg
    assert cfg.backbone.name == (AUGREG if augreg else "vit_base_patch16_224.orig_in21k")


@pytest.mark.parametrize("experiment", ["rlrr_vtab1k", "hta_vtab1k", "rlrr_fgvc", "hta_fgvc"])
def test_every_task_composes_with_and_without_a_per_task_table(hydra_conf, experiment):
    for data in BENCHMARK_TASKS[benchmark(experiment)]:
        check_recipe(resolved(f"experiment={experiment}", f"data={data}"), experiment, data)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_with_every_task_and_instantiates_its_method(hydra_conf, experiment):
    for data in BENCHMARK_TASKS[benchmark(experiment)]:
        check_recipe(resolved(f"experiment={experiment}", f"data={data}"), experiment, data)


@pytest.mark.parametrize(
    "task, lr, weight_decay, hflip, branch_dropout",
    [("svhn", 5e-3, 5e-5, False, 0.3), ("dtd", 2e-3, 5e-5, True, 0.1), ("cifar100", 3e-3, 5e-5, False, 0.1),
     ("smallnorb_azi", 5e-3, 5e-2, False, 0.3), ("resisc45", 3e-3, 5e-5, False, 0.0)],
)  # fmt: skip
@pytest.mark.parametrize("experiment", ["rlrr_vtab1k", "rlrr_star_vtab1k"])
def test_rlrr_vtab1k_per_task_values_resolve(hydra_conf, experiment, task, lr, weight_decay, hflip, branch_dropout):
    cfg = resolved(f"experiment={experiment}", f"data=vtab1k/{task}")
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.optim.weight_decay == pytest.approx(weight_decay)
    assert cfg.data.hflip is hflip and cfg.data.batch_size == 32
    assert cfg.method_data.selected.branch_dropout == pytest.approx(branch_dropout)
    assert cfg.backbone.branch_dropout == pytest.approx(branch_dropout)


@pytest.mark.parametrize("task, lr", [("cub", 3e-3), ("nabirds", 5e-4), ("flowers", 3e-3), ("dogs", 1e-4)])
def test_rlrr_fgvc_per_dataset_values_resolve(hydra_conf, task, lr):
    cfg = resolved("experiment=rlrr_fgvc", f"data=fgvc/{task}")
    assert cfg.optim.lr == pytest.approx(lr) and cfg.optim.weight_decay == pytest.approx(5e-2)


@pytest.mark.parametrize("table, bench", [("rlrr_vtab1k", "vtab1k"), ("rlrr_fgvc", "fgvc")])
def test_per_task_tables_cover_exactly_their_benchmark(table, bench):
    tasks = OmegaConf.load(CONF / "method_data" / f"{table}.yaml").method_data.tasks
    assert sorted(tasks) == sorted(t.split("/")[1] for t in BENCHMARK_TASKS[bench])


def test_command_line_beats_the_table_and_method_data_can_be_swapped(hydra_conf):
    assert resolved("experiment=rlrr_vtab1k", "data=vtab1k/svhn", "optim.lr=0.1").optim.lr == pytest.approx(0.1)
    swapped = resolved("experiment=hta_vtab1k", "data=vtab1k/svhn", "method_data=rlrr_vtab1k")
    assert swapped.optim.lr == pytest.approx(5e-3) and swapped.method_data.name == "rlrr_vtab1k"
    assert "method_data" not in resolved("experiment=hta_vtab1k")


def test_task_missing_from_a_table_fails_at_composition(hydra_conf):
    with pytest.raises(InterpolationKeyError, match="method_data.tasks.demo"):
        resolved("experiment=rlrr_vtab1k", "data=demo")


def test_recipes_follow_their_sources(hydra_conf):
    arc = resolved("experiment=arc_vtab1k")
    assert (arc.optim.lr, arc.optim.weight_decay, arc.trainer.gradient_clip_val) == (1e-2, 0.0, 1.0)
    arc_fgvc = resolved("experiment=arc_fgvc")
    assert (arc_fgvc.optim.lr, arc_fgvc.optim.weight_decay) == (5e-3, 1e-2)
    assert resolved("experiment=aoft_adapter_fgvc").method.use_scale is True
    assert resolved("experiment=lora_vtab1k").data.batch_size == 64


# ------------------------------------------------------------------------------------------------ sweeps


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweeps_compose_as_multiruns_with_parseable_params(hydra_conf, sweep):
    cfg = compose("train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.sweep.name == sweep
    assert cfg.hydra.sweep.dir == f"{cfg.paths.log_dir}/sweeps/{sweep}/default"
    assert cfg.hydra.sweep.subdir == "demo/defaults"  # ${data.task}/<semantic overrides>, resolved for none
    jobs = sweep_jobs(cfg)
    assert jobs and all((CONF / "data" / f"{job['data']}.yaml").is_file() for job in jobs)


@pytest.mark.parametrize(
    "experiment, sweep, tasks, per_task, split",
    [("rlrr_vtab1k", "vtab1k_all", 19, 3, "final"), ("rlrr_fgvc", "fgvc_all", 5, 3, "final"),
     ("hta_vtab1k", "hta_grid", 19, 7 * 5 * 3, "search"), ("hta_fgvc", "hta_grid", 5, 7 * 5 * 3, "search"),
     ("lora_fgvc", "lr_wd_grid", 5, 5 * 4, "search")],
)  # fmt: skip
def test_sweeps_expand_to_the_documented_jobs(hydra_conf, experiment, sweep, tasks, per_task, split):
    cfg = compose("train", [f"experiment={experiment}", f"sweep={sweep}"], return_hydra_config=True)
    jobs = sweep_jobs(cfg)
    assert len(jobs) == tasks * per_task and len({job["data"] for job in jobs}) == tasks
    assert {job["data"] for job in jobs} <= set(BENCHMARK_TASKS[benchmark(experiment)])
    assert cfg.data.split == split and cfg.hydra.sweep.dir.endswith(f"sweeps/{sweep}/{experiment}")


def test_a_command_line_axis_replaces_the_sweeps_axis(hydra_conf):
    cfg = compose("train", ["experiment=hta_vtab1k", "sweep=hta_grid"], return_hydra_config=True)
    jobs = sweep_jobs(cfg, arguments=("data=vtab1k/dtd,vtab1k/svhn", "data.batch_size=32"))
    assert len(jobs) == 2 * 7 * 5 and {job["data.batch_size"] for job in jobs} == {"32"}


# ------------------------------------------------------------------------------------------------ resume


def run_sweep(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    args = ["sweep=lr_wd_grid", "method=linear", "optim.lr=1e-3,2e-3", "optim.weight_decay=0", "optim.warmup_epochs=0"]
    args += [*extra, "trainer.max_epochs=1", "+backbone.model_kwargs.depth=2"]  # a whole epoch: debug=limit is partial
    return subprocess.run(
        [sys.executable, "-m", "peftlab.train", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_rerunning_a_sweep_skips_finished_jobs_and_selects_on_val(cli_env, tmp_path, capsys):
    from peftlab.search import main as search_main

    first = run_sweep(cli_env)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep_dir = tmp_path / "logs" / "sweeps" / "lr_wd_grid" / "default"
    paths = sorted(sweep_dir.rglob(RESULTS_FILE))
    assert len(paths) == 2 and all(p.parent.parent.name == "demo" for p in paths)
    assert {json.loads(p.read_text())["status"] for p in paths} == {"complete"}
    before = {p: p.read_bytes() for p in paths}

    second = run_sweep(cli_env, "logger=wandb", "logger.wandb.offline=True")  # another logger: same job dirs
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("skipping") == 2
    assert {p: p.read_bytes() for p in sorted(sweep_dir.rglob(RESULTS_FILE))} == before

    assert search_main(["select", str(sweep_dir)]) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1]
    selected = OmegaConf.load(sweep_dir / "selection" / "method_data" / "default_selected.yaml").method_data
    swept_lrs = {json.loads(p.read_text())["run_info"]["config"]["optim"]["lr"] for p in paths}
    assert list(selected.varied) == ["optim.lr"] and swept_lrs == {1e-3, 2e-3}
    assert selected.tasks.demo.optim.lr in swept_lrs and selected.tasks.demo.optim.weight_decay == 0

    # the printed command, exactly as printed, runs the final run with the complete selected configuration
    env = {**cli_env, "PATH": f"{Path(sys.executable).parent}:{cli_env.get('PATH', '')}"}
    final = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    (result,) = (tmp_path / "logs" / "train" / "multiruns").rglob(RESULTS_FILE)
    record = RunRecord.load(result)
    assert record.counted() and record.experiment.split == "final" and record.reported.metric == "test/acc"
    config = record.identity.config
    assert config["optim.lr"] == selected.tasks.demo.optim.lr
    assert config["optim.weight_decay"] == 0  # fixed by the grid, not the default 1e-4
    assert (config["backbone.model_kwargs.depth"], config["trainer.max_epochs"]) == (2, 1)
