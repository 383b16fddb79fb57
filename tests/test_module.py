"""The LightningModule's non-finite-loss check: on the device every step, read on the host only every N steps, at
epoch end and before a checkpoint, and still naming the first bad step and its learning rate."""

from __future__ import annotations

import contextlib
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from peftlab.module import ClassificationModule
from peftlab.optim import OptimRecipe

BATCH, STEPS, BAD_BATCH, CLASSES = 4, 8, 3, 3


def data(bad_batch: int | None) -> DataLoader:
    features = torch.randn(BATCH * STEPS, 5, generator=torch.Generator().manual_seed(0))
    if bad_batch is not None:
        features[bad_batch * BATCH] = float("nan")  # the loss of that step (and, after the update, all later) is NaN
    labels = torch.arange(BATCH * STEPS) % CLASSES
    return DataLoader(TensorDataset(features, labels), batch_size=BATCH)


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(5, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def fit(every: int, bad_batch: int | None = BAD_BATCH, lr: float = 0.1) -> ClassificationModule:
    recipe = OptimRecipe(optimizer=partial(torch.optim.SGD), lr=lr)
    module = ClassificationModule(Probe(), CLASSES, recipe, check_finite_every_n_steps=every)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, data(bad_batch))
    return module


@pytest.mark.parametrize("every", [1, 2, 1000])
def test_stops_naming_the_first_non_finite_step_and_its_lr_however_late_the_check(every):
    with pytest.raises(
        FloatingPointError,
        match=rf"non-finite training loss \(nan\) at step {BAD_BATCH} \(epoch 0\), "
        r"learning rate 0\.1:",
    ):
        fit(every)


def test_finite_run_completes():
    assert fit(every=2, bad_batch=None).trainer.global_step == STEPS


@contextlib.contextmanager
def host_reads_forbidden():
    """Any read of a tensor value on the host (bool, item, float, int) raises inside the block."""

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor value (a device sync) inside training_step")

    names = ("__bool__", "item", "__float__", "__int__", "tolist")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, forbidden)
    try:
        yield
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def test_training_step_reads_no_tensor_value_between_checks(monkeypatch):
    original = ClassificationModule.training_step

    def guarded(self, batch, batch_idx):
        with host_reads_forbidden():
            return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationModule, "training_step", guarded)
    fit(every=1000, bad_batch=None)  # passes only if no step read the loss on the host


def test_epoch_summary_reports_the_split_the_evaluation_measures(caplog):
    """Under split=final the per-epoch evaluation is logged as test/*: the summary line must show it, not be empty."""
    from types import SimpleNamespace

    from peftlab.callbacks import EpochSummary

    metrics = {"test/acc": torch.tensor(0.75), "train/loss": torch.tensor(0.1)}
    trainer = SimpleNamespace(callback_metrics=metrics, is_global_zero=True, sanity_checking=False, current_epoch=2)
    with caplog.at_level("INFO", logger="peftlab"):
        EpochSummary().on_validation_epoch_end(trainer, SimpleNamespace(eval_stage="test"))
    assert "epoch 3  eval test/acc=0.7500" in caplog.text
