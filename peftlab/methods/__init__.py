"""PEFT methods: a registry of method configs, each of which injects its layers through one shared mechanism.

Adding a method touches two files: ``peftlab/methods/<name>.py`` (a ``@register_method`` config dataclass plus its
layer) and ``peftlab/conf/method/<name>.yaml``. Every module in this package is imported on first use of the
registry, so no list has to be edited.
"""

from __future__ import annotations

import importlib
import pkgutil

from peftlab.methods.base import MethodConfig
from peftlab.methods.layers import AdapterLayer, NotMergeableError

_REGISTRY: dict[str, type[MethodConfig]] = {}
_INFRASTRUCTURE = {"base", "layers", "inject", "state", "decay", "functional", "fused"}
_loaded = False


def register_method(name: str):
    """Class decorator that registers a :class:`MethodConfig` subclass under ``name`` (lowercase identifier)."""

    def decorator(cls: type[MethodConfig]) -> type[MethodConfig]:
        if not (name.isidentifier() and name == name.lower()):
            raise ValueError(f"method name {name!r} must be a lowercase Python identifier, e.g. 'rlrr'")
        if not (isinstance(cls, type) and issubclass(cls, MethodConfig)):
            raise TypeError(f"@register_method({name!r}) must decorate a MethodConfig subclass, got {cls!r}")
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _import_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_method(name: str) -> type[MethodConfig]:
    """Return the config class registered under ``name``; the error lists the registered names."""
    _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}")
    return _REGISTRY[name]


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _import_all()
    return sorted(_REGISTRY)


__all__ = ["AdapterLayer", "MethodConfig", "NotMergeableError", "get_method", "list_methods", "register_method"]
