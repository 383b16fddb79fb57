"""ARC: Dong et al., "Efficient Adaptation of Large Vision Transformer via Adapter Re-Composing", NeurIPS 2023
(arXiv 2310.06234); implemented from the official ``Model/ARC_ViT.py`` (mode "ARC").

Two linear adapters per block sit after the block's LayerNorms, before attention and before the MLP::

    x ← x + drop(x (U ⊙ s_ℓ)) Uᵀ + b_ℓ  =  x (I + U diag(s_ℓ) Uᵀ) + b_ℓ        (dropout inactive in eval)

with the down-projection ``U ∈ R^{D×D'}`` shared by all layers (one ``U_att`` and one ``U_mlp``), its transpose as
the up-projection (symmetric), and per layer and position a re-scaling ``s_ℓ ∈ R^{D'}`` and a bias ``b_ℓ ∈ R^D``.

Implementation: the LayerNorm output feeds only ``attn.qkv`` (resp. ``mlp.fc1``), so the adapter wraps those linears
as an input-side transform ``y = (x M + b_ℓ) Wᵀ + c``, ``M = I + U diag(s) Uᵀ``. Mergeable, inference overhead 0:
``M`` is symmetric, so ``W' = W M`` and ``c' = c + W b_ℓ``.

Parameters (ViT-B/16, D' = 50): 2·768·50 + 12·2·(50 + 768) = 96,432 (head excluded; RLRR-P supplement Table 4's
2·(D·D' + (D' + D)·L)); + 76,900 with a 100-class head = 173,332. With the mean VTAB-1k head (38,045): 0.134 M → 0.13 M
✓ (RLRR-P/HTA-P Table 1). With the mean FGVC head (180,407): 0.277 M, but 0.25 M is reported ✗; unexplained (perhaps
a different D' for FGVC), see docs/methods.md §4.

Choices:
    * Init as ``ARC_ViT.py`` at its latest commit: ``U`` Xavier-uniform, ``s_att`` zeros, ``s_mlp`` Xavier-uniform on
      a 1×D' matrix (U(±√(6/(1 + D')))), ``b`` zeros. So the MLP adapter is active from the start: **not identity at
      init**. (An earlier commit of that file zero-initialised ``s_mlp`` too.)
    * Dropout 0.1 on the D'-dimensional bottleneck, as the official training scripts.
    * One shared ``U`` per position, the parent module of the target (``attn``, ``mlp``). ``targets=[attn.qkv]`` is
      the "ARC_att" variant.
    * Beware the official VTAB script: ``vtab_ARC_train.py`` imports ``Model/ARC_new.py``, whose parameter names
      (``left_u_*``, ``*_scale*``) do not match the freezing filter of ``Utils/Frozen_weight.ViT_ARC_Frozen`` (names
      containing head, adapter or down_projection), so only the head would train; ``FGVC_ARC_train.py`` uses
      ``ARC_ViT.py``, whose names match. This implementation follows ``ARC_ViT.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_int, check_linear, check_probability
from peftlab.methods.layers import QKV_SLICES, AdapterLayer

#: positions whose re-scaling starts at zero (the adapter is the identity there at init)
ZERO_SCALE_POSITIONS = ("attn",)


@register_method("arc")
@dataclass
class ArcConfig(MethodConfig):
    """ARC: linear adapters before attention and MLP whose projections are shared across layers (re-composed).

    Args:
        bottleneck: width ``D'`` of the shared projections.
        dropout: dropout probability on the bottleneck.
    """

    identity_at_init: ClassVar[bool] = False

    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "mlp.fc1"])
    bottleneck: int = 50
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.bottleneck, "bottleneck")
        check_probability(self.dropout, "dropout")

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module:
        dims: dict[str, int] = {}
        for name in targets:
            if name.rpartition(".")[2] in QKV_SLICES:
                raise ValueError(f"method {self.name!r} adapts the input of whole linears (attn.qkv), not {name!r}")
            base = model.get_submodule(name)
            check_linear(name, base, self.name)
            dims.setdefault(position(name), base.in_features)
        return ArcProjections(dims, self.bottleneck)

    def create_layer(self, name: str, base: nn.Module, shared: ArcProjections) -> nn.Module:
        check_linear(name, base, self.name)
        pos = position(name)
        return ArcLayer(base, shared, pos, zero_scale=pos in ZERO_SCALE_POSITIONS, dropout=self.dropout)


def position(name: str) -> str:
    """The adapter position of a target: its parent module's name (``blocks.3.attn.qkv`` -> ``attn``)."""
    parts = name.split(".")
    return parts[-2] if len(parts) > 1 else parts[-1]


class ArcProjections(nn.Module):
    """The down-projections ``U`` (``D × D'``), one per position, shared by all layers."""

    def __init__(self, dims: dict[str, int], bottleneck: int) -> None:
        super().__init__()
        self.arc_u = nn.ParameterDict({pos: nn.Parameter(torch.empty(dim, bottleneck)) for pos, dim in dims.items()})
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for u in self.arc_u.values():
            nn.init.xavier_uniform_(u)


class ArcLayer(AdapterLayer):
    """A frozen Linear whose input first passes the re-composed adapter ``x (I + U diag(s) Uᵀ) + b``."""

    no_decay = ("arc_bias",)  # a bias, like every bias of the backbone

    def __init__(
        self, base_layer: nn.Module, shared: ArcProjections, pos: str, zero_scale: bool, dropout: float = 0.0
    ) -> None:
        super().__init__(base_layer)
        object.__setattr__(self, "_shared", shared)  # owned by model.peft_shared, not registered here
        self.pos = pos
        self.zero_scale = zero_scale
        u = shared.arc_u[pos]
        if u.shape[0] != base_layer.in_features:
            raise ValueError(
                f"ARC position {pos!r} has projections for {u.shape[0]} inputs but this layer has "
                f"{base_layer.in_features}; all layers at one position must have the same input width"
            )
        self.arc_scale = nn.Parameter(u.new_empty(u.shape[1]))
        self.arc_bias = nn.Parameter(u.new_empty(u.shape[0]))
        self.arc_dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.zero_scale:
            nn.init.zeros_(self.arc_scale)
        else:  # Xavier-uniform on the official 1×D' shape
            bound = math.sqrt(6.0 / (1 + self.arc_scale.numel()))
            nn.init.uniform_(self.arc_scale, -bound, bound)
        nn.init.zeros_(self.arc_bias)

    @property
    def u(self) -> Tensor:
        return self._shared.arc_u[self.pos]

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        return functional.arc_merged_weight(weight, self.u.to(weight.dtype), self.arc_scale.to(weight.dtype))

    def merged_bias(self) -> Tensor:
        weight = self.base_layer.weight
        return functional.arc_merged_bias(weight, self.base_layer.bias, self.arc_bias.to(weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(functional.arc_adapter(x, self.u, self.arc_scale, self.arc_bias, self.arc_dropout))

    def extra_repr(self) -> str:
        return f"position={self.pos}, bottleneck={self.arc_scale.numel()}"
