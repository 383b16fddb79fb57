"""Which trainable tensors get weight decay, and with which learning-rate multiplier: facts the methods declare.

The parameter grouping (:func:`peftlab.optim.parameter_groups`) asks the model's layers instead of matching
substrings of parameter names:

* a method's layer (:class:`~peftlab.methods.base.AdapterLayer`) or shared module lists the attribute names of its
  own parameters that get no weight decay in ``no_decay`` and any learning-rate multipliers in ``lr_scales``;
* a trainable tensor of the base model (the head, BitFit's biases, full fine-tuning) gets no weight decay when it is
  a bias, belongs to a normalisation layer or is named by the model's own ``no_weight_decay()`` (timm: class token,
  position embedding). This is the one default for base-model tensors, whatever the method.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from peftlab.methods.layers import SHARED, AdapterLayer

#: normalisation layers whose affine parameters are not decayed
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def no_weight_decay(model: nn.Module) -> set[str]:
    """Names of the trainable parameters of ``model`` that get no weight decay."""
    method_owned = list(_method_parameters(model))
    declared = {name for name, owner, attr in method_owned if attr in getattr(owner, "no_decay", ())}
    owned = {name for name, _, _ in method_owned}
    exempt = declared | {name for name in _base_no_decay(model) if name not in owned}
    return {name for name, p in model.named_parameters() if p.requires_grad and name in exempt}


def lr_scales(model: nn.Module) -> dict[str, float]:
    """Learning-rate multipliers the method's layers declare (``{parameter name: factor}``; absent means 1)."""
    scales = {}
    for name, owner, attr in _method_parameters(model):
        factor = getattr(owner, "lr_scales", {}).get(attr)
        if factor is not None:
            scales[name] = float(factor)
    return scales


def _method_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """``(full name, owning module, attribute name)`` of every parameter that a method layer or the shared module
    (or one of its submodules) owns directly."""
    for prefix, module in model.named_modules():
        if isinstance(module, AdapterLayer) or prefix == SHARED or prefix.startswith(f"{SHARED}."):
            for attr, _ in module.named_parameters(recurse=False):
                yield f"{prefix}.{attr}", module, attr


def _base_no_decay(model: nn.Module) -> Iterator[str]:
    named = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    for prefix, module in model.named_modules():
        for attr, _ in module.named_parameters(recurse=False):
            name = f"{prefix}.{attr}" if prefix else attr
            if attr == "bias" or isinstance(module, NORM_LAYERS) or name in named:
                yield name
