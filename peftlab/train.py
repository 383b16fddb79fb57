"""Entry point: ``python -m peftlab.train [overrides]`` (or ``peftlab-train``); ``-m`` for Hydra multirun sweeps.

Exit codes: 0 done (or skipped: already complete), 2 bad input (one ``error:`` line), 1 a sweep with failed jobs,
130 / 143 stopped by SIGINT / SIGTERM (``last.ckpt`` kept: rerun the same command to resume)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from peftlab import protocol
from peftlab.build import Built, build, validate
from peftlab.callbacks import keep_csv_history
from peftlab.checkpoint import load_checkpoint
from peftlab.conf import CONFIG_PATH
from peftlab.dashboard import log_summary

# importing identity also registers the job-dir resolver Hydra's sweeps use
from peftlab.identity import same_configuration, semantic_identity
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
from peftlab.options import check_moved_keys
from peftlab.results import (
    COMPLETE,
    FAILED,
    INCOMPLETE,
    INTERRUPTED,
    PARTIAL,
    RESULTS_FILE,
    Experiment,
    Identity,
    Reported,
    RunRecord,
    command_line,
    device_name,
    git_sha,
    now,
    read_record,
    versions,
)
from peftlab.utils import USER_ERRORS, finish_wandb, peak_memory_mb, reset_peak_memory, run_cli

log = logging.getLogger("peftlab")


def train(cfg: DictConfig) -> RunRecord:
    """Train and evaluate one run; returns its record (the content of ``results.json``).

    Options are checked before anything is written. One process at a time owns the run dir (a lock). A run whose
    output dir already holds a complete ``results.json`` of the same identity is skipped (never retrained or
    overwritten). A SIGTERM or SIGINT saves ``last.ckpt``, records ``interrupted`` and raises :class:`Interrupted`.
    """
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir).resolve()
    with RunLock(output_dir) if is_rank_zero() else nullcontext(), StopSignals() as signals:
        done = read_record(output_dir)
        if done is not None and done.counted():
            check_same_identity(done, cfg, output_dir)
            log.info("skipping: %s already holds a complete results.json", output_dir)
            return done
        return train_locked(cfg, output_dir, signals)


def train_locked(cfg: DictConfig, output_dir: Path, signals: StopSignals) -> RunRecord:
    L.seed_everything(cfg.seed, workers=True)
    started, t0 = now(), time.perf_counter()
    reset_peak_memory()
    built = build(cfg)
    signals.trainer = built.trainer
    check_data(built)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    if ckpt_path and is_rank_zero():
        keep_csv_history(built.trainer, before_step=load_checkpoint(ckpt_path)["global_step"])
    record = initial_record(cfg, built, output_dir, started)
    if is_rank_zero():
        record.save(output_dir)
    try:
        try:
            built.trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics = final_evaluation(cfg, built)
            if signals.received:  # a signal between two Lightning loops
                raise Interrupted(signals.received)
        except BaseException as err:
            stopped = signals.received is not None
            record.status, record.error = (INTERRUPTED if stopped else FAILED), f"{type(err).__name__}: {err}"
            if stopped:
                record.error = f"interrupted by {signal.Signals(signals.received).name}; rerun the command to resume"
            record.run_info["finished_at"] = now()
            record.train_info = train_info(built, time.perf_counter() - t0)
            if is_rank_zero():
                record.save(output_dir)
            if stopped and not isinstance(err, Interrupted):
                raise Interrupted(signals.received) from err
            raise
        complete_record(cfg, built, record, metrics, time.perf_counter() - t0)
        if is_rank_zero():  # under DDP every rank runs this function; results are written once
            record.run_info["wandb"] = log_summary(record)
            print_summary(record, write_final_record(output_dir, record))
    finally:
        finish_wandb()
    return record


def check_same_identity(done: RunRecord, cfg: DictConfig, output_dir: Path) -> None:
    """A complete run is reused only for the same configuration (dir names can collide, defaults can change)."""
    wanted = semantic_identity(cfg, done.experiment.method)
    if done.identity.hash and done.identity.hash != wanted["hash"]:
        if same_configuration(done.identity.config, wanted["config"]):
            return  # recorded by an older peftlab under old key names
        raise FileExistsError(
            f"{output_dir} holds a complete run of another configuration (identity {done.identity.hash}, this run "
            f"{wanted['hash']}): set paths.output_dir to a new folder; results are never overwritten"
        )


def write_final_record(output_dir: Path, record: RunRecord) -> Path:
    """The last check before writing: a complete result already there (another writer that ignored the lock) is
    never replaced."""
    done = read_record(output_dir)
    if done is not None and done.counted():
        raise RunDirBusy(
            f"{output_dir / RESULTS_FILE} became complete while this run was training (another process wrote it); "
            "it is kept and this run's results are not written. Give every run its own directory."
        )
    return record.save(output_dir)


def is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def check_data(built: Built) -> None:
    """Read and check the split files (and fill the decoded-image cache) before any result is written, so bad data
    fails fast and leaves nothing behind. Lightning's own ``setup`` call inside ``fit`` is then a no-op."""
    built.datamodule.trainer = built.trainer
    built.datamodule.setup("fit")


def initial_record(cfg: DictConfig, built: Built, output_dir: Path, started: str) -> RunRecord:
    dm = built.datamodule
    identity = semantic_identity(cfg, built.method.name)
    return RunRecord(
        experiment=Experiment(
            name=cfg.experiment_name,
            method=built.method.name,
            backbone=str(cfg.backbone.name),
            backbone_config=group_choices().get("backbone"),
            weights=identity["config"]["backbone.weights"],
            dataset=dm.dataset,
            task=dm.task,
            group=dm.group,
            split=dm.split,
            seed=cfg.seed,
        ),
        identity=Identity(**identity),
        reported=Reported(metric=protocol.reported_metric(dm.split)),
        params=count_parameters(built.model),
        method=built.method.describe(),
        run_info={
            "config": OmegaConf.to_container(cfg, resolve=True),
            "git_sha": git_sha(),
            "command": command_line(),
            "choices": group_choices(),
            "output_dir": str(output_dir),
            "started_at": started,
            "finished_at": None,
        },
        meta_info={
            "versions": versions(),
            "device": device_name(built.trainer.strategy.root_device),
            "precision": str(built.trainer.precision),  # as Lightning runs it (16-mixed becomes bf16-mixed on a CPU)
        },
    )


def group_choices() -> dict[str, str | None]:
    """The options chosen for the config groups (``backbone: vit_b16_in21k``, ``experiment: ...``; None for an empty
    slot such as ``method_data: null``), when Hydra is running; Hydra's own groups are left out."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(k): None if v is None else str(v) for k, v in choices.items() if not str(k).startswith("hydra")}


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
    """Evaluate the final-epoch model once on the protocol's eval split (the reported number)."""
    trainer = built.trainer
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and "_step" not in k}
    if trainer.fast_dev_run:
        trainer.test(built.module, datamodule=built.datamodule, verbose=False)
    elif cfg.test:
        metrics.update(protocol.evaluate(trainer, built.module, built.datamodule))
    return metrics


def train_info(built: Built, wall_time: float) -> dict[str, Any]:
    trainer = built.trainer
    return {
        "wall_time_s": round(wall_time, 2),
        "peak_memory_mb": peak_memory_mb(),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }


def complete_record(cfg: DictConfig, built: Built, record: RunRecord, metrics: dict[str, float], wall: float) -> None:
    module = built.module
    record.status = COMPLETE
    record.reported.value = metrics.get(record.reported.metric)
    record.metrics = metrics
    record.diagnostics = {
        "best_epoch_eval_acc": module.best_val_acc,
        "best_epoch": None if module.best_val_epoch is None else module.best_val_epoch + 1,
        "note": "best-epoch accuracy on the eval split (epochs 1-based, as in the log): a diagnostic only, "
        "never the reported number",
    }
    record.train_info = {**train_info(built, wall), "schedule": getattr(module, "schedule", None)}
    record.data = built.datamodule.describe()
    record.run_info["finished_at"] = now()
    reasons = partial_reasons(cfg)
    if reasons:  # numbers from a cut-short run: never counted as a result
        record.status, record.partial_reasons = PARTIAL, reasons
    if record.reported.value is None:
        record.status = INCOMPLETE
        record.error = f"no {record.reported.metric} was computed (test=false or a debug run)"


def print_summary(record: RunRecord, path: Path) -> None:
    exp, params, value = record.experiment, record.params, record.reported.value
    lines = [
        f"method={exp.method}  data={exp.dataset}/{exp.task}  split={exp.split}  seed={exp.seed}  "
        f"identity={record.identity.hash}",
        f"trainable params: {params['trainable']:,} of {params['total']:,} "
        f"({params['trainable_without_head']:,} without head)",
        f"final-epoch {record.reported.metric}: " + ("n/a" if value is None else f"{100 * value:.2f}%"),
    ]
    best = record.diagnostics.get("best_epoch_eval_acc")
    if best is not None:
        lines.append(f"(diagnostic) best-epoch eval acc: {100 * best:.2f}% at epoch {record.diagnostics['best_epoch']}")
    lines.append(f"wall time {record.train_info['wall_time_s']:.1f} s; results written to {path}")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def run(cfg: DictConfig) -> float | None:
    """One Hydra job. In a sweep, a failed job is recorded (results.json, the summary at the end) and the sweep goes
    on; a signal stops the whole sweep with 128 + signum."""
    torch.set_float32_matmul_precision("high")
    record = run_cli(lambda: run_sweep_job(cfg) if in_multirun() else train(cfg))
    return record.reported.value if record is not None else None  # the value a Hydra sweeper optimises


def run_sweep_job(cfg: DictConfig) -> RunRecord | None:
    try:
        return train(cfg)
    except Exception as err:  # noqa: BLE001 - any failure of one job: record it, run the next
        output_dir = Path(cfg.paths.output_dir).resolve()
        if is_rank_zero() and read_record(output_dir) is None and not isinstance(err, RunDirBusy):
            failed_before_start(cfg, output_dir, err).save(output_dir)
        report_failed_job(str(output_dir), err, user_error=isinstance(err, USER_ERRORS))
        return None


def failed_before_start(cfg: DictConfig, output_dir: Path, err: BaseException) -> RunRecord:
    """The record of a sweep job that failed before training (bad option or data): status and error, no numbers."""
    data, choices = cfg.get("data") or {}, group_choices()
    return RunRecord(
        status=FAILED,
        error=f"{type(err).__name__}: {err}",
        experiment=Experiment(
            name=str(cfg.get("experiment_name")),
            method=choices.get("method") or "?",
            backbone=str((cfg.get("backbone") or {}).get("name", "?")),
            backbone_config=choices.get("backbone"),
            dataset=str(data.get("dataset")),
            task=str(data.get("task")),
            split=str(data.get("split")),
            seed=cfg.get("seed"),
        ),  # fmt: skip
        reported=Reported(metric=None),
        run_info={"command": command_line(), "output_dir": str(output_dir), "finished_at": now()},
    )


def main() -> None:
    """``peftlab-train``: one run, or a sweep with ``-m`` (which exits 1 at the end when a job failed: the
    ``SweepSummary`` callback of ``conf/hydra/default.yaml``)."""
    run_cli(lambda: check_moved_keys(sys.argv[1:]))
    run()


if __name__ == "__main__":
    main()
