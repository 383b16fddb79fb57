"""Checkpoints are written atomically under every strategy (single device and DDP alike)."""

from __future__ import annotations

import pytest

from peftlab.build import build_method, build_trainer
from peftlab.results import AtomicCheckpointIO


@pytest.mark.parametrize("strategy", [None, "auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"])
def test_atomic_checkpoint_io_under_every_strategy(make_cfg, strategy):
    overrides = ["trainer.accelerator=cpu", "trainer.devices=2"]
    if strategy is not None:
        overrides.append(f"+trainer.strategy={strategy}")
    cfg = make_cfg(*overrides)
    trainer = build_trainer(cfg, build_method(cfg), with_loggers=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
