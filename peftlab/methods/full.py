"""Full fine-tuning and linear probing: the two reference points every PEFT table starts from."""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig


@register_method("full")
@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning: every backbone parameter trains (no layers injected)."""

    base_trainable = ("*",)


@register_method("linear")
@dataclass
class LinearConfig(MethodConfig):
    """Linear probing: only the classification head trains."""
