"""Optimiser parameter groups and the papers' schedule: linear warm-up, then cosine decay (stepped per batch)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float, no_decay: Iterable[str] = ("bias", "norm")) -> list[dict]:
    """Two groups of trainable parameters: those whose name contains any of ``no_decay`` get no weight decay
    (biases, norms and the shifts/scales living in norm layers, as in the RLRR code), all others ``weight_decay``."""
    no_decay = tuple(no_decay)
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if any(key in name for key in no_decay) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_start_factor: float = 1e-4,
    min_lr_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply each group's lr by a factor rising linearly from ``warmup_start_factor`` to 1 over ``warmup_steps``,
    then falling along a half cosine to ``min_lr_factor`` at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"the schedule needs total_steps > 0, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine_factor(total_steps, warmup_steps, warmup_start_factor, min_lr_factor)
    )


def _warmup_cosine_factor(total: int, warmup: int, start: float, floor: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
