"""Progress reporting that suits the terminal: a live bar when interactive, one log line per epoch otherwise."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar

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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("epoch %d/%d  %s", trainer.current_epoch + 1, trainer.max_epochs, _format(trainer, "train/"))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            log.info("epoch %d  eval %s", trainer.current_epoch + 1, _format(trainer, "val/"))


def _format(trainer: L.Trainer, prefix: str) -> str:
    items = sorted((k, v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and "_step" not in k)
    return "  ".join(f"{k}={float(v):.4f}" for k, v in items)
