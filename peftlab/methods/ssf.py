"""SSF: Scaling & Shifting your Features (Lian, Zhou, Feng, Wang; NeurIPS 2022; arXiv 2210.08823).

A learnable per-channel scale ``γ`` and shift ``β`` follow an operation: ``y = γ ⊙ op(x) + β``. As a method it follows
every operation of the ViT, as in the official ``ssf_ada`` placement: the patch-embedding conv, the fused qkv, the
attention projection, fc1, fc2, both LayerNorms of every block and the final LayerNorm.
:class:`ScaleShift` is also the SSF part of RLRR.

Training cost: after a LayerNorm the scale/shift is folded into the norm's affine parameters (no extra pass); after a
Linear or the patch conv it runs as :class:`~peftlab.methods.fused.ScaleShiftFunction`, which saves its output (kept
by the next op anyway) and gets ``Σ g ⊙ x`` in backward from it as ``(Σ g ⊙ y − β Σ g) / γ``, so SSF keeps no
activation of its own.

Init as the official ``init_ssf_scale_shift``: ``γ ~ N(1, 0.02)``, ``β ~ N(0, 0.02)``, so SSF does *not* start exactly
at the pretrained function. The scale/shift folds into the preceding op (``γ ⊙ W`` per output channel,
``γ ⊙ b + β``; for a LayerNorm into its affine weight and bias): zero inference overhead after merging.

Trainable parameters on ViT-B/16, head excluded: 2 · (768 patch + 12 · (2304 + 768 + 3072 + 768 + 768 + 768) + 768
final norm) = 205,824.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peftlab.methods import fused, register_method
from peftlab.methods.base import MethodConfig
from peftlab.methods.functional import fold_scale_shift
from peftlab.methods.layers import AdapterLayer, base_bias, out_features

#: every op of a timm ViT that SSF follows; ``re:norm`` is the final norm only (``.norm`` would also match the
#: patch embedding's Identity norm)
SSF_TARGETS = ("patch_embed.proj", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "norm1", "norm2", "re:norm")


class ScaleShift(AdapterLayer):
    """``γ ⊙ base(x) + β`` per output channel of a Linear, a LayerNorm or a Conv2d (channel dim 1).

    Args:
        base_layer: the frozen layer whose output is scaled and shifted.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        channels = out_features(base_layer)
        weight = getattr(base_layer, "weight", None)
        factory = {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
        self.channel_dim = 1 if isinstance(base_layer, nn.Conv2d) else -1
        self.mergeable = weight is not None  # a LayerNorm without affine has nothing to fold into
        # after a LayerNorm the scale/shift act as the norm's affine parameters: no weight decay, like them (the
        # RLRR code exempts its post-norm SSF by name; its patch-embedding SSF is decayed)
        self.no_decay = ("ssf_scale", "ssf_shift") if isinstance(base_layer, nn.LayerNorm) else ()
        self.ssf_scale = nn.Parameter(torch.empty(channels, **factory))
        self.ssf_shift = nn.Parameter(torch.empty(channels, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.ssf_scale, mean=1.0, std=0.02)
        nn.init.normal_(self.ssf_shift, std=0.02)

    def _folded(self) -> tuple[Tensor, Tensor]:
        return fold_scale_shift(self.base_layer.weight, base_bias(self.base_layer), self.ssf_scale, self.ssf_shift)

    def merged_weight(self) -> Tensor:
        return self._folded()[0]

    def merged_bias(self) -> Tensor:
        return self._folded()[1]

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.base_layer, nn.LayerNorm) and self.mergeable:
            return super().forward(x)  # folded into the affine: no extra pass, no extra activation
        return fused.scale_shift(self.base_layer(x), self.ssf_scale, self.ssf_shift, dim=self.channel_dim)


@register_method("ssf")
@dataclass
class SSFConfig(MethodConfig):
    """SSF: a per-channel scale and shift after every op of the ViT (see the module docstring)."""

    identity_at_init = False

    targets: list[str] = field(default_factory=lambda: list(SSF_TARGETS))

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        return ScaleShift(base)
