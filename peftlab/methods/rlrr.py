"""RLRR: Residual-based Low-Rank Rescaling (Dong et al., "Low-Rank Rescaled Vision Transformer Fine-Tuning: A Residual
Design Approach", CVPR 2024; arXiv 2403.19067), as in the official code (github.com/zstarN70/RLRR).

Every linear weight of MHA and FFN is rescaled around the frozen weight (Eq. 19-20)::

    W' = W ⊙ (1 + s_out s_inᵀ),    b' = b + f

with ``s_in ∈ R^in`` (official ``scale_col``, the paper's ``s_left``), ``s_out ∈ R^out`` (official ``scale_line``,
``s_right``) and a shift ``f ∈ R^out`` (``shift_bias``). It adapts q, k and v separately (slices of timm's fused qkv,
as the official code's three linears), the attention projection, fc1 and fc2 of every block. SSF scale/shift
(:class:`~peftlab.methods.ssf.ScaleShift`) follows norm1 and norm2 of every block, the patch-embedding conv and the
final norm, as in the official code.

Choices:

* Init exactly as the official code: ``s_in ~ U(±√(6/in))`` and ``s_out ~ U(±√6)`` (``kaiming_uniform_`` on the
  ``1×in`` and ``out×1`` tensors), ``f = 0``, SSF ``γ ~ N(1, 0.02)``, ``β ~ N(0, 0.02)``; so RLRR is *not* the
  pretrained function at init.
* Forward builds ``W'`` once per call and runs one GEMM (as the official code), in one fused autograd function
  (:class:`~peftlab.methods.fused.RescaledLinearFunction`) that does not keep ``W'``: backward rebuilds it for the
  input gradient, computes the weight-gradient GEMM ``G = gᵀx`` once and both scale gradients from ``G ⊙ W`` by two
  matrix-vector products. q, k and v run as one GEMM on the ``(3, D, D)`` view of timm's fused weight. The
  activation-side form ``x Wᵀ + s_out ⊙ ((x ⊙ s_in) Wᵀ)`` needs a second GEMM both forward and backward, so it is
  not offered.
* The patch-embedding SSF wraps the conv (it acts on patch tokens only, before the cls token and position embeddings
  are added, as in the official code) and folds into the conv on merge.
* The official "drop_path" (element-wise dropout on the residual branches, rate rising over depth) belongs to the
  backbone/trainer, not to this method.

Mergeable (zero inference overhead). Trainable parameters on ViT-B/16, head excluded: 288,768.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig
from peftlab.methods.functional import rlrr_weight
from peftlab.methods.fused import rescaled_linear
from peftlab.methods.layers import AdapterLayer, LinearSlice, base_bias
from peftlab.methods.ssf import ScaleShift

RESCALED_TARGETS = ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2")
SCALE_SHIFT_TARGETS = ("norm1", "norm2", "patch_embed.proj", "re:norm")


class RLRRLinear(AdapterLayer):
    """A frozen Linear (or qkv slice) with RLRR's residual rank-1 rescaling and a bias shift.

    Args:
        base_layer: the frozen ``nn.Linear`` or :class:`LinearSlice`.
    """

    #: the official ``get_parameters()`` exempts ``shift_bias`` (by its name) from weight decay
    no_decay = ("rlrr_shift",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.rlrr_scale_in = nn.Parameter(torch.empty(base_layer.in_features, **factory))
        self.rlrr_scale_out = nn.Parameter(torch.empty(base_layer.out_features, **factory))
        self.rlrr_shift = nn.Parameter(torch.empty(base_layer.out_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # official kaiming_uniform_ on scale_col (1×in, fan_in = in) and scale_line (out×1, fan_in = 1)
        bound_in = math.sqrt(6 / self.rlrr_scale_in.numel())
        nn.init.uniform_(self.rlrr_scale_in, -bound_in, bound_in)
        nn.init.uniform_(self.rlrr_scale_out, -math.sqrt(6), math.sqrt(6))
        nn.init.zeros_(self.rlrr_shift)

    def merged_weight(self) -> Tensor:
        return rlrr_weight(self.base_layer.weight, self.rlrr_scale_out, self.rlrr_scale_in)

    def merged_bias(self) -> Tensor:
        bias = base_bias(self.base_layer)
        return self.rlrr_shift if bias is None else bias + self.rlrr_shift

    def forward(self, x: Tensor) -> Tensor:
        weight = self.base_layer.weight
        return rescaled_linear(x, weight, self.rlrr_scale_out, self.rlrr_scale_in, self.merged_bias())

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[RLRRLinear | None], x: Tensor) -> Tensor | None:
        """q, k and v rescaled on the ``(3, D, D)`` view of the fused weight in one GEMM (all three adapted)."""
        if any(part is None for part in parts):
            return None
        scale_out = torch.cat([p.rlrr_scale_out for p in parts])
        scale_in = torch.stack([p.rlrr_scale_in for p in parts])
        shift = torch.cat([p.rlrr_shift for p in parts])
        bias = shift if fused.bias is None else fused.bias + shift
        return rescaled_linear(x, fused.weight, scale_out, scale_in, bias)


@register_method("rlrr")
@dataclass
class RLRRConfig(MethodConfig):
    """RLRR: residual rank-1 rescaling of every MHA/FFN linear plus SSF after the norms and the patch embedding.

    Targets that are Linear layers (or q/k/v slices) get :class:`RLRRLinear`; LayerNorm and Conv2d targets get SSF's
    :class:`ScaleShift`.
    """

    identity_at_init = False

    targets: list[str] = field(default_factory=lambda: [*RESCALED_TARGETS, *SCALE_SHIFT_TARGETS])

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        if isinstance(base, (nn.Linear, LinearSlice)):
            return RLRRLinear(base)
        return ScaleShift(base)
