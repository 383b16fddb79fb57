"""The training entry point end to end on the generated demo data (real VTAB-1k layout, real loader path)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from peftlab.build import build
from peftlab.checkpoint import load_checkpoint, model_state
from peftlab.identity import semantic_identity
from peftlab.methods.state import trainable_state_dict
from peftlab.results import RESULTS_FILE, RunRecord
from peftlab.train import train

CHANCE = 1 / 4  # the demo has 4 classes
MARGIN = 0.3


def run_cli(*args: str, env: dict[str, str], module: str = "peftlab.train", timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_fast_dev_run_never_looks_complete(make_cfg, tmp_path):
    results = train(make_cfg("debug=fdr"))
    assert results.status == "incomplete" and results.reported.value is None
    saved = json.loads((tmp_path / "run" / RESULTS_FILE).read_text())
    assert saved["status"] == "incomplete"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """One short real run shared by the tests below (2 epochs of the demo with the default method)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from tests.conftest import CONF

    out = tmp_path_factory.mktemp("trained")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["trainer.max_epochs=2", "logger=csv"])
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.data_dir, cfg.paths.log_dir = str(out / "run"), str(data_dir), str(out)
    GlobalHydra.instance().clear()
    return cfg, train(cfg), out / "run"


def test_short_run_learns_and_writes_results(trained_run):
    cfg, results, run_dir = trained_run
    assert results.status == "complete"
    assert results.reported.metric == "test/acc"
    assert results.reported.value > CHANCE + MARGIN
    saved = json.loads((run_dir / RESULTS_FILE).read_text())
    assert saved["reported"] == {"metric": "test/acc", "value": results.reported.value}
    assert saved["experiment"]["method"] == build(cfg, loggers=False).method.name
    assert saved["experiment"]["task"] == "demo" and saved["experiment"]["seed"] == cfg.seed
    for key in ("config", "git_sha", "command", "started_at", "finished_at"):
        assert key in saved["run_info"]
    assert saved["run_info"]["config"]["seed"] == cfg.seed
    assert set(saved["meta_info"]["versions"]) >= {"torch", "timm", "lightning"}
    assert saved["params"]["trainable"] > 0 and saved["params"]["total"] >= saved["params"]["trainable"]
    assert saved["train_info"]["wall_time_s"] > 0 and saved["train_info"]["peak_memory_mb"] > 0
    assert saved["data"]["mean"] and saved["data"]["image_size"] == cfg.data.image_size
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_record_names_the_model_and_the_configuration(trained_run):
    cfg, results, run_dir = trained_run
    saved = RunRecord.load(run_dir)
    assert saved.experiment.backbone == cfg.backbone.name  # the timm model, not the config group
    assert saved.identity.hash == semantic_identity(cfg, saved.experiment.method)["hash"]
    assert saved.identity.config["optim.lr"] == cfg.optim.lr and saved.counted()


def test_final_split_logs_its_per_epoch_evaluation_as_test(trained_run):
    """On split=final the per-epoch evaluation measures the test set: it is logged as test/acc, never val/acc."""
    cfg, results, run_dir = trained_run
    assert cfg.data.split == "final"
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "test/acc" in header and "val/acc" not in header
    epochs = [line for line in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if line.get("test/acc")]
    assert len(epochs) >= cfg.trainer.max_epochs  # one per epoch, plus the final evaluation


def test_checkpoint_holds_only_trainable_tensors_and_loads_back(trained_run):
    cfg, results, run_dir = trained_run
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    fresh = build(cfg, loggers=False)
    expected = trainable_state_dict(fresh.model)
    state = model_state(checkpoint)
    assert set(state) == set(expected)
    assert len(checkpoint["state_dict"]) == len(state)
    fresh.module.on_load_checkpoint(checkpoint)  # the explicit key check passes
    with pytest.raises(KeyError, match="does not match"):
        fresh.module.on_load_checkpoint({**checkpoint, "state_dict": {"model.bogus": torch.zeros(1)}})


def test_eval_reproduces_the_final_accuracy(trained_run, make_cfg, tmp_path):
    from peftlab.eval import evaluate

    cfg, results, run_dir = trained_run
    eval_cfg = make_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", config_name="eval")
    out = evaluate(eval_cfg)
    assert out["metrics"]["test/acc"] == pytest.approx(results.reported.value, abs=1e-6)
    assert (tmp_path / "run" / "eval_results.json").is_file()


def test_export_writes_a_plain_timm_model(trained_run, make_cfg, tmp_path):
    import timm
    from safetensors.torch import load_file

    from peftlab.export import export

    cfg, _, run_dir = trained_run
    out = tmp_path / "model.safetensors"
    export(make_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"out={out}", config_name="export"))
    info = json.loads(out.with_suffix(".json").read_text())
    model = timm.create_model(info["timm_name"], num_classes=info["num_classes"], **info["model_kwargs"])
    model.load_state_dict(load_file(str(out)))
    with pytest.raises(FileExistsError, match="never overwritten"):
        export(make_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"out={out}", config_name="export"))


def test_complete_run_is_skipped_not_overwritten(trained_run):
    cfg, results, run_dir = trained_run
    path = run_dir / RESULTS_FILE
    before = path.read_bytes()
    again = train(cfg)
    assert path.read_bytes() == before
    assert again.reported == results.reported


def test_wandb_offline_run_is_a_dashboard_entry(make_cfg, tmp_path, monkeypatch):
    """Today's bug: the offline run's config was {'_wandb': {}} and grid points shared one name. Read back from the
    offline run's file: the nested resolved config, name, job_type = split, tags, and the reported number."""
    from tests.wandb_offline import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("trainer.max_epochs=1", "+backbone.model_kwargs.depth=2", "logger=wandb", "data.split=search",
                   "optim.lr=0.002", "logger.wandb.offline=true", "callbacks=none")  # fmt: skip
    record = train(cfg)
    import wandb

    assert wandb.run is None, "the W&B run must be finished at the end of the job"
    (run_dir,) = {p.resolve() for p in tmp_path.rglob("offline-run-*") if p.is_dir()}
    run = read_offline_run(run_dir)
    config = run["config"]
    assert config["optim"]["lr"] == 0.002 and config["data"]["split"] == "search"  # nested, as resolved
    assert config["identity"]["hash"] == record.identity.hash
    assert {"method", "backbone", "data", "optim", "trainer", "seed"} <= set(config)
    assert run["job_type"] == "search" and run["group"] == "default" and run["name"].startswith("rlrr-demo-s42")
    assert {"split:search", "method:rlrr", "task:demo", "seed:42"} <= set(run["tags"])
    summary = run["summary"]
    assert summary["reported/metric"] == "val/acc" and summary["reported/value"] == pytest.approx(record.reported.value)
    saved = RunRecord.load(tmp_path / "run")
    assert saved.run_info["wandb"]["id"] in run_dir.name  # the report links the run


def test_wandb_settings_name_group_job_type_and_tags(make_cfg):
    from peftlab.dashboard import wandb_settings

    cfg = make_cfg("logger=wandb", "sweep=lr_wd_grid", "data.split=search")
    settings = wandb_settings(cfg, "rlrr")
    assert settings["group"] == "lr_wd_grid/default" and settings["job_type"] == "search"
    assert {"split:search", "sweep:lr_wd_grid", "method:rlrr", "task:demo", "seed:42"} <= set(settings["tags"])
    assert settings["config"]["optim"]["lr"] == cfg.optim.lr and "identity" in settings["config"]


def test_multirun_gives_every_job_its_own_dir(cli_env, tmp_path):
    model = "vit_tiny_patch16_384"  # not the config group's default model
    proc = run_cli("-m", "method=full,linear", "seed=1,2", "debug=fdr", f"backbone.name={model}", env=cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((tmp_path / "logs" / "train" / "multiruns").rglob(RESULTS_FILE))
    assert len(results) == 4
    records = [RunRecord.load(path) for path in results]
    assert {(r.experiment.backbone, r.experiment.backbone_config) for r in records} == {(model, "vit_tiny")}
    jobs = {
        (r["experiment"]["method"], r["experiment"]["seed"]) for r in map(lambda p: json.loads(p.read_text()), results)
    }
    assert jobs == {("full", 1), ("full", 2), ("linear", 1), ("linear", 2)}


@pytest.mark.parametrize(
    "args, message",
    [
        (["no_such_option=1"], "Could not override 'no_such_option'"),
        (["data=vtab1k/cifar100", "data.root=/nonexistent/vtab"], "/nonexistent/vtab"),
        (
            ["backbone=vit_b16_in21k", "backbone.weights_file=/nonexistent/w.safetensors", "data.image_size=32"],
            "backbone weights file not found",
        ),
        (["data.image_size=30"], "not divisible by the backbone's patch size"),
    ],
)
def test_bad_input_fails_clearly_and_writes_no_result(cli_env, tmp_path, args, message):
    proc = run_cli(*args, env=cli_env)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not list((tmp_path / "logs").rglob(RESULTS_FILE))


@pytest.mark.slow
def test_every_method_trains_through_the_cli_and_beats_chance(cli_env, tmp_path):
    """One Hydra multirun over all registered methods (2-block backbone, 1 epoch of the demo)."""
    from peftlab.methods import list_methods

    methods = list_methods()
    proc = run_cli(
        "-m",
        f"method={','.join(methods)}",
        "trainer.max_epochs=1",
        "+backbone.model_kwargs.depth=2",
        "logger=none",
        "callbacks=none",
        env=cli_env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "logs").rglob(RESULTS_FILE)]
    accuracy = {r["experiment"]["method"]: r["reported"]["value"] for r in results if r["status"] == "complete"}
    assert set(accuracy) == set(methods)
    for method, acc in accuracy.items():
        assert acc > CHANCE + MARGIN, f"{method} reached only {acc:.3f} on the demo"
