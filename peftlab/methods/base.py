"""The contract every method follows: a config of plain hyperparameters that builds layers, nothing more.

* :class:`MethodConfig` holds only hyperparameters (validated in ``__post_init__``). ``apply(model)`` hands it to the
  shared injector (:func:`peftlab.methods.inject.inject`), which finds the target layers, asks
  :meth:`MethodConfig.create_shared` once for parameters shared by all layers, calls
  :meth:`MethodConfig.create_layer` for each target with that shared module, and marks only the method's parameters
  (and the head) trainable. No method walks the model itself, and the config keeps no state between the calls.
* The layers (:class:`~peftlab.methods.layers.AdapterLayer` and the fused-qkv views) live in
  :mod:`peftlab.methods.layers`; whether an adapted model merges is a property of its layers (``mergeable``).
* The ``check_*`` helpers validate options with one message shape: the option, its value and what was expected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from torch import nn

from peftlab.methods.inject import inject
from peftlab.methods.layers import LinearSlice


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

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module | None:
        """Return a module of parameters shared by all layers (attached as ``model.peft_shared``), or None.
        ``targets`` are the layer names the injector matched, in model order (to size the shared parameters)."""
        return None

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        """Return the wrapper that adapts ``base`` (found under ``name``); ``shared`` is what :meth:`create_shared`
        returned. Methods with targets must override this."""
        raise NotImplementedError(f"method {self.name!r} has targets but does not implement create_layer()")

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject this method into ``model`` in place, freeze everything else and return the model."""
        return inject(model, self)

    def describe(self) -> dict[str, Any]:
        """The config as a plain dict (for results.json and logs)."""
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
