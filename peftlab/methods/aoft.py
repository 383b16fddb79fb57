"""AOFT: Approximately Orthogonal Fine-Tuning (Yang et al., "Efficient Adaptation of Pre-trained Vision Transformer
underpinned by Approximately Orthogonal Fine-Tuning Strategy", ICCV 2025; arXiv 2507.13260).

One learnable vector ``q = (q_0, u) ∈ R^D`` generates ``rank`` approximately orthogonal vectors: the first ``rank``
columns ``AO(q)`` of ``Q = [[q_0, -uᵀ], [u, I - u uᵀ / (1 + q_0)]]`` (orthogonal when ``‖q‖ = 1``; the norm is not
enforced, hence "approximately"). They replace the down/up projections of LoRA or of an adapter:

* ``aoft`` (LoRA+AOFT), in the paper's layout ``X W``: ``X (W + AO(q_down) diag(λ) AO(q_up)ᵀ)``; mergeable, zero
  inference overhead. ``D_in + D_out`` parameters per adapted matrix (plus the scale ``λ``), whatever the rank.
* ``aoft_adapter`` (Adapter+AOFT): ``y = mlp(x) + (act(x AO(q_down)) ⊙ λ) AO(q_up)ᵀ``, one adapter per block on the FFN.

Only the abstract of the paper could be checked; the formulation follows secondary summaries. Choices:

* Generator: column 0 of ``Q`` is ``q`` itself (reconstruction; the summaries give only the first row and the lower
  right block). It costs O(D·rank); ``Q`` is never built. ``|1 + q_0|`` is clamped to at least 1e-4 (sign kept).
  The generator runs in float32 even under autocast (a division by ``1 + q_0``).
* Matrices: LoRA+AOFT on q and v (reproduces 0.22 M FGVC with the average head); Adapter+AOFT with one adapter per
  block on the FFN (reproduces 0.06 M VTAB / 0.20 M FGVC); both unverified against the paper's text.
* ``rank`` (the bottleneck ``d``) defaults to 8, the usual LoRA/Adapter bottleneck on these benchmarks; the paper's
  value is unknown. It does not change the parameter count except through ``λ``.
* Scale and identity at init: ``AO(q)`` can never be zero, so ``ΔW = 0`` at start needs a zero factor. ``λ`` is
  always present and zero-initialised: a per-rank ``λ ∈ R^rank`` with ``use_scale: true`` (AOFT*), otherwise one
  scalar gate per module (+1 parameter). Either rounds to the same reported millions.
* ``q`` starts as the unit vector ``normalize(e_0 + ε)``, ``ε_{i>=1} ~ N(0, 1/D)``: ``Q`` is exactly orthogonal at start
  and ``q_0 ≈ 0.7`` keeps ``1 + q_0`` far from 0.
* Adapter+AOFT keeps the adapter's non-linearity (GELU by default), so it is not mergeable; it is parallel to the FFN
  by default (``position: sequential`` applies it to the FFN output instead, the "after the FFN" reading) and has no
  biases (the reported counts leave no room for them).

Trainable parameters on ViT-B/16, head excluded: ``aoft`` 36,864 + 24 (gates); ``aoft_adapter`` 18,432 + 12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig, check_bool, check_choice, check_int, check_linear
from peftlab.methods.functional import ao_basis, at_least_float32
from peftlab.methods.fused import low_rank_linear, qkv_low_rank
from peftlab.methods.layers import AdapterLayer

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}
POSITIONS = ("parallel", "sequential")


class _AOFTLayer(AdapterLayer):
    """Shared parameters of an AOFT module: the generator vectors ``q_down``, ``q_up`` and the scale ``λ``.

    Args:
        base_layer: the frozen layer.
        dim_in: input dimension ``D_in`` (length of ``q_down``).
        dim_out: output dimension ``D_out`` (length of ``q_up``).
        rank: number of generated vectors ``d``.
        use_scale: a per-rank scale ``λ ∈ R^rank`` (AOFT*) instead of one scalar gate.
        factory: ``device``/``dtype`` of the new parameters.
    """

    def __init__(self, base_layer: nn.Module, dim_in: int, dim_out: int, rank: int, use_scale: bool, **factory):
        super().__init__(base_layer)
        if rank > min(dim_in, dim_out):
            width = min(dim_in, dim_out)
            raise ValueError(f"method option rank={rank} is invalid: expected at most {width}, the width of the layer")
        self.rank = rank
        self.aoft_q_down = nn.Parameter(torch.empty(dim_in, **factory))
        self.aoft_q_up = nn.Parameter(torch.empty(dim_out, **factory))
        self.aoft_scale = nn.Parameter(torch.empty(rank if use_scale else 1, **factory))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for q in (self.aoft_q_down, self.aoft_q_up):
            nn.init.normal_(q, std=1 / math.sqrt(q.numel()))
            q[0] = 1.0
            q.div_(q.norm())
        nn.init.zeros_(self.aoft_scale)

    def projections(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``AO(q_down)``, ``λ`` and ``AO(q_up)``, generated in float32 and returned in ``dtype``."""
        with torch.autocast(device_type=self.aoft_q_down.device.type, enabled=False):
            down = ao_basis(at_least_float32(self.aoft_q_down), self.rank)
            up = ao_basis(at_least_float32(self.aoft_q_up), self.rank)
        return down.to(dtype), self.aoft_scale.to(dtype), up.to(dtype)


class AOFTLinear(_AOFTLayer):
    """A frozen Linear (or qkv slice) plus LoRA+AOFT's ``ΔW = AO(q_down) diag(λ) AO(q_up)ᵀ`` (paper layout).

    Args:
        base_layer: the frozen ``nn.Linear`` or :class:`LinearSlice`.
        rank: number of generated vectors ``d``.
        use_scale: per-rank ``λ`` (AOFT*) instead of one scalar gate.
    """

    def __init__(self, base_layer: nn.Module, rank: int = 8, use_scale: bool = False) -> None:
        weight = base_layer.weight
        dims = base_layer.in_features, base_layer.out_features
        super().__init__(base_layer, *dims, rank, use_scale, device=weight.device, dtype=weight.dtype)

    def low_rank_factors(self) -> tuple[Tensor, Tensor, None]:
        """``(down, up, None)`` with ``x ΔWᵀ = (x downᵀ) upᵀ``: ``down = (AO(q_down) diag(λ))ᵀ``, ``up = AO(q_up)``."""
        down, scale, up = self.projections(torch.promote_types(self.aoft_q_down.dtype, torch.float32))
        return (down * scale).T, up, None

    def merged_weight(self) -> Tensor:
        weight = self.base_layer.weight
        down, up, _ = self.low_rank_factors()
        return torch.addmm(weight.to(down.dtype), up, down).to(weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return low_rank_linear(x, self.base_layer.weight, self.base_layer.bias, *self.low_rank_factors()[:2])

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[AOFTLinear | None], x: Tensor) -> Tensor:
        """q/k/v blocks of a fused qkv: every generator of the adapted blocks built in one batched pass, then one base
        GEMM plus one low-rank ``addmm``."""
        adapted = [p for p in parts if p is not None]
        vectors = torch.stack([q for p in adapted for q in (p.aoft_q_down, p.aoft_q_up)])
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            bases = ao_basis(at_least_float32(vectors), adapted[0].rank)
        factors, index = [], 0
        for part in parts:
            if part is None:
                factors.append(None)
                continue
            scale = at_least_float32(part.aoft_scale)
            factors.append(((bases[index] * scale).T, bases[index + 1], None))
            index += 2
        return qkv_low_rank(x, fused.weight, fused.bias, factors, ups_are_parameters=False)


class AOFTAdapter(_AOFTLayer):
    """An MLP block plus Adapter+AOFT: ``(act(h AO(q_down)) ⊙ λ) AO(q_up)ᵀ`` with ``h`` its input or output.

    Args:
        base_layer: the frozen MLP (any module whose first and last Linear give the input and output widths).
        rank: number of generated vectors ``d`` (the bottleneck width).
        use_scale: per-rank ``λ`` (AOFT*) instead of one scalar gate.
        activation: bottleneck non-linearity, ``gelu`` or ``relu``.
        position: ``parallel`` (adapter input = MLP input) or ``sequential`` (adapter input = MLP output).
    """

    mergeable = False

    def __init__(
        self,
        base_layer: nn.Module,
        rank: int = 8,
        use_scale: bool = False,
        activation: str = "gelu",
        position: str = "parallel",
    ) -> None:
        linears = [m for m in base_layer.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(f"Adapter+AOFT wraps an MLP with Linear layers, got {type(base_layer).__name__}")
        dim_out = linears[-1].out_features
        dim_in = linears[0].in_features if position == "parallel" else dim_out
        weight = linears[0].weight
        super().__init__(base_layer, dim_in, dim_out, rank, use_scale, device=weight.device, dtype=weight.dtype)
        self.act, self.position = ACTIVATIONS[activation], position

    def forward(self, x: Tensor) -> Tensor:
        out = self.base_layer(x)
        down, scale, up = self.projections(out.dtype)
        hidden = self.act((x if self.position == "parallel" else out) @ down) * scale
        return out + hidden @ up.T


def _check_common(config: MethodConfig) -> None:
    check_int(config.rank, "rank")
    check_bool(config.use_scale, "use_scale")


@register_method("aoft")
@dataclass
class AOFTConfig(MethodConfig):
    """LoRA+AOFT on q and v (see the module docstring).

    Args:
        rank: number of approximately orthogonal vectors ``d`` generated per projection.
        use_scale: learn a per-rank scale ``λ ∈ R^rank`` (AOFT*) instead of one scalar gate; both start at 0.
    """

    targets: list[str] = field(default_factory=lambda: ["attn.q", "attn.v"])
    rank: int = 8
    use_scale: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self)

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        check_linear(name, base, self.name)
        return AOFTLinear(base, self.rank, self.use_scale)


@register_method("aoft_adapter")
@dataclass
class AOFTAdapterConfig(MethodConfig):
    """Adapter+AOFT: one non-linear AOFT adapter per block on the FFN (see the module docstring).

    Args:
        rank: bottleneck width ``d`` (number of generated vectors).
        use_scale: learn a per-rank scale ``λ ∈ R^rank`` (AOFT*) instead of one scalar gate; both start at 0.
        activation: bottleneck non-linearity, ``gelu`` or ``relu``.
        position: ``parallel`` to the FFN (input = FFN input) or ``sequential`` (input = FFN output).
    """

    wraps_any_module = True

    targets: list[str] = field(default_factory=lambda: ["mlp"])
    rank: int = 8
    use_scale: bool = False
    activation: str = "gelu"
    position: str = "parallel"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self)
        check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        check_choice(self.position, "position", POSITIONS)

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        return AOFTAdapter(base, self.rank, self.use_scale, self.activation, self.position)
