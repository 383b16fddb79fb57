"""What a checkpoint of an adapted model holds: only the tensors that train (method, shared and head parameters)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from peftlab.methods.inject import head_parameters


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the tensors that train (adapter, shared and head parameters), detached."""
    return {k: v.detach() for k, v in model.state_dict(keep_vars=True).items() if getattr(v, "requires_grad", False)}


def load_trainable_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a :func:`trainable_state_dict`, after checking that its keys are exactly the trainable tensors."""
    check_state_keys(trainable_state_dict(model), state)
    model.load_state_dict(state, strict=False)


def check_state_keys(expected: Iterable[str], found: Iterable[str]) -> None:
    """Raise a KeyError that lists missing and unexpected keys unless ``found`` equals ``expected``."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise KeyError(
            "checkpoint does not match this model's trainable tensors "
            f"(missing {len(missing)}: {_preview(missing)}; unexpected {len(unexpected)}: {_preview(unexpected)}). "
            "Load it with the same method, backbone and number of classes it was trained with."
        )


def _preview(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "none"


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, total and head parameter counts (shared parameters counted once)."""
    params = list(model.parameters())  # deduplicated by nn.Module
    head = [p for p in head_parameters(model).parameters()]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    trainable_head = sum(p.numel() for p in head if p.requires_grad)
    return {
        "trainable": trainable,
        "total": sum(p.numel() for p in params),
        "head": sum(p.numel() for p in head),
        "trainable_without_head": trainable - trainable_head,
    }
