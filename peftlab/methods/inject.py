"""The one shared mechanism: find target layers, inject a method's layers, mark what trains, merge.

:func:`inject` depends only on the :class:`Injectable` protocol (what :class:`~peftlab.methods.base.MethodConfig`
provides), so the contract module imports this one and not the other way round. Checkpoint-state helpers live in
:mod:`peftlab.methods.state`.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn

from peftlab.methods.layers import QKV_SLICES, SHARED, AdapterLayer, FusedQKV, LinearSlice, NotMergeableError

_TARGET_TYPES = (nn.Linear, nn.LayerNorm, nn.Conv2d)


class Injectable(Protocol):
    """What the injector needs from a method config (see :class:`peftlab.methods.base.MethodConfig`)."""

    name: str
    targets: list[str]
    exclude: list[str]
    train_head: bool
    base_trainable: tuple[str, ...]
    wraps_any_module: bool

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module | None: ...

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module: ...


def candidate_names(model: nn.Module) -> list[str]:
    """Names a pattern can address: every module, plus ``<...>.q/.k/.v`` for each fused qkv linear."""
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        names.append(name)
        if _is_fused_qkv(name, module):
            names.extend(f"{name[: -len('qkv')]}{s}" for s in QKV_SLICES)
    return names


def _is_fused_qkv(name: str, module: nn.Module) -> bool:
    return name.endswith("qkv") and isinstance(module, nn.Linear) and module.out_features == 3 * module.in_features


def matches(name: str, pattern: str) -> bool:
    """Glob (``blocks.*.attn.qkv``), dotted suffix (``attn.proj``) or ``re:<regex>`` full match."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or name.endswith("." + pattern)


def find_targets(model: nn.Module, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Names matched by ``patterns`` minus ``exclude``, in model order. A pattern that matches nothing is an error."""
    patterns, exclude = list(patterns), list(exclude)
    names = candidate_names(model)
    for pattern in patterns:
        if not any(matches(n, pattern) for n in names):
            raise ValueError(
                f"target pattern {pattern!r} matches no layer of {type(model).__name__}. "
                f"Available layer names (block index shown as *): {', '.join(summarize_names(names))}"
            )
    return [n for n in names if any(matches(n, p) for p in patterns) and not any(matches(n, p) for p in exclude)]


def summarize_names(names: Iterable[str]) -> list[str]:
    """Collapse numbered layers (``blocks.3.attn.qkv`` -> ``blocks.*.attn.qkv``) for readable error messages."""
    return sorted({re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names})


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, child = get_submodule_parent(model, name)
    setattr(parent, child, new)


def inject(model: nn.Module, method: Injectable) -> nn.Module:
    """Wrap every target of ``method`` in ``model`` (in place), then freeze all but the method's parameters."""
    if any(isinstance(m, AdapterLayer) for m in model.modules()) or hasattr(model, SHARED):
        raise RuntimeError("this model already has an injected method; create a fresh backbone for each method")
    model.requires_grad_(False)
    targets = find_targets(model, method.targets, method.exclude) if method.targets else []
    shared = method.create_shared(model, targets)
    if shared is not None:
        model.add_module(SHARED, shared)
    whole, slices = split_qkv_slices(model, targets)
    for name in whole:
        module = model.get_submodule(name)
        if not isinstance(module, _TARGET_TYPES) and not method.wraps_any_module:
            raise TypeError(
                f"method {method.name!r} cannot adapt {name!r} of type {type(module).__name__}; "
                f"targets must be Linear, LayerNorm or Conv2d layers (or q/k/v slices of a fused qkv)"
            )
        replace_module(model, name, method.create_layer(name, module, shared))
    for qkv_name, parts in slices.items():
        qkv = model.get_submodule(qkv_name)
        layers = {s: method.create_layer(n, LinearSlice(qkv, QKV_SLICES.index(s)), shared) for s, n in parts.items()}
        replace_module(model, qkv_name, FusedQKV(qkv, layers))
    mark_trainable(model, method)
    return model


def split_qkv_slices(model: nn.Module, targets: list[str]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Targets that are whole modules, and the q/k/v slice targets grouped by their fused qkv
    (``{"blocks.0.attn.qkv": {"q": "blocks.0.attn.q"}}``). A qkv targeted both ways is an error."""
    slices: dict[str, dict[str, str]] = defaultdict(dict)
    whole: list[str] = []
    for name in targets:
        parent, _, child = name.rpartition(".")
        qkv_name = f"{parent}.qkv"
        if child in QKV_SLICES and _is_fused_qkv(qkv_name, _safe_get(model, qkv_name)):
            slices[qkv_name][child] = name
        else:
            whole.append(name)
    conflicts = sorted(set(whole) & set(slices))
    if conflicts:
        raise ValueError(f"{conflicts[0]!r} is targeted both as a whole and by its q/k/v slices; choose one")
    return whole, dict(slices)


def _safe_get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def mark_trainable(model: nn.Module, method: Injectable) -> None:
    """Unfreeze exactly: the adapter layers' own parameters, shared method parameters, the head (if asked) and any
    base parameters the method names in ``base_trainable``. Chosen structurally, never by parameter-name prefix."""
    for module in model.modules():
        if isinstance(module, AdapterLayer):
            for p in module.adapter_parameters():
                p.requires_grad_(True)
    if hasattr(model, SHARED):
        getattr(model, SHARED).requires_grad_(True)
    if method.base_trainable:
        for name, p in model.named_parameters():
            if any(fnmatch.fnmatchcase(name, pat) for pat in method.base_trainable):
                p.requires_grad_(True)
    if method.train_head:
        head_parameters(model).requires_grad_(True)


def head_parameters(model: nn.Module) -> nn.Module:
    """The classification head module of a timm model."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"cannot find the classification head of {type(model).__name__}")
    return head


def top_level_adapters(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    """Adapter layers that are not nested inside another adapter layer."""
    found: list[tuple[str, AdapterLayer]] = []
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    return found


@torch.no_grad()
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer (in place) and return a plain timm model with zero inference overhead.

    Raises :class:`NotMergeableError` (before changing anything) when a method adds computation that cannot be folded.
    """
    adapters = top_level_adapters(model)
    blocked = sorted({type(a).__name__ for _, a in adapters if not a.mergeable})
    if blocked:
        raise NotMergeableError(
            f"this model cannot be merged: {', '.join(blocked)} add(s) computation that is not a weight change "
            f"(e.g. extra tokens or a non-linear bottleneck). Export the adapted model with merge=false instead."
        )
    merged = [(name, adapter, adapter.merged_weight(), adapter.merged_bias()) for name, adapter in adapters]
    for name, _, weight, bias in merged:
        if not torch.isfinite(weight).all() or (bias is not None and not torch.isfinite(bias).all()):
            raise FloatingPointError(f"merging {name!r} produced non-finite values; the adapter weights are corrupt")
    for name, adapter, weight, bias in merged:
        base = adapter.base_layer
        base.weight.copy_(weight)
        if bias is not None:
            if base.bias is None:
                base.bias = nn.Parameter(bias.clone(), requires_grad=False)
            else:
                base.bias.copy_(bias)
        replace_module(model, name, base)
    if hasattr(model, SHARED):
        delattr(model, SHARED)
    model.requires_grad_(False)
    return model
