"""The layers every method builds on: :class:`AdapterLayer` wraps one frozen ``base_layer``; timm's fused qkv is
addressed through :class:`LinearSlice` views and recombined by :class:`FusedQKV`.

Re-parameterisable layers implement :meth:`AdapterLayer.merged_weight` / :meth:`AdapterLayer.merged_bias`; the shared
``merge_and_unload`` (:mod:`peftlab.methods.inject`) writes those into the base layer and drops the wrapper.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: attribute of the model that holds a method's shared parameters (``create_shared``)
SHARED = "peft_shared"


class NotMergeableError(RuntimeError):
    """Raised when merging is asked of a method that adds computation that cannot be folded into the weights."""


class AdapterLayer(nn.Module):
    """A frozen ``base_layer`` plus trainable method parameters.

    Subclasses create their parameters in ``__init__`` (as direct attributes, named with the method prefix, e.g.
    ``rlrr_scale_in``), initialise them in ``reset_parameters`` and implement either ``merged_weight``/``merged_bias``
    (then the default ``forward`` applies the base op with the merged weights) or their own ``forward``.
    """

    mergeable: ClassVar[bool] = True
    #: attribute names of this layer's own parameters that get no weight decay (see :mod:`peftlab.methods.decay`)
    no_decay: ClassVar[tuple[str, ...]] = ()
    #: learning-rate multipliers of this layer's own parameters, by attribute name (absent means 1)
    lr_scales: ClassVar[dict[str, float]] = {}

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer

    def merged_weight(self) -> Tensor:
        raise NotMergeableError(f"{type(self).__name__} cannot be merged into the weights of {self.base_layer}")

    def merged_bias(self) -> Tensor | None:
        return base_bias(self.base_layer)

    def forward(self, x: Tensor) -> Tensor:
        return base_forward(self.base_layer, x, self.merged_weight(), self.merged_bias())

    @property
    def computes_with_merged_weight(self) -> bool:
        """True when ``forward`` is the base op with ``merged_weight()`` (then fused q/k/v can share one GEMM)."""
        return type(self).forward is AdapterLayer.forward

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The method's own parameters (everything but the base layer's)."""
        base = {id(p) for p in self.base_layer.parameters()}
        return [p for p in self.parameters() if id(p) not in base]


def base_bias(layer: nn.Module) -> Tensor | None:
    return getattr(layer, "bias", None)


def out_features(layer: nn.Module) -> int:
    """Number of output channels of a Linear, LinearSlice, Conv2d or LayerNorm."""
    if isinstance(layer, (nn.Linear, LinearSlice)):
        return layer.out_features
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels
    if isinstance(layer, nn.LayerNorm):
        return layer.normalized_shape[-1]
    raise TypeError(f"unsupported layer type {type(layer).__name__}; expected Linear, Conv2d or LayerNorm")


def base_forward(layer: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Apply ``layer``'s operation with the given (merged) weight and bias."""
    if isinstance(layer, (nn.Linear, LinearSlice)):
        return F.linear(x, weight, bias)
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, bias)
    if isinstance(layer, nn.LayerNorm):
        return F.layer_norm(x, layer.normalized_shape, weight, bias, layer.eps)
    raise TypeError(f"unsupported layer type {type(layer).__name__}; expected Linear, Conv2d or LayerNorm")


class LinearSlice(nn.Module):
    """A read-only view of rows ``[index * dim, (index + 1) * dim)`` of a fused linear (q, k or v of timm's qkv).

    It owns no parameters (the fused layer does), so state dicts stay free of duplicates.
    """

    def __init__(self, fused: nn.Linear, index: int, parts: int = 3) -> None:
        super().__init__()
        if fused.out_features % parts:
            raise ValueError(f"cannot split a Linear with {fused.out_features} outputs into {parts} equal slices")
        object.__setattr__(self, "_fused", fused)  # not registered: the FusedQKV wrapper owns it
        self.index = index
        self.in_features = fused.in_features
        self.out_features = fused.out_features // parts

    @property
    def _rows(self) -> slice:
        return slice(self.index * self.out_features, (self.index + 1) * self.out_features)

    @property
    def weight(self) -> Tensor:
        return self._fused.weight[self._rows]

    @property
    def bias(self) -> Tensor | None:
        bias = self._fused.bias
        return None if bias is None else bias[self._rows]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"slice {'qkv'[self.index]} of fused Linear, in_features={self.in_features}, out={self.out_features}"


QKV_SLICES = ("q", "k", "v")


class FusedQKV(AdapterLayer):
    """timm's fused qkv with an independent layer per adapted slice (unadapted slices stay plain views)."""

    def __init__(self, base_layer: nn.Linear, parts: dict[str, nn.Module]) -> None:
        super().__init__(base_layer)
        self.parts = nn.ModuleDict({s: parts.get(s, LinearSlice(base_layer, i)) for i, s in enumerate(QKV_SLICES)})
        self.mergeable = all(getattr(p, "mergeable", True) for p in self.parts.values())
        # weight-side parts (no forward of their own) are cheapest as one GEMM with the concatenated weights
        self.single_gemm = all(_uses_merged_weight(p) for p in self.parts.values())

    def _part_weight(self, part: nn.Module) -> Tensor:
        return part.weight if isinstance(part, LinearSlice) else part.merged_weight()

    def _part_bias(self, part: nn.Module) -> Tensor | None:
        return part.bias if isinstance(part, LinearSlice) else part.merged_bias()

    def merged_weight(self) -> Tensor:
        return torch.cat([self._part_weight(p) for p in self.parts.values()], dim=0)

    def merged_bias(self) -> Tensor | None:
        biases = [self._part_bias(p) for p in self.parts.values()]
        if all(b is None for b in biases):
            return None
        zeros = self.base_layer.weight.new_zeros(self.base_layer.out_features // len(QKV_SLICES))
        return torch.cat([zeros if b is None else b for b in biases])

    def forward(self, x: Tensor) -> Tensor:
        fused = self._qkv_forward(x)
        if fused is not None:
            return fused
        if self.single_gemm:
            return F.linear(x, self.merged_weight(), self.merged_bias())
        return torch.cat([part(x) for part in self.parts.values()], dim=-1)

    def _qkv_forward(self, x: Tensor) -> Tensor | None:
        """The adapted parts' own fused kernel over the whole qkv (``qkv_forward(fused, parts, x)`` on their class,
        parts None where unadapted), when they share one class that has it; None otherwise."""
        parts = [None if isinstance(p, LinearSlice) else p for p in self.parts.values()]
        kinds = {type(p) for p in parts if p is not None}
        kernel = getattr(kinds.pop(), "qkv_forward", None) if len(kinds) == 1 else None
        return None if kernel is None else kernel(self.base_layer, parts, x)


def _uses_merged_weight(part: nn.Module) -> bool:
    return isinstance(part, LinearSlice) or part.computes_with_merged_weight
