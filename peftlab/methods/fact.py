"""FacT: Jie & Deng, "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer", AAAI 2023
(arXiv 2212.03145).

All weight increments of the ViT are one tensor ``ΔW ∈ R^{12L×d×d}`` (Eq. 4): per layer the ``d×d`` matrices
``W_q, W_k, W_v, W_o`` and the four ``d×d`` slices of each FFN weight (Eq. 3: fc1 split along its outputs, fc2 along
its inputs). The tensor is factorised with factors shared by all layers, ``V`` zero-initialised so ``ΔW = 0``:

    FacT-TT (Eq. 8-9):   ΔW = s·Σ ×₂ U ×₃ V,          U, V ∈ R^{d×r},  Σ ∈ R^{12L×r×r}      2dr + 12Lr²
    FacT-TK (Eq. 10-11): ΔW = s·C ×₁ P ×₂ U ×₃ V,     P ∈ R^{12L×r},   C ∈ R^{r×r×r}        2dr + 12Lr + r³

i.e. slice ``i`` (in the paper's ``x W`` layout) is ``ΔW_i = s·U Σ_i Vᵀ`` with ``Σ_i = C ×₁ P_i`` for TK. Mergeable
(inference overhead 0); training computes ``s·((x U) Σ_i) Vᵀ`` on activations, never the dense ``ΔW``: all slices of a
weight (and q, k, v of the fused qkv together) as one down GEMM with ``(U Σ_i)ᵀ`` blocks plus one ``addmm`` with the
shared ``V`` (:func:`~peftlab.methods.fused.shared_up_linear`).

Parameter counts on ViT-B/16 (d = 768, L = 12, head excluded), FacT Table 1:
    * FacT-TT, r = 4: 8,448 → 0.008 M ✓.  r = 8: 21,504.  r = 16: 61,440.
    * FacT-TK, r = 8: 13,952 → 0.014 M ✓.  r = 32: 86,528.
    * FacT-TK≤32 (rank per task): the mean over the ranks in the official ``configs/tk/*.yaml`` is 68,985 → 0.069 M ✓
      (the 0.07 M of HTA-P Table 1).
    * FacT-TT≤16 (0.037 M) is not reproduced: the released ``configs/tt/*.yaml`` give 39,734 (0.040 M); the paper
      searched r ∈ {1, 2, 4, 8, 16}, the released configs hold only 4, 8 and 16.

Choices:
    * Slices are indexed in target order (by default q, k, v, o, fc1's four, fc2's four per block: the paper's
      Eq. 4 order), so ``Σ`` / ``P`` rows follow the paper's tensor; custom targets get as many rows as they have
      ``d×d`` slices.
    * Init as the official code: ``U`` ~ U(±1/√d) (nn.Linear default), ``V`` = 0, TT ``Σ_i`` ~ U(±1/√r) (the code's
      fc2 cores use ±1/√(4r)), TK ``C`` and ``P`` Xavier-uniform.
    * The official code builds fc1/fc2 cores by reshaping ``C ×₁ P`` in an order that mixes slices; we use
      ``Σ_i = C ×₁ P_i`` for every slice exactly as Eq. 11 writes it.
    * ``dropout`` 0.1 on the ``r``-dimensional core output, as in the official code (the paper does not mention it).
    * Defaults: FacT-TT r = 8, s = 1; FacT-TK r = 32, s = 10 (the most frequent values of the released per-task
      configs; the paper sweeps s ∈ {0.01, 0.1, 1, 10, 100} per task, pass the task's values as config values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_int, check_linear, check_positive, check_probability
from peftlab.methods.fused import shared_up_linear
from peftlab.methods.layers import QKV_SLICES, AdapterLayer


@dataclass
class FactConfig(MethodConfig):
    """FacT: weight increments of all layers as one tensor factorised with factors shared across layers.

    Args:
        rank: rank ``r`` of every factor.
        scale: the fixed scale ``s``.
        dropout: dropout probability on the core output.
    """

    #: tensor format: ``tt`` (Tensor-Train) or ``tk`` (Tucker)
    tensor_format: ClassVar[str] = "tt"

    targets: list[str] = field(
        default_factory=lambda: ["attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2"]
    )
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.rank, "rank")
        check_positive(self.scale, "scale")
        check_probability(self.dropout, "dropout")

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module:
        dim = getattr(model, "embed_dim", None)
        if not isinstance(dim, int):
            raise TypeError(f"method {self.name!r} needs a ViT with an integer embed_dim; got {type(model).__name__}")
        first_slice: dict[str, int] = {}  # target name -> index of its first d×d slice
        count = 0
        for name in targets:
            first_slice[name] = count
            count += num_slices(name, weight_shape(model, name, self.name), dim)
        return FactFactors(self.tensor_format, dim, self.rank, count, first_slice)

    def create_layer(self, name: str, base: nn.Module, shared: FactFactors) -> nn.Module:
        check_linear(name, base, self.name)
        return FactLayer(base, shared, shared.first_slice[name], self.scale, self.dropout)


@register_method("fact_tt")
@dataclass
class FactTTConfig(FactConfig):
    """FacT-TT: ``ΔW_i = s·U Σ_i Vᵀ`` with ``U, V`` shared by all layers and an ``r×r`` core per ``d×d`` slice."""

    tensor_format: ClassVar[str] = "tt"


@register_method("fact_tk")
@dataclass
class FactTKConfig(FactConfig):
    """FacT-TK: ``ΔW_i = s·U (C ×₁ P_i) Vᵀ`` with ``U, V, C`` shared by all layers and an ``r``-vector per slice."""

    tensor_format: ClassVar[str] = "tk"

    rank: int = 32
    scale: float = 10.0


def weight_shape(model: nn.Module, name: str, method: str) -> tuple[int, int]:
    """``(out, in)`` of target ``name``: a Linear, or a q/k/v slice of a fused qkv."""
    parent, _, child = name.rpartition(".")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        if child not in QKV_SLICES:
            raise
        qkv = model.get_submodule(f"{parent}.qkv")
        return qkv.out_features // len(QKV_SLICES), qkv.in_features
    check_linear(name, module, method)
    return module.out_features, module.in_features


def num_slices(name: str, shape: tuple[int, int], dim: int) -> int:
    """Number of ``dim×dim`` slices of a weight of ``shape`` (FacT Eq. 3-4)."""
    out_dim, in_dim = shape
    if out_dim % dim or in_dim % dim:
        raise ValueError(
            f"FacT tensorises weights into {dim}×{dim} slices (d = embed_dim); {name!r} is {out_dim}×{in_dim}"
        )
    return (out_dim // dim) * (in_dim // dim)


class FactFactors(nn.Module):
    """The factors shared by all layers: ``U, V`` and the TT cores ``Σ`` or the Tucker core ``C`` and factor ``P``."""

    def __init__(self, tensor_format: str, dim: int, rank: int, num_slices: int, first_slice: dict[str, int]) -> None:
        super().__init__()
        self.tensor_format = tensor_format
        self.first_slice = dict(first_slice)  # target name -> index of its first d×d slice
        self.fact_u = nn.Parameter(torch.empty(dim, rank))
        self.fact_v = nn.Parameter(torch.empty(dim, rank))
        if tensor_format == "tt":
            self.fact_sigma = nn.Parameter(torch.empty(num_slices, rank, rank))
        else:
            self.fact_core = nn.Parameter(torch.empty(rank, rank, rank))
            self.fact_p = nn.Parameter(torch.empty(num_slices, rank))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        dim, rank = self.fact_u.shape
        nn.init.uniform_(self.fact_u, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.zeros_(self.fact_v)
        if self.tensor_format == "tt":
            nn.init.uniform_(self.fact_sigma, -1 / math.sqrt(rank), 1 / math.sqrt(rank))
        else:
            nn.init.xavier_uniform_(self.fact_core)
            nn.init.xavier_uniform_(self.fact_p)

    def cores(self, start: int, count: int) -> Tensor:
        """The ``(count, r, r)`` cores ``Σ_i`` of slices ``start … start + count - 1``."""
        if self.tensor_format == "tt":
            return self.fact_sigma[start : start + count]
        return functional.fact_tk_cores(self.fact_core, self.fact_p[start : start + count])


class FactLayer(AdapterLayer):
    """A frozen Linear (or q/k/v slice) plus its slices of the shared FacT increment, ``W + ΔW``."""

    def __init__(self, base_layer: nn.Module, factors: FactFactors, start: int, scale: float, dropout: float) -> None:
        super().__init__(base_layer)
        object.__setattr__(self, "_factors", factors)  # owned by model.peft_shared, not registered here
        dim = factors.fact_u.shape[0]
        self.out_blocks = base_layer.out_features // dim
        self.in_blocks = base_layer.in_features // dim
        self.start = start
        self.scale = scale
        self.fact_dropout = nn.Dropout(dropout) if dropout > 0 else None

    def _cores(self) -> Tensor:
        return self._factors.cores(self.start, self.out_blocks * self.in_blocks)

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        f = self._factors
        delta = functional.fact_delta_weight(
            f.fact_u, f.fact_v, self._cores(), self.scale, self.out_blocks, self.in_blocks
        )
        return weight + delta.to(weight.dtype)

    @property
    def dropout_p(self) -> float:
        return self.fact_dropout.p if self.fact_dropout is not None else 0.0

    def _up(self) -> Tensor:
        return self._factors.fact_v * self.scale

    def forward(self, x: Tensor) -> Tensor:
        down = functional.fact_down(self._factors.fact_u, self._cores(), self.out_blocks, self.in_blocks)
        return shared_up_linear(x, self.base_layer.weight, self.base_layer.bias, down, self._up(), self.fact_dropout)

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[FactLayer | None], x: Tensor) -> Tensor | None:
        """q, k and v of timm's fused qkv in one base GEMM and one down GEMM (an unadapted part gets a zero core), when
        the adapted parts share their factors, scale and dropout; None otherwise."""
        adapted = [p for p in parts if p is not None]
        first = adapted[0]
        if any((p._factors, p.scale, p.dropout_p) != (first._factors, first.scale, first.dropout_p) for p in adapted):
            return None
        rank = first._factors.fact_u.shape[1]
        zero = first._factors.fact_u.new_zeros(1, rank, rank)
        cores = torch.cat([zero if p is None else p._cores() for p in parts])
        down = functional.fact_down(first._factors.fact_u, cores, len(parts), 1)
        return shared_up_linear(x, fused.weight, fused.bias, down, first._up(), first.fact_dropout)

    def extra_repr(self) -> str:
        last = self.start + self.out_blocks * self.in_blocks - 1
        return f"format={self._factors.tensor_format}, slices={self.start}..{last}, scale={self.scale:g}"
