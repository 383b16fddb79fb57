"""Backbones through timm's factory only: hub weights, a local weights file, or random init; head reset to the task."""

from __future__ import annotations

import difflib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from peftlab.weights import WeightsError, load_weights_file

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"


def create_backbone(
    name: str,
    num_classes: int,
    image_size: int | None = None,
    pretrained: bool = False,
    weights_file: str | None = None,
    head_init: str = "zeros",
    branch_dropout: float = 0.0,
    model_kwargs: dict[str, Any] | None = None,
    allow_unexpected_keys: bool = False,
) -> nn.Module:
    """Create a timm model with a fresh ``num_classes`` head.

    Args:
        name: timm model name with pretrained tag, e.g. ``vit_base_patch16_224.orig_in21k``.
        num_classes: classes of the task; the head is reset to this size.
        image_size: the task's input size (``img_size``; ``model_kwargs`` may set its own), None: the model's own.
        pretrained: load the tag's weights from the Hugging Face hub (or its local cache).
        weights_file: load weights from this local file instead (``.safetensors``, ``.bin``, ``.pth`` or ``.npz``);
            implies pretrained. timm's own filter adapts the checkpoint (head dropped, position embeddings resized).
        head_init: ``zeros`` (as the RLRR/VPT code) or ``default`` (timm's init).
        branch_dropout: element-wise dropout on each block's attention and MLP branch outputs, rising linearly from 0
            (first block) to this rate (last block): what the RLRR code calls "drop_path" (not stochastic depth).
        model_kwargs: extra architecture arguments for ``timm.create_model`` (``img_size``, ``patch_size``, ...).
        allow_unexpected_keys: accept a weights file holding tensors the model does not have (missing backbone
            tensors are always an error).
    """
    check_model_name(name)
    kwargs = dict(model_kwargs or {})
    if image_size is not None:
        kwargs.setdefault("img_size", image_size)
    check_patch_size(name, kwargs.get("patch_size"), pretrained and not weights_file)  # a file may match it
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"backbone weights file not found: {path}. Set backbone.weights_file to an existing checkpoint "
                f"(e.g. a downloaded pytorch_model.bin / model.safetensors / ViT-B_16.npz for {name}), "
                f"or backbone.pretrained=false for a random init."
            )
        if path.suffix != ".npz":  # loaded and checked key by key (the .npz of the original ViT: timm's loader)
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
            load_weights_file(model, path, allow_unexpected_keys)
            return finish_backbone(model, head_init, branch_dropout)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    elif pretrained:
        _go_offline_if_hub_unreachable()
    try:
        model = _create_model(name, pretrained, num_classes, kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not load pretrained weights for {name!r} ({type(err).__name__}: {str(err)[:300]}). "
            f"Without network access, download the checkpoint elsewhere and pass it as a local file: "
            f"backbone.weights_file=/path/to/model.safetensors (or set PEFTLAB_WEIGHTS / paths.weights_dir)."
        ) from err
    return finish_backbone(model, head_init, branch_dropout)


def finish_backbone(model: nn.Module, head_init: str, branch_dropout: float) -> nn.Module:
    set_branch_dropout(model, branch_dropout)
    if head_init == "zeros":
        reset_head_to_zeros(model)
    elif head_init != "default":
        raise ValueError(f"backbone.head_init={head_init!r} is invalid: expected 'zeros' or 'default'")
    return model


def _create_model(name: str, pretrained: bool, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model``; a model family without an ``img_size`` argument (CNNs) is created at its own size."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:
        if "img_size" not in kwargs or "img_size" not in str(err):
            raise
        kwargs = {k: v for k, v in kwargs.items() if k != "img_size"}
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """Raises one line naming timm's closest model names when ``name`` is not a timm model."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(pretrained=True), n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models('*vit*', pretrained=True)"
    raise ValueError(f"backbone.name={name!r} is not a timm model; {hint}")


def check_patch_size(name: str, patch_size: int | None, pretrained: bool) -> None:
    """A patch size other than the pretrained one would make timm resample the patch kernel of the weights."""
    native = patch_size_from_name(name)
    if pretrained and patch_size is not None and native is not None and patch_size != native:
        raise ValueError(
            f"backbone.model_kwargs.patch_size={patch_size} differs from the pretrained {native} of {name!r} "
            "(timm would resample its patch kernel): use backbone=timm backbone.name=<model>, which inherits no "
            "architecture overrides, or backbone.model_kwargs.patch_size=null"
        )


def patch_size_from_name(name: str) -> int | None:
    """The patch size in a timm ViT name (``vit_base_patch16_224`` -> 16), else None."""
    for part in name.split(".")[0].split("_"):
        if part.startswith("patch") and part[5:].isdigit():
            return int(part[5:])
    return None


def weights_source(name: str, pretrained: bool = False, weights_file: str | None = None) -> str:
    """Where the weights of backbone ``name`` come from, as the run identity and results.json record them (from
    the config, before anything is loaded): ``file:<file name>`` (a local file, by name: moving it changes nothing),
    ``hub:<hub id>`` (timm's pretrained tag of ``name`` on the Hugging Face hub, or its download url), or
    ``random-init``."""
    if weights_file:
        return f"file:{Path(str(weights_file)).name}"
    if not pretrained:
        return "random-init"
    cfg = timm.models.get_pretrained_cfg(name)
    return f"hub:{(cfg and (cfg.hf_hub_id or cfg.url)) or name}"


def timm_name(model: nn.Module) -> str:
    """The timm model actually built: ``architecture.tag`` (the default tag when the name had none)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return ".".join(filter(None, (cfg.get("architecture"), cfg.get("tag")))) or type(model).__name__


def set_branch_dropout(model: nn.Module, rate: float) -> None:
    """Dropout rate ``rate·i/(L−1)`` on the residual branch outputs of block i (timm's ``attn.proj_drop`` and
    ``mlp.drop2``), as the RLRR code's per-task "drop_path"."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"backbone.branch_dropout={rate!r} is invalid: expected a probability in [0, 1)")
    blocks = list(getattr(model, "blocks", []))
    if rate and not blocks:
        raise ValueError(f"backbone.branch_dropout needs a ViT with .blocks; {type(model).__name__} has none")
    for i, block in enumerate(blocks):
        p = rate * i / max(1, len(blocks) - 1)
        for dropout in (block.attn.proj_drop, block.mlp.drop2):
            dropout.p = p


@torch.no_grad()
def reset_head_to_zeros(model: nn.Module) -> None:
    head = model.get_classifier()
    for p in head.parameters():
        p.zero_()


def _go_offline_if_hub_unreachable(timeout: float = 3.0) -> None:
    """Switch huggingface_hub to offline mode (cache only) when the hub cannot be reached, instead of ~1 min of
    retries. Respects an explicit ``HF_HUB_OFFLINE`` setting."""
    if os.environ.get("HF_HUB_OFFLINE"):
        return
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError:
        import huggingface_hub.constants

        log.warning("%s is unreachable: using the local Hugging Face cache only (HF_HUB_OFFLINE=1)", HUB_HOST)
        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True


def data_config(model: nn.Module) -> dict[str, Any]:
    """Normalisation and interpolation from the backbone's pretrained config (ImageNet or 0.5/0.5)."""
    cfg = timm.data.resolve_data_config(model=model)
    return {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "interpolation": cfg["interpolation"]}
