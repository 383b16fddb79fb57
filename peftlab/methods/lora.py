"""LoRA: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv 2106.09685).

A frozen weight ``W₀`` gets a trainable low-rank update ``ΔW = (α/r)·B A`` (Eq. 3, scaling from §4.1) with
``A ∈ R^{r×in}`` kaiming-uniform and ``B ∈ R^{out×r}`` zero, so training starts exactly at the pretrained model.
Training computes the update on activations, ``x Aᵀ Bᵀ·α/r``, never the dense ``ΔW``; merging folds ``ΔW`` into ``W₀``
(inference overhead 0).

Choices:
    * Default targets are the q and v slices of timm's fused ``qkv`` with independent ``A``/``B`` each, as in the
      paper's main experiments (``W_q`` and ``W_v``) and the vision baselines (0.29 M on VTAB-1k, ViT-B/16, r = 8).
      Any of ``attn.q``, ``attn.k``, ``attn.v``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2`` can be targeted.
    * ``alpha`` defaults to ``rank`` (scale 1), so changing the rank does not silently change the scale.
    * ``A`` uses ``kaiming_uniform_(a=√5)`` (the nn.Linear default, also used by the reference implementation).
    * ``dropout`` applies to the input of the LoRA branch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_int, check_linear, check_positive, check_probability
from peftlab.methods.fused import low_rank_linear, qkv_low_rank_forward
from peftlab.methods.layers import AdapterLayer


@register_method("lora")
@dataclass
class LoraConfig(MethodConfig):
    """LoRA: a trainable low-rank update ``(α/r)·B A`` added to each target weight.

    Args:
        rank: rank ``r`` of the update.
        alpha: ``α``; the update is scaled by ``α / r``. None means ``α = r`` (scale 1).
        dropout: dropout probability on the input of the LoRA branch.
    """

    targets: list[str] = field(default_factory=lambda: ["attn.q", "attn.v"])
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.rank, "rank")
        if self.alpha is not None:
            check_positive(self.alpha, "alpha")
        check_probability(self.dropout, "dropout")

    @property
    def scale(self) -> float:
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        check_linear(name, base, self.name)
        return LoraLayer(base, self.rank, self.scale, self.dropout)


class LoraLayer(AdapterLayer):
    """``y = x W₀ᵀ + b + (α/r)·dropout(x) Aᵀ Bᵀ`` over a frozen Linear (or q/k/v slice)."""

    def __init__(self, base_layer: nn.Module, rank: int, scale: float, dropout: float = 0.0) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        self.scale = scale
        self.lora_a = nn.Parameter(weight.new_empty(rank, base_layer.in_features))
        self.lora_b = nn.Parameter(weight.new_empty(base_layer.out_features, rank))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def delta_weight(self) -> Tensor:
        return functional.lora_delta_weight(self.lora_a, self.lora_b, self.scale)

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        return weight + self.delta_weight().to(weight.dtype)

    def low_rank_factors(self) -> tuple[Tensor, Tensor, None] | None:
        """``(A, (α/r)·B, None)`` for the one-GEMM paths, or None while dropout acts on the branch input."""
        if self.training and isinstance(self.lora_dropout, nn.Dropout):
            return None
        return self.lora_a, self.lora_b if self.scale == 1 else self.lora_b * self.scale, None

    def forward(self, x: Tensor) -> Tensor:
        factors = self.low_rank_factors()
        if factors is not None:
            return low_rank_linear(x, self.base_layer.weight, self.base_layer.bias, *factors[:2])
        return self.base_layer(x) + functional.lora(self.lora_dropout(x), self.lora_a, self.lora_b, self.scale)

    qkv_forward = staticmethod(qkv_low_rank_forward)

    def extra_repr(self) -> str:
        return f"rank={self.lora_a.shape[0]}, scale={self.scale:g}"
