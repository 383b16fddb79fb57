"""The LightningModule shared by every method: cross-entropy classification with top-1 accuracy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from peftlab.methods.state import check_state_keys, count_parameters, trainable_state_dict
from peftlab.optim import OptimRecipe

PREFIX = "model."


class ClassificationModule(L.LightningModule):
    """Trains ``model`` (a timm ViT with a method injected) on image classification.

    Args:
        model: the adapted backbone; only its ``requires_grad`` parameters are optimised and checkpointed.
        num_classes: classes of the task (for the accuracy metrics).
        recipe: the optimiser and schedule (the ``optim`` config group).
        label_smoothing: cross-entropy label smoothing (``module.label_smoothing``).
        check_finite_every_n_steps: how often the on-device non-finite-loss flag is read on the host (also at every
            epoch end and before every checkpoint); the loss itself is checked every step without a host sync.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        recipe: OptimRecipe,
        label_smoothing: float = 0.0,
        check_finite_every_n_steps: int = 50,
    ) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.strict_loading = False  # checkpoints hold trainable tensors only; checked in on_load_checkpoint
        self.run_config: dict[str, Any] | None = None  # the resolved training config, saved in checkpoints
        self.eval_stage = "val"  # the name the per-epoch evaluation is logged under: the split it measures (protocol)
        self.best_val_acc: float | None = None
        self.best_val_epoch: int | None = None
        self.check_finite_every_n_steps = check_finite_every_n_steps
        self._first_bad: dict[str, torch.Tensor] | None = None  # on device: step and loss of the first non-finite
        self._step_context: dict[int, tuple[int, float | None]] = {}  # step -> (epoch, lr), since the last check
        self.schedule: dict[str, Any] | None = None  # the warm-up and total steps used (recorded in results.json)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        metric.update(logits, labels)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=False,  # a progress-bar value is read on the host every step (a device sync)
            sync_dist=stage != "train",
        )
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train", self.train_acc)
        self._record_finiteness(loss)
        if (self.global_step + 1) % self.check_finite_every_n_steps == 0:
            self.raise_if_non_finite()
        return loss

    def _record_finiteness(self, loss: torch.Tensor) -> None:
        """Remember the first non-finite loss and its step on the device (no host sync); the host keeps the epoch and
        learning rate of each step until the next check."""
        if self._first_bad is None:  # python scalars below become kernel arguments, never host-to-device copies
            self._first_bad = {
                "step": loss.new_full((), -1, dtype=torch.long),
                "loss": loss.new_zeros((), dtype=torch.float),
            }
        first = self._first_bad
        is_first = (first["step"] < 0) & ~torch.isfinite(loss.detach())
        first["step"] = torch.where(is_first, self.global_step, first["step"])
        first["loss"] = torch.where(is_first, loss.detach().float(), first["loss"])
        optimizers = self.trainer.optimizers
        lr = max(group["lr"] for group in optimizers[0].param_groups) if optimizers else None
        self._step_context[self.global_step] = (self.current_epoch, lr)

    def raise_if_non_finite(self) -> None:
        """Read the flag (one host sync) and stop with the first non-finite step, its epoch and learning rate."""
        if self._first_bad is not None:
            step = int(self._first_bad["step"])
            if step >= 0:
                raise FloatingPointError(self._non_finite_message(float(self._first_bad["loss"]), step))
        self._step_context.clear()

    def _non_finite_message(self, loss: float, step: int) -> str:
        epoch, lr = self._step_context.get(step, (self.current_epoch, None))
        last = self.trainer.checkpoint_callback.last_model_path if self.trainer.checkpoint_callback else None
        return (
            f"non-finite training loss ({loss}) at step {step} (epoch {epoch}), "
            f"learning rate {'n/a' if lr is None else lr}: training stopped. Lower optim.lr, set "
            f"trainer.gradient_clip_val, or use fp32 precision. The last good checkpoint is kept: {last or 'none yet'}"
        )

    def on_train_epoch_end(self) -> None:
        self.raise_if_non_finite()

    def on_validation_start(self) -> None:
        self.raise_if_non_finite()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.eval_stage, self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self.trainer.callback_metrics.get(f"{self.eval_stage}/acc")
        if acc is not None and (self.best_val_acc is None or float(acc) > self.best_val_acc):
            self.best_val_acc, self.best_val_epoch = float(acc), self.current_epoch

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        if hasattr(loader, "set_epoch"):  # peftlab's training loaders: same order per epoch, resumed or not
            loader.set_epoch(self.current_epoch)

    def on_train_start(self) -> None:
        counts = count_parameters(self.model)
        for logger in self.loggers:
            logger.log_metrics({f"params/{k}": float(v) for k, v in counts.items()}, step=0)

    def configure_optimizers(self):
        optimizer = self.recipe.create_optimizer(self.model)
        if self.recipe.scheduler is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup_epochs = self.recipe.warmup_epochs
        warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.schedule = {"warmup_epochs": warmup_epochs, "warmup_steps": warmup_steps, "total_steps": total}
        scheduler = self.recipe.scheduler(optimizer, total_steps=total, warmup_steps=warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_non_finite()  # never write weights trained after a non-finite loss
        checkpoint["state_dict"] = {PREFIX + k: v for k, v in trainable_state_dict(self.model).items()}
        checkpoint["peftlab"] = {
            "config": self.run_config,
            "best_val_acc": self.best_val_acc,
            "best_val_epoch": self.best_val_epoch,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_state_keys((PREFIX + k for k in trainable_state_dict(self.model)), checkpoint["state_dict"])
        extra = checkpoint.get("peftlab", {})
        self.best_val_acc, self.best_val_epoch = extra.get("best_val_acc"), extra.get("best_val_epoch")
