"""DoRA: Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML 2024 (arXiv 2402.09353).

The adapted weight is decomposed into a trainable magnitude ``m`` and a direction updated by LoRA (Eq. 5)::

    W' = m · (W₀ + ΔW) / ‖W₀ + ΔW‖_c,    ΔW = (α/r)·B A

``‖·‖_c`` is the norm of each output unit's weight vector. In PyTorch's ``W ∈ R^{out×in}`` that is the norm over
the input dimension of each row (the paper's ``W ∈ R^{d×k}`` normalises each of its ``k`` columns, ``m ∈ R^{1×k}``;
huggingface peft likewise takes ``dim=1`` of the PyTorch weight). ``m`` starts at ``‖W₀‖_c`` and ``B`` at 0,
so the model starts exactly at the pretrained function. Mergeable: inference overhead 0.

Choices:
    * Same defaults as :mod:`peftlab.methods.lora` (q and v slices, r = 8, α = r, no dropout).
    * ``detach_norm`` (default True) treats ``‖W₀ + ΔW‖_c`` as a constant in backprop, as the paper recommends to save
      memory (§4.3) and as huggingface peft does; the forward value is unchanged.
    * The forward runs on activations, ``(m / ‖W₀ + ΔW‖_c) ⊙ (x W₀ᵀ + (α/r)·dropout(x) Aᵀ Bᵀ) + b``: the bias is not
      rescaled and dropout touches only the LoRA branch. ``ΔW`` is still built once per step for the norm. On timm's
      fused qkv, q, k and v share LoRA's one base GEMM and one low-rank branch, each adapted block rescaled after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import check_bool, check_linear
from peftlab.methods.fused import qkv_low_rank
from peftlab.methods.lora import LoraConfig, LoraLayer


@register_method("dora")
@dataclass
class DoraConfig(LoraConfig):
    """DoRA: LoRA on the direction of each target weight plus a trainable per-output magnitude.

    Args:
        rank: rank ``r`` of the LoRA update of the direction.
        alpha: ``α``; the update is scaled by ``α / r``. None means ``α = r`` (scale 1).
        dropout: dropout probability on the input of the LoRA branch.
        detach_norm: do not backpropagate through the column norm ``‖W₀ + ΔW‖_c`` (DoRA §4.3).
    """

    detach_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(self.detach_norm, "detach_norm")

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        check_linear(name, base, self.name)
        return DoraLayer(base, self.rank, self.scale, self.dropout, self.detach_norm)


class DoraLayer(LoraLayer):
    """LoRA layer whose output rows are rescaled to the trainable magnitude ``dora_magnitude``."""

    def __init__(
        self, base_layer: nn.Module, rank: int, scale: float, dropout: float = 0.0, detach_norm: bool = True
    ) -> None:
        super().__init__(base_layer, rank, scale, dropout)
        self.detach_norm = detach_norm
        self.dora_magnitude = nn.Parameter(base_layer.weight.new_empty(base_layer.out_features))
        self.reset_magnitude()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "dora_magnitude"):  # absent while LoraLayer.__init__ runs
            self.reset_magnitude()

    @torch.no_grad()
    def reset_magnitude(self) -> None:
        """``m = ‖W₀‖_c``, so that ``W' = W₀`` while ``B = 0``."""
        self.dora_magnitude.copy_(functional.dora_norm(self.base_layer.weight))

    def low_rank_factors(self) -> None:
        """DoRA rescales the whole output, so it has no plain low-rank form (:meth:`qkv_forward` rescales after it)."""
        return None

    def magnitude_scale(self) -> Tensor:
        weight = self.base_layer.weight
        delta = self.delta_weight().to(weight.dtype)
        return functional.dora_scale(weight, delta, self.dora_magnitude, self.detach_norm)

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        return functional.dora_weight(weight, self.delta_weight().to(weight.dtype), self.dora_magnitude)

    def forward(self, x: Tensor) -> Tensor:
        base = F.linear(x, self.base_layer.weight)
        update = functional.lora(self.lora_dropout(x), self.lora_a, self.lora_b, self.scale)
        out = self.magnitude_scale() * (base + update)
        bias = self.base_layer.bias
        return out if bias is None else out + bias

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[DoraLayer | None], x: Tensor) -> Tensor | None:
        """q, k and v of timm's fused qkv as LoRA's one base GEMM plus one low-rank branch, then each adapted block
        rescaled by its ``m / ‖W₀ + ΔW‖_c`` and the bias added (Eq. 5 on activations, as :meth:`forward`); None (the
        per-part path) while dropout acts on the branch input. The ``ΔW`` of every block comes from one GEMM of the
        branch's own stacked factors (``blockdiag(B_i) · [A_i]``), its norms from one pass."""
        factors = [None if part is None else LoraLayer.low_rank_factors(part) for part in parts]
        if any(part is not None and f is None for part, f in zip(parts, factors, strict=True)):
            return None
        out = qkv_low_rank(x, fused.weight, None, factors)
        width = fused.out_features // len(parts)
        scales = qkv_magnitude_scales(fused.weight, parts, factors).to(out.dtype)
        out = (out.unflatten(-1, (len(parts), width)) * scales).flatten(-2)
        return out if fused.bias is None else out + fused.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, detach_norm={self.detach_norm}"


def qkv_magnitude_scales(weight: Tensor, parts: list[DoraLayer | None], factors: list) -> Tensor:
    """``m / ‖W₀ + ΔW‖_c`` of each q, k, v block of the fused ``weight``, shape ``(3, width)``, 1 for an unadapted
    block. ``ΔW = blockdiag(B_q, B_k, B_v) · [A_q; A_k; A_v]`` over the adapted blocks is one GEMM of the very
    factors the low-rank branch stacks (:func:`~peftlab.methods.fused.qkv_low_rank`), so a compiled step shares them."""
    width = weight.shape[0] // len(parts)
    downs = torch.cat([f[0] for f in factors if f is not None])
    ups = torch.block_diag(*(weight.new_zeros(width, 0) if f is None else f[1] for f in factors))
    delta = (ups @ downs).to(weight.dtype)
    norms = functional.dora_norm(weight + delta).unflatten(0, (len(parts), width))
    ones = norms.new_ones(width)
    return torch.stack(
        [
            ones if part is None else part.dora_magnitude / (norm.detach() if part.detach_norm else norm)
            for part, norm in zip(parts, norms, strict=True)
        ]
    )
