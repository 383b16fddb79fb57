"""BitFit: Ben Zaken, Ravfogel and Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
Masked Language-models", ACL 2022 (arXiv 2106.10199).

Only the existing bias terms of the backbone train; no layer is added, so inference overhead is 0 and the model starts
at the pretrained function.

Choice: *every* bias trains, LayerNorm biases, the patch embedding and the final norm included. This is what the
"Bias" baseline of the vision tables counts: VPT's ``tinytl-bias`` transfer unfreezes every encoder parameter whose
name contains ``bias``. On ViT-B/16 that is 102,912 parameters: 768 (patch embedding) + 12 × 8,448 (norm1 768, qkv
2,304, proj 768, norm2 768, fc1 3,072, fc2 768) + 768 (final norm). With the papers' average heads this reproduces
0.14 M on VTAB-1k and 0.28 M on FGVC; excluding the LayerNorm biases would give 0.12 M / 0.26 M.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig


@register_method("bitfit")
@dataclass
class BitFitConfig(MethodConfig):
    """BitFit: train every bias of the backbone (and the head); inject nothing."""

    base_trainable = ("*.bias",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets or self.exclude:
            raise ValueError(
                f"method bitfit trains the existing biases and injects no layers; targets={self.targets!r} and "
                f"exclude={self.exclude!r} are invalid: expected both empty"
            )
