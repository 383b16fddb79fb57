"""The contract every method follows: a small config that injects :class:`AdapterLayer` wrappers.

* :class:`MethodConfig` holds only hyperparameters. ``apply(model)`` hands it to the shared injector
  (:mod:`peftlab.methods.inject`), which finds the target layers, calls :meth:`MethodConfig.create_layer` for each and
  marks only the method's parameters (and the head) trainable. No method walks the model itself.
* :class:`AdapterLayer` wraps one frozen ``base_layer``. Re-parameterisable methods implement
  :meth:`AdapterLayer.merged_weight` / :meth:`AdapterLayer.merged_bias`; the shared ``merge_and_unload`` writes those
  into the base layer and drops the wrapper.
* timm fuses q, k and v into one ``qkv`` linear. Targets ``attn.q``, ``attn.k`` and ``attn.v`` address its slices:
  each slice gets its own layer (over a :class:`LinearSlice` view) and :class:`FusedQKV` concatenates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: attribute of the model that holds a method's shared parameters (``create_shared``)
SHARED = "peft_shared"


class NotMergeableError(RuntimeError):
    """Raised when merging is asked of a method that adds computation that cannot be folded into the weights."""


@dataclass
class MethodConfig:
    """Hyperparameters of a method. Subclasses are dataclasses registered with ``@register_method``.

    Args:
        targets: layer-name patterns to adapt (glob such as ``blocks.*.attn.qkv``, a dotted suffix such as
            ``attn.proj``, the qkv slices ``attn.q``/``attn.k``/``attn.v``, or a regex written ``re:<regex>``).
        exclude: patterns removed from the matches (same syntax).
        train_head: also train the classification head.
    """

    name: ClassVar[str] = ""
    #: the adapted model can be merged into a plain timm model with zero inference overhead
    mergeable: ClassVar[bool] = True
    #: the adapted model computes exactly the base model's function before training
    identity_at_init: ClassVar[bool] = True
    #: glob patterns over parameter names of the *base* model to unfreeze as well (BitFit: ``*.bias``)
    base_trainable: ClassVar[tuple[str, ...]] = ()
    #: targets may be any module (a block, an Mlp), not only Linear/LayerNorm/Conv2d (adapters, prompts)
    wraps_any_module: ClassVar[bool] = False

    targets: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    train_head: bool = True

    def __post_init__(self) -> None:
        self.targets = _as_str_list(self.targets, "targets")
        self.exclude = _as_str_list(self.exclude, "exclude")

    def create_layer(self, name: str, base: nn.Module) -> nn.Module:
        """Return the wrapper that adapts ``base`` (found under ``name``). Methods with targets must override this."""
        raise NotImplementedError(f"method {self.name!r} has targets but does not implement create_layer()")

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module | None:
        """Return a module of parameters shared by all layers (attached as ``model.peft_shared``), or None.
        ``targets`` are the layer names the injector matched, in model order (to size the shared parameters)."""
        return None

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject this method into ``model`` in place, freeze everything else and return the model."""
        from peftlab.methods.inject import inject

        return inject(model, self)

    def describe(self) -> dict[str, Any]:
        """The config as a plain dict (for results.json and logs)."""
        from dataclasses import asdict

        return {"name": self.name, **asdict(self)}


def _as_str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    values = list(value or [])
    if not all(isinstance(v, str) for v in values):
        raise TypeError(f"method option {what!r} must be a list of layer-name patterns, got {value!r}")
    return values


def check_positive(value: Any, what: str, allow_zero: bool = False) -> None:
    """Raise a ValueError naming ``what`` unless ``value`` is a positive (or, with allow_zero, non-negative) number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"method option {what}={value!r} is invalid: expected a number {bound}")


def check_int(value: Any, what: str, minimum: int = 1) -> None:
    """Raise a ValueError naming ``what`` unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"method option {what}={value!r} is invalid: expected an integer >= {minimum}")


def check_positive_int(value: Any, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``value`` is an integer >= 1."""
    check_int(value, what, minimum=1)


def check_probability(value: Any, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``value`` is a dropout probability in [0, 1)."""
    check_positive(value, what, allow_zero=True)
    if value >= 1:
        raise ValueError(f"method option {what}={value!r} is invalid: expected a probability in [0, 1)")


def check_bool(value: Any, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``value`` is true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"method option {what}={value!r} is invalid: expected true or false")


def check_linear(name: str, base: nn.Module, method: str) -> None:
    """Raise a TypeError unless ``base`` is a Linear layer or a q/k/v slice of one."""
    if not isinstance(base, (nn.Linear, LinearSlice)):
        raise TypeError(
            f"method {method!r} adapts Linear layers (or the q/k/v slices of a fused qkv); "
            f"{name!r} is a {type(base).__name__}"
        )


def check_choice(value: Any, what: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming ``what`` and the allowed values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"method option {what}={value!r} is invalid: expected one of {', '.join(choices)}")


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
        if self.single_gemm:
            return F.linear(x, self.merged_weight(), self.merged_bias())
        return torch.cat([part(x) for part in self.parts.values()], dim=-1)


def _uses_merged_weight(part: nn.Module) -> bool:
    return isinstance(part, LinearSlice) or part.computes_with_merged_weight
