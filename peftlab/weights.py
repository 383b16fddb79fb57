"""Backbone weights from a local file, checked tensor by tensor: a file that lacks backbone tensors (which would stay
random) or holds tensors the model does not have (another architecture) is an error, never a silent partial load."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

LISTED = 8


class WeightsError(FileNotFoundError):
    """Pretrained weights could not be found or loaded."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or torch (``.bin``/``.pth``/``.pt``) weights file, loaded without running any
    pickled code; a corrupt, empty or truncated file is one WeightsError line."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError and OS errors
            size = path.stat().st_size
            raise WeightsError(
                f"{path} is not a readable safetensors file ({size} bytes; {str(err).splitlines()[0][:120]}): it is "
                "truncated or corrupt; download or copy it again"
            ) from None
    from peftlab.checkpoint import CheckpointError, safe_torch_load

    try:
        payload = safe_torch_load(path, what="weights file")
    except CheckpointError as err:
        raise WeightsError(str(err)) from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsError(f"{path} holds no state dict (name -> tensor); give a weights file of the backbone")
    return payload


def load_weights_file(model: nn.Module, path: Path, allow_unexpected_keys: bool = False) -> None:
    """Load ``path`` into ``model`` through timm's own checkpoint filter (position embeddings resized, layouts
    converted). Only the classification head may be missing (it is replaced for the task)."""
    state = read_state_dict(path)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    head = head_keys(model)
    state = {k: v for k, v in state.items() if k not in head}
    own = model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise WeightsError(f"{path} does not fit {model_name(model)}: shapes differ for {_listed(mismatched)}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in head]
    if missing:
        raise WeightsError(
            f"{path} lacks {len(missing)} backbone tensor(s) of {model_name(model)}: {_listed(missing)}. Those layers "
            "would stay random: use the complete weights file of this backbone (timm's tensor names)"
        )
    if result.unexpected_keys and not allow_unexpected_keys:
        raise WeightsError(
            f"{path} holds {len(result.unexpected_keys)} tensor(s) that {model_name(model)} does not have: "
            f"{_listed(result.unexpected_keys)}. Is it another architecture? Set backbone.allow_unexpected_keys=true "
            "to ignore them"
        )


def head_keys(model: nn.Module) -> set[str]:
    """Parameter names of the classification head (replaced for the task, so never loaded from a file)."""
    classifiers = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    return {f"{name}.{kind}" for name in classifiers for kind in ("weight", "bias")}


def model_name(model: nn.Module) -> str:
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" (and {len(names) - LISTED} more)" if len(names) > LISTED else "")
