"""Progress reporting that suits the terminal (a live bar when interactive, one log line per epoch otherwise) and the
one resumable checkpoint, ``last.ckpt``."""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("peftlab")


def interactive() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


def progress_callback() -> Callback:
    """Rich bar (when ``rich`` is installed) or tqdm on an interactive terminal; plain epoch lines under CI/pipes."""
    if not interactive():
        return EpochSummary()
    if importlib.util.find_spec("rich") is not None:
        return RichProgressBar()
    return TQDMProgressBar()


def is_progress_bar(callback: Callback) -> bool:
    return isinstance(callback, ProgressBar)


class EpochSummary(Callback):
    """Logs one line per epoch (and per evaluation) with the epoch's metrics."""

    # Every rank reads the metrics (reading them synchronises them across processes, a collective that must come in
    # the same order on all ranks, e.g. before last.ckpt's barrier); only rank zero prints.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        line = _format(trainer, "train/")
        if trainer.is_global_zero:
            log.info("epoch %d/%d  %s", trainer.current_epoch + 1, trainer.max_epochs, line)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        line = _format(trainer, f"{getattr(pl_module, 'eval_stage', 'val')}/")  # test/ under split=final
        if trainer.is_global_zero:
            log.info("epoch %d  eval %s", trainer.current_epoch + 1, line)


def _format(trainer: L.Trainer, prefix: str) -> str:
    items = sorted((k, v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and "_step" not in k)
    return "  ".join(f"{k}={float(v):.4f}" for k, v in items)


class LastCheckpoint(ModelCheckpoint):
    """Keeps one resumable checkpoint, ``<dirpath>/last.ckpt``: rewritten at the end of every training epoch (whether
    or not validation runs that epoch), every ``every_n_train_steps`` optimizer steps when > 0 (for long epochs),
    and when the run is stopped by a signal (SIGTERM/SIGINT, see ``peftlab.lifecycle``).

    Resuming reproduces the uninterrupted run exactly: the data order is a function of the epoch, and the random state
    and the position within the epoch travel in the checkpoint (a mid-epoch checkpoint resumes with the next batch,
    with both of peftlab's training loaders: :class:`~peftlab.data.sampling.ResumablePass`)."""

    LAST_NAME = "last.ckpt"

    def __init__(self, dirpath: str, every_n_train_steps: int = 0) -> None:
        if not isinstance(every_n_train_steps, int) or isinstance(every_n_train_steps, bool) or every_n_train_steps < 0:
            raise ValueError(
                f"callbacks.model_checkpoint.every_n_train_steps={every_n_train_steps!r} is invalid: expected an "
                "integer >= 0 (0 = only at epoch ends)"
            )
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=False, enable_version_counter=False)
        self.every_n_steps = every_n_train_steps

    @property
    def last_path(self) -> Path:
        return Path(self.dirpath) / self.LAST_NAME

    def write_last(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self._last_global_step_saved:
            return
        for logger in trainer.loggers:  # the logged history on disk reaches the checkpoint (a kill loses neither)
            logger.save()
        trainer.save_checkpoint(self.last_path)
        self.last_model_path = str(self.last_path)
        self._last_global_step_saved = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_global_step_saved = -1  # the epoch-end state (loop counters) differs from a step save
        self.write_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Saving does not depend on validation (the VTAB protocol evaluates only at the end)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A signal stops training at a batch boundary (a consistent state): keep it."""
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._last_global_step_saved = -1
            self.write_last(trainer)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "rng": rng_state()}
        if (loader := self._resumable_train_loader()) is not None:
            state["train_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_rng = state_dict.pop("rng", None)
        self._saved_loader = state_dict.pop("train_loader", None)
        super().load_state_dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The random state is restored once the dataloaders exist (creating them draws from it, as in the
        uninterrupted run), just before training goes on; so is the position of a training pass stopped mid-epoch
        (Lightning's own loader-state restore is skipped when the train loader was built before the checkpoint was
        loaded, as ``estimated_stepping_batches`` does)."""
        super().on_train_start(trainer, pl_module)
        if getattr(self, "_saved_rng", None) is not None:
            set_rng_state(self._saved_rng)
            self._saved_rng = None
        if getattr(self, "_saved_loader", None) is not None and (loader := self._resumable_train_loader()) is not None:
            loader.load_state_dict(self._saved_loader)
        self._saved_loader = None

    def _resumable_train_loader(self) -> Any:
        """The train loader when it can save and restore its position (peftlab's training loaders), else None."""
        trainer = getattr(self, "_trainer", None)
        loader = trainer.train_dataloader if trainer is not None else None
        return loader if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict") else None


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch random states (CPU, and CUDA when present): saved with the checkpoint so that a
    resumed run draws the same dropout masks and augmentations as the uninterrupted one."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]  # loads with weights_only
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def keep_csv_history(trainer: L.Trainer, before_step: int) -> None:
    """On resume, Lightning's CSV logger starts ``metrics.csv`` afresh (it deletes the file): put back the rows logged
    before the checkpoint's step; later rows (logged after the checkpoint, before the kill) are logged again."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step", "").isdigit() and int(row["step"]) < before_step]
        writer = logger.experiment  # creating the writer removes the old file
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=keys)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = keys
