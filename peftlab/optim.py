"""Optimiser parameter groups and the papers' schedule: linear warm-up, then cosine decay (stepped per batch)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timm.models import group_parameters
from torch import nn

from peftlab.methods.decay import lr_scales as declared_lr_scales
from peftlab.methods.decay import no_weight_decay
from peftlab.methods.inject import head_parameters
from peftlab.options import check_optim


@dataclass(frozen=True)
class OptimRecipe:
    """The ``optim`` config group as a whole: what to optimise with and how the learning rate moves.

    Args:
        optimizer: a partial optimizer (``_partial_: true``), called with the parameter groups and ``lr``.
        lr: the base learning rate (``optim.lr``: the key sweeps and searches vary).
        weight_decay: weight decay of the decayed tensors (the method declares which tensors get none).
        head_lr_scale: learning-rate multiplier of the classification head (1: the same lr as the rest).
        layer_decay: layer-wise lr decay (e.g. 0.65 for full fine-tuning), or None for one lr over depth.
        warmup_epochs: linear warm-up length in epochs (converted to steps by the module).
        scheduler: a partial schedule called with ``optimizer``, ``total_steps`` and ``warmup_steps``; None: constant.
    """

    optimizer: Callable[..., torch.optim.Optimizer]
    lr: float = 1e-3
    weight_decay: float = 0.0
    head_lr_scale: float = 1.0
    layer_decay: float | None = None
    warmup_epochs: float = 10
    scheduler: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        check_optim(
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            head_lr_scale=self.head_lr_scale,
            layer_decay=self.layer_decay,
        )

    def create_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters of ``model``, grouped by weight decay and lr multiplier."""
        groups = parameter_groups(model, self.weight_decay, self.head_lr_scale, self.layer_decay)
        if not groups:
            raise ValueError("nothing to train: the method left no parameter with requires_grad=True")
        return scale_learning_rates(self.optimizer(groups, lr=self.lr))


def parameter_groups(
    model: nn.Module, weight_decay: float, head_lr_scale: float = 1.0, layer_decay: float | None = None
) -> list[dict]:
    """Groups of the trainable parameters of ``model`` with equal weight decay and learning-rate multiplier.

    Which tensors get no weight decay and any per-tensor lr multiplier are the method's declarations
    (:mod:`peftlab.methods.decay`). ``head_lr_scale`` multiplies the classification head's lr; ``layer_decay``
    (layer-wise lr decay, as timm's ``param_groups_layer_decay``) multiplies the lr of layer ``i`` of ``n`` by
    ``layer_decay ** (n - i)``: the head keeps the full lr, each block below gets ``layer_decay`` times the lr of
    the block above, the embeddings the least. Each group carries its multiplier as ``lr_scale``; apply it with
    :func:`scale_learning_rates` once the optimizer exists.
    """
    check_optim(weight_decay=weight_decay, head_lr_scale=head_lr_scale, layer_decay=layer_decay)
    exempt = no_weight_decay(model)
    scales = _lr_scales(model, head_lr_scale, layer_decay)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name not in exempt, scales.get(name, 1.0)), []).append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), params in sorted(groups.items(), key=lambda item: (not item[0][0], -item[0][1]))
    ]


def _lr_scales(model: nn.Module, head_lr_scale: float, layer_decay: float | None) -> dict[str, float]:
    scales = dict.fromkeys((n for n, _ in model.named_parameters()), 1.0)
    if layer_decay is not None:
        layers = layer_ids(model)
        last = max(layers.values())
        scales.update({n: layer_decay ** (last - layers.get(n, last)) for n in scales})
    head = {id(p) for p in head_parameters(model).parameters()}
    for name, p in model.named_parameters():
        if id(p) in head:
            scales[name] *= head_lr_scale
    for name, factor in declared_lr_scales(model).items():
        scales[name] *= factor
    return scales


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Depth index of every parameter, from timm's ``group_matcher`` (embeddings 0, block ``i`` ``i + 1``, the head
    last); parameters a method added inside a block share the block's index, others (shared modules) the last."""
    if not hasattr(model, "group_matcher"):
        raise ValueError(
            f"optim.layer_decay needs a timm model with group_matcher(); {type(model).__name__} has none: "
            "set optim.layer_decay=null"
        )
    return group_parameters(model, model.group_matcher(coarse=False), reverse=True)


def scale_learning_rates(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Multiply each group's lr by its ``lr_scale`` (call once, before creating the schedule)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return optimizer


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
