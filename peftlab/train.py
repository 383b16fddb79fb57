"""Entry point: ``python -m peftlab.train [overrides]`` (or ``peftlab-train``); ``-m`` for Hydra multirun sweeps.

Exit codes: 0 done (or skipped: already complete), 2 bad input (one ``error:`` line), 1 a sweep with failed jobs,
130 / 143 stopped by SIGINT / SIGTERM (``last.ckpt`` kept: rerun the same command to resume)."""

from __future__ import annotations

import logging
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from peftlab.build import Built, build, validate
from peftlab.callbacks import keep_csv_history
from peftlab.checkpoint import load_checkpoint
from peftlab.conf import CONFIG_PATH
from peftlab.lifecycle import (
    Interrupted,
    RunDirBusy,
    RunLock,
    StopSignals,
    in_multirun,
    partial_reasons,
    report_failed_job,
)
from peftlab.methods.state import count_parameters
from peftlab.results import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PARTIAL,
    RESULTS_FILE,
    RUNNING,
    command_line,
    device_name,
    git_sha,
    is_complete,
    now,
    read_results,
    versions,
    write_results,
)
from peftlab.utils import USER_ERRORS, finish_wandb, peak_memory_mb, reset_peak_memory, run_cli

log = logging.getLogger("peftlab")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one run; returns its results (the content of ``results.json``).

    Options are checked before anything is written. One process at a time owns the run dir (a lock). A run whose
    output dir already holds a complete ``results.json`` is skipped (never retrained or overwritten). A SIGTERM or
    SIGINT saves ``last.ckpt``, records ``interrupted`` and raises :class:`Interrupted`.
    """
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir).resolve()
    with RunLock(output_dir) if is_rank_zero() else nullcontext(), StopSignals() as signals:
        if is_complete(output_dir):
            log.info("skipping: %s already holds a complete results.json", output_dir)
            return read_results(output_dir)
        return train_locked(cfg, output_dir, signals)


def train_locked(cfg: DictConfig, output_dir: Path, signals: StopSignals) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    started, t0 = now(), time.perf_counter()
    reset_peak_memory()
    built = build(cfg)
    signals.trainer = built.trainer
    check_data(built)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    if ckpt_path and is_rank_zero():
        keep_csv_history(built.trainer, before_step=load_checkpoint(ckpt_path)["global_step"])
    results = initial_results(cfg, built, output_dir, started)
    if is_rank_zero():
        write_results(output_dir, results)
    try:
        built.trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = final_evaluation(cfg, built)
        if signals.received:  # a signal between two Lightning loops
            raise Interrupted(signals.received)
    except BaseException as err:
        stopped = signals.received is not None
        results.update(status=INTERRUPTED if stopped else FAILED, error=f"{type(err).__name__}: {err}")
        if stopped:
            results["error"] = f"interrupted by {signal.Signals(signals.received).name}; rerun the command to resume"
        results["run_info"]["finished_at"] = now()
        results["train_info"] = train_info(built, time.perf_counter() - t0)
        if is_rank_zero():
            write_results(output_dir, results)
        if stopped and not isinstance(err, Interrupted):
            raise Interrupted(signals.received) from err
        raise
    finally:
        finish_wandb()
    results = completed_results(cfg, built, results, metrics, time.perf_counter() - t0)
    if is_rank_zero():  # under DDP every rank runs this function; results are written once
        print_summary(results, write_final_results(output_dir, results))
    return results


def write_final_results(output_dir: Path, results: dict[str, Any]) -> Path:
    """The last check before writing: a complete result already there (another writer that ignored the lock) is
    never replaced."""
    if is_complete(output_dir):
        raise RunDirBusy(
            f"{output_dir / RESULTS_FILE} became complete while this run was training (another process wrote it); "
            "it is kept and this run's results are not written. Give every run its own directory."
        )
    return write_results(output_dir, results)


def is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def check_data(built: Built) -> None:
    """Read and check the split files (and fill the decoded-image cache) before any result is written, so bad data
    fails fast and leaves nothing behind. Lightning's own ``setup`` call inside ``fit`` is then a no-op."""
    built.datamodule.trainer = built.trainer
    built.datamodule.setup("fit")


def initial_results(cfg: DictConfig, built: Built, output_dir: Path, started: str) -> dict[str, Any]:
    dm = built.datamodule
    return {
        "status": RUNNING,
        "error": None,
        "experiment": {
            "name": cfg.experiment_name,
            "method": built.method.name,
            "backbone": group_choice("backbone", default=str(cfg.backbone.name)),
            "timm_name": cfg.backbone.name,
            "dataset": dm.dataset,
            "task": dm.task,
            "group": dm.group,
            "split": dm.split,
            "seed": cfg.seed,
        },
        "reported": {"metric": reported_metric(dm.split), "value": None},
        "metrics": {},
        "diagnostics": {},
        "params": count_parameters(built.model),
        "method": built.method.describe(),
        "train_info": {},
        "data": {},
        "run_info": {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "git_sha": git_sha(),
            "command": command_line(),
            "output_dir": str(output_dir),
            "started_at": started,
            "finished_at": None,
        },
        "meta_info": {"versions": versions(), "device": device_name(), "precision": str(cfg.trainer.precision)},
    }


def group_choice(group: str, default: str) -> str:
    """The option chosen for a config group (e.g. ``vit_b16_in21k``), when Hydra is running."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group, default))
    return default


def reported_metric(split: str) -> str:
    """The number tables use: final-epoch accuracy on the eval split (val200 when searching, test when final)."""
    return "val/acc" if split == "search" else "test/acc"


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path=last`` resumes this run's last checkpoint; an existing one is also resumed automatically. The file
    is checked first (loaded with ``weights_only``): a corrupt or hostile checkpoint is one clear error."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path in (None, "last"):
        if last.is_file():
            log.info("resuming from %s", last)
            load_checkpoint(last)
            return str(last)
        if cfg.ckpt_path == "last":
            raise FileNotFoundError(f"ckpt_path=last but {last} does not exist; start without ckpt_path")
        return None
    path = Path(cfg.ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r} does not exist; give a .ckpt file or 'last'")
    load_checkpoint(path)
    return str(path)


def final_evaluation(cfg: DictConfig, built: Built) -> dict[str, float]:
    """Evaluate the final-epoch model once on the eval split (the reported number)."""
    trainer = built.trainer
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and "_step" not in k}
    if trainer.fast_dev_run:
        trainer.test(built.module, datamodule=built.datamodule, verbose=False)
    elif cfg.test:
        metrics.update(evaluate_split(built))
    return metrics


def evaluate_split(built: Built, ckpt_path: str | None = None) -> dict[str, float]:
    """Accuracy on the eval split: ``val/*`` on val200 when searching, ``test/*`` on the test set when final."""
    evaluate = built.trainer.validate if built.datamodule.split == "search" else built.trainer.test
    metrics: dict[str, float] = {}
    for out in evaluate(
        built.module, datamodule=built.datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
    ):
        metrics.update({k: float(v) for k, v in out.items()})
    return metrics


def train_info(built: Built, wall_time: float) -> dict[str, Any]:
    trainer = built.trainer
    return {
        "wall_time_s": round(wall_time, 2),
        "peak_memory_mb": peak_memory_mb(),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }


def completed_results(
    cfg: DictConfig, built: Built, results: dict[str, Any], metrics: dict[str, float], wall_time: float
) -> dict[str, Any]:
    key = results["reported"]["metric"]
    module = built.module
    results.update(
        status=COMPLETE,
        reported={"metric": key, "value": metrics.get(key)},
        metrics=metrics,
        diagnostics={
            "best_epoch_eval_acc": module.best_val_acc,
            "best_epoch": module.best_val_epoch,
            "note": "best-epoch accuracy on the eval split: a diagnostic only, never the reported number",
        },
        train_info=train_info(built, wall_time),
        data=built.datamodule.describe(),
    )
    results["train_info"]["schedule"] = getattr(module, "schedule", None)
    results["run_info"]["finished_at"] = now()
    reasons = partial_reasons(cfg)
    if reasons:  # numbers from a cut-short run: never counted as a result
        results.update(status=PARTIAL, partial_reasons=reasons)
    if results["reported"]["value"] is None:
        results["status"] = "incomplete"
        results["error"] = f"no {key} was computed (test=false or a debug run)"
    return results


def print_summary(results: dict[str, Any], path: Path) -> None:
    exp, params = results["experiment"], results["params"]
    value = results["reported"]["value"]
    lines = [
        f"method={exp['method']}  data={exp['dataset']}/{exp['task']}  split={exp['split']}  seed={exp['seed']}",
        f"trainable params: {params['trainable']:,} of {params['total']:,} "
        f"({params['trainable_without_head']:,} without head)",
        f"final-epoch {results['reported']['metric']}: " + ("n/a" if value is None else f"{100 * value:.2f}%"),
    ]
    best = results["diagnostics"].get("best_epoch_eval_acc")
    if best is not None:
        lines.append(
            f"(diagnostic) best-epoch eval acc: {100 * best:.2f}% at epoch {results['diagnostics']['best_epoch']}"
        )
    lines.append(f"wall time {results['train_info']['wall_time_s']:.1f} s; results written to {path}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def run(cfg: DictConfig) -> float | None:
    """One Hydra job. In a sweep, a failed job is recorded (results.json, the summary at the end) and the sweep goes
    on; a signal stops the whole sweep with 128 + signum."""
    torch.set_float32_matmul_precision("high")
    results = run_cli(lambda: run_sweep_job(cfg) if in_multirun() else train(cfg))
    return (results or {}).get("reported", {}).get("value")  # the value a Hydra sweeper optimises


def run_sweep_job(cfg: DictConfig) -> dict[str, Any] | None:
    try:
        return train(cfg)
    except Exception as err:  # noqa: BLE001 - any failure of one job: record it, run the next
        output_dir = Path(cfg.paths.output_dir).resolve()
        if is_rank_zero() and read_results(output_dir) is None and not isinstance(err, RunDirBusy):
            write_results(output_dir, failed_before_start(cfg, output_dir, err))
        report_failed_job(str(output_dir), err, user_error=isinstance(err, USER_ERRORS))
        return None


def failed_before_start(cfg: DictConfig, output_dir: Path, err: BaseException) -> dict[str, Any]:
    """The record of a sweep job that failed before training (bad option or data): status and error, no numbers."""
    data = cfg.get("data") or {}
    return {
        "status": FAILED,
        "error": f"{type(err).__name__}: {err}",
        "experiment": {
            "name": cfg.get("experiment_name"),
            "method": group_choice("method", default="?"),
            "backbone": group_choice("backbone", default="?"),
            "dataset": data.get("dataset"),
            "task": data.get("task"),
            "split": data.get("split"),
            "seed": cfg.get("seed"),
        },
        "reported": {"metric": None, "value": None},
        "run_info": {"command": command_line(), "output_dir": str(output_dir), "finished_at": now()},
    }


def main() -> None:
    """``peftlab-train``: one run, or a sweep with ``-m`` (which exits 1 at the end when a job failed: the
    ``SweepSummary`` callback of ``conf/hydra/default.yaml``)."""
    run()


if __name__ == "__main__":
    main()
