"""OFT: Qiu et al., "Controlling Text-to-Image Diffusion by Orthogonal Finetuning", NeurIPS 2023 (arXiv 2306.07280).

The pretrained weight is multiplied by a trainable orthogonal matrix, which keeps the angles between neurons
(hyperspherical energy) unchanged. In the paper's notation, with ``W⁰ ∈ R^{d×n}`` mapping d inputs to n outputs::

    z = (R W⁰)ᵀ x,    R = diag(R₁, …, R_r),    R_i = (I + Q_i)(I − Q_i)⁻¹,  Q_i = −Q_iᵀ   (Cayley, §3)

``R`` rotates the **input** dimension. For PyTorch's ``W ∈ R^{out×in}`` this is ``W' = W Rᵀ`` (equivalently the input
is rotated, ``y = (x R) Wᵀ + b``), the same dimension that huggingface peft rotates. Each ``b × b`` block has
``b(b−1)/2`` free parameters (the strict upper triangle of ``Q_i``); ``Q = 0`` gives ``R = I``, so training starts
exactly at the pretrained model. Mergeable: inference overhead 0.

Choices:
    * Default: q and v slices of the fused qkv, ``block_size = 32`` (24 blocks per 768-wide input), which gives
      12·2·24·496 = 285,696 parameters on ViT-B/16, a budget close to LoRA r = 8 (294,912). No published OFT count
      for ViT-B/16 on VTAB-1k/FGVC was available to compare against; the test asserts this derivation.
    * Size the blocks with ``block_size`` or with ``r`` (number of blocks), not both; either must divide the input
      width of every target.
    * The bias is kept frozen and unrotated (R acts on the weight only).
    * The Cayley transform is computed in float32 with ``torch.linalg.solve_ex`` and autocast disabled.
    * Training applies ``R`` to the input, ``y = (x R) Wᵀ + b`` (O(N·D·b) per layer): the gradient of ``R`` needs
      only the input-gradient GEMM that a frozen layer computes anyway, while the weight form ``W Rᵀ`` would need the
      weight-gradient GEMM ``gᵀx`` as well. Merging builds ``W Rᵀ`` once.
    * Not implemented: COFT (the constrained variant), multiplicative block dropout, BOFT (butterfly factorisation),
      the Cayley–Neumann approximation of OFTv2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_int, check_linear
from peftlab.methods.layers import AdapterLayer


@register_method("oft")
@dataclass
class OftConfig(MethodConfig):
    """OFT: a trainable block-diagonal orthogonal rotation of the input side of each target weight.

    Args:
        block_size: size ``b`` of each orthogonal block (set ``block_size`` or ``r``, not both).
        r: number of blocks; the block size is then ``in_features / r``.
    """

    targets: list[str] = field(default_factory=lambda: ["attn.q", "attn.v"])
    block_size: int | None = 32
    r: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.block_size is None) == (self.r is None):
            raise ValueError(
                f"method options block_size={self.block_size!r} and r={self.r!r} are invalid: set exactly one "
                "(e.g. method.r=4 method.block_size=null)"
            )
        if self.block_size is not None:
            check_int(self.block_size, "block_size")
        else:
            check_int(self.r, "r")

    def block_size_for(self, name: str, in_features: int) -> int:
        """The block size for a layer with ``in_features`` inputs; errors name the layer and the option."""
        if self.block_size is not None:
            if in_features % self.block_size:
                raise ValueError(
                    f"method option block_size={self.block_size} must divide in_features={in_features} of {name!r}"
                )
            return self.block_size
        if in_features % self.r:
            raise ValueError(f"method option r={self.r} must divide in_features={in_features} of {name!r}")
        return in_features // self.r

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        check_linear(name, base, self.name)
        return OftLayer(base, self.block_size_for(name, base.in_features))


def rotations(upper: Tensor, size: int) -> Tensor:
    """OFT's orthogonal blocks from the strict upper triangles ``upper`` ``(n, b(b−1)/2)``: Cayley of ``U − Uᵀ``,
    shape ``(n, b, b)``, in ``upper``'s dtype."""
    return functional.cayley(functional.skew_symmetric(upper, size)).to(upper.dtype)


class OftLayer(AdapterLayer):
    """``y = x (W Rᵀ)ᵀ + b`` with ``R`` block-diagonal orthogonal, built by Cayley from ``oft_skew``."""

    def __init__(self, base_layer: nn.Module, block_size: int) -> None:
        super().__init__(base_layer)
        self.block_size = block_size
        num_blocks = base_layer.in_features // block_size
        free = block_size * (block_size - 1) // 2
        self.oft_skew = nn.Parameter(base_layer.weight.new_empty(num_blocks, free))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.zeros_(self.oft_skew)

    def rotation(self) -> Tensor:
        """The orthogonal blocks ``R_i``, shape ``(num_blocks, b, b)``, in the dtype of ``oft_skew``."""
        return rotations(self.oft_skew, self.block_size)

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        return functional.rotate_input_blocks(weight, self.rotation().to(weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """``(x R) Wᵀ + b``: the rotation acts on the input, so backward needs only the input-gradient GEMM."""
        rotated = functional.rotate_input(x, self.rotation())
        return F.linear(rotated, self.base_layer.weight, self.base_layer.bias)

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[OftLayer | None], x: Tensor) -> Tensor | None:
        """q, k, v of timm's fused qkv as one batched GEMM over the three blocks, each on its own input: ``x R`` for an
        adapted block (every rotation from one Cayley solve, applied in one batched GEMM), ``x`` for an unadapted
        one, stacked in the pass that lays the rotated inputs out for the GEMM anyway. The base GEMM and its input
        gradient stay one kernel each, as in the frozen layer. None (the generic path) when the adapted blocks
        differ in block size."""
        adapted = [part for part in parts if part is not None]
        size = adapted[0].block_size
        if any(part.block_size != size for part in adapted):
            return None
        skews = torch.stack([part.oft_skew for part in adapted])  # (P, n, free)
        blocks = rotations(skews.flatten(0, 1), size).unflatten(0, (len(adapted), -1))  # (P, n, b, b)
        rotated = functional.rotate_input_per_block(x, blocks)  # (P, ..., in)
        unrotated, rotated = x.to(rotated.dtype), iter(rotated)
        inputs = torch.stack([unrotated if part is None else next(rotated) for part in parts])  # (3, ..., in)
        width = fused.weight.shape[0] // len(parts)
        weights = fused.weight.unflatten(0, (len(parts), width)).transpose(1, 2)  # (3, in, width)
        rows = inputs.flatten(1, -2)
        if fused.bias is None:
            products = torch.bmm(rows, weights.to(rows.dtype))  # (3, N, width)
        else:
            biases = fused.bias.view(len(parts), 1, width).to(rows.dtype)
            products = torch.baddbmm(biases, rows, weights.to(rows.dtype))
        return torch.cat(products.unbind(), dim=-1).view(*x.shape[:-1], fused.weight.shape[0])

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, num_blocks={self.oft_skew.shape[0]}"
