"""peftlab: parameter-efficient fine-tuning of Vision Transformers, as composable Hydra experiments and as a library
(:mod:`peftlab.api`: ``get_peft_model``, ``print_trainable_parameters``, ``save_adapter``, ``load_adapter``,
``merge_and_unload``)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["get_peft_model", "load_adapter", "merge_and_unload", "print_trainable_parameters", "save_adapter"]


def __getattr__(name: str) -> Any:
    """The API is imported on first use, so that ``import peftlab.conf`` (Hydra's config lookup) stays light."""
    if name in __all__:
        from peftlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'peftlab' has no attribute {name!r}")
