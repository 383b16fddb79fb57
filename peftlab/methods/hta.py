"""HTA: Householder Transformation-based Adaptor (Dong et al., "Efficient Adaptation of Pre-trained Vision Transformer
via Householder Transformation", NeurIPS 2024; arXiv 2410.22952).

"LoRA-based HTA", the paper's default (Eq. 6), in the paper's layout ``X W`` with ``W ∈ R^{in×out}``::

    X_FT = X (W + W_down W_up + H(v_left) diag(d) H(v_right)) + b,    H(v) = I - v vᵀ   (Eq. 3, 5)

with ``v_left ∈ R^in``, ``v_right ∈ R^out``, ``d ∈ R^{min(in, out)}`` learnable per adapted matrix and a rank-``r``
LoRA term (``r = 1`` in the paper; ``rank: 0`` gives pure HTA). PyTorch's weight is the transpose, so the module adds
``ΔW_torch = (W_down W_up + W_HTA)ᵀ``.

Choices (the paper leaves them open):

* Matrices: q, k, v (separate slices of timm's fused qkv) and the attention projection of every block: the only
  configuration that reproduces the reported counts (0.22 M VTAB / 0.36 M FGVC with the average head).
* ``H = I - v vᵀ`` exactly as Eq. 3 (no factor 2, no normalisation); ``normalize: true`` uses the textbook
  reflection ``I - 2 v vᵀ / ‖v‖²``.
* Init (the paper gives none): ``d = 0`` and ``W_up = 0`` so ΔW = 0 at start; ``W_down ~ U(±1/√in)`` (LoRA's
  ``kaiming_uniform_(a=√5)``); ``v ~ N(0, 2/D)`` so ``‖v‖² ≈ 2`` and each ``H`` starts close to an orthogonal
  reflection, the property that motivates the paper (a zero ``v`` would never get a gradient: ``H`` is quadratic in
  ``v``). While ``d = 0`` the ``v`` vectors get no gradient; ``d`` moves at the first step and releases them.
* Closed form: expanding ``H(v_l) D H(v_r)`` gives ``ΔW = D + V Uᵀ`` with ``V, U`` of rank ``2 + r``
  (:func:`~peftlab.methods.functional.hta_factors`), so no D×D product and no identity matrix is ever pushed
  through the Householder code. ``compute: activation`` (default) applies it to the activations,
  ``x Wᵀ + b + (x V) Uᵀ + x ⊙ d`` (one base GEMM, a rank-``2 + r`` ``addmm``, one ``addcmul``; on timm's fused qkv all
  three blocks share one base GEMM); autograd keeps only ``x`` and the ``N × (2 + r)`` projection, no N×D
  intermediate. ``compute: weight`` builds ``W + ΔW`` once per step and runs one GEMM, whose backward adds the
  weight-gradient GEMM. Activation is the default because it was the faster of the two in ``make bench`` (the
  measurements are in ``experiments/results/bench/``); the factors are built in float32 even under autocast (the
  branch GEMMs then run in the autocast dtype like every other linear).

Mergeable (``W + ΔW``): zero inference overhead. Trainable parameters on ViT-B/16, head excluded: 184,320.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig, check_bool, check_choice, check_int, check_linear
from peftlab.methods.functional import at_least_float32, hta_factors, rectangular_diagonal
from peftlab.methods.fused import low_rank_linear, qkv_low_rank
from peftlab.methods.layers import AdapterLayer

COMPUTE_FORMS = ("activation", "weight")


class HTALinear(AdapterLayer):
    """A frozen Linear (or qkv slice) plus HTA's Eq. 6 update ``W_down W_up + H(v_left) diag(d) H(v_right)``.

    Args:
        base_layer: the frozen ``nn.Linear`` or :class:`LinearSlice`.
        rank: rank of the LoRA term (0: none).
        normalize: use the textbook reflection ``I - 2 v vᵀ / ‖v‖²`` instead of Eq. 3's ``I - v vᵀ``.
        compute: ``activation`` (apply the update to the activations) or ``weight`` (build ``W + ΔW``).
    """

    def __init__(self, base_layer: nn.Module, rank: int = 1, normalize: bool = False, compute: str = "activation"):
        super().__init__(base_layer)
        self.normalize, self.compute = normalize, compute
        dim_in, dim_out = base_layer.in_features, base_layer.out_features
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.hta_v_left = nn.Parameter(torch.empty(dim_in, **factory))
        self.hta_v_right = nn.Parameter(torch.empty(dim_out, **factory))
        self.hta_diag = nn.Parameter(torch.empty(min(dim_in, dim_out), **factory))
        self.hta_down = nn.Parameter(torch.empty(dim_in, rank, **factory)) if rank else None
        self.hta_up = nn.Parameter(torch.empty(rank, dim_out, **factory)) if rank else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for v in (self.hta_v_left, self.hta_v_right):
            nn.init.normal_(v, std=math.sqrt(2 / v.numel()))
        nn.init.zeros_(self.hta_diag)
        if self.hta_down is not None:
            bound = 1 / math.sqrt(self.hta_down.shape[0])
            nn.init.uniform_(self.hta_down, -bound, bound)
            nn.init.zeros_(self.hta_up)

    def factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(Vᵀ, U, d)`` of the closed form ``ΔW_torch = Dᵀ + U Vᵀ`` (:func:`hta_factors`), built in float32 even
        under autocast (and in float64 when the parameters are)."""
        low_rank = (self.hta_down, self.hta_up) if self.hta_down is not None else (None, None)
        params = [
            p if p is None else at_least_float32(p)
            for p in (self.hta_v_left, self.hta_diag, self.hta_v_right, *low_rank)
        ]
        with torch.autocast(device_type=self.hta_diag.device.type, enabled=False):
            return (*hta_factors(*params, normalize=self.normalize), params[1])

    def low_rank_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(down, up, d)`` with ``x ΔWᵀ = (x downᵀ) upᵀ + x ⊙ d`` for the fused qkv path (activation form only)."""
        return self.factors() if self.compute == "activation" else None

    def _update(self, x: Tensor) -> Tensor:
        """``x (W_down W_up + W_HTA)`` in the paper's layout, computed in float32 even under autocast."""
        down, up, diag = self.factors()
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = at_least_float32(x)
            out = F.linear(F.linear(x, down), up)
            m = diag.numel()
            return out + F.pad(x[..., :m] * diag, (0, out.shape[-1] - m))

    def delta_weight(self) -> Tensor:
        """``ΔW`` in PyTorch's ``out×in`` layout, ``Dᵀ + U Vᵀ`` in closed form."""
        down, up, diag = self.factors()
        dim_in, dim_out = self.base_layer.in_features, self.base_layer.out_features
        with torch.autocast(device_type=diag.device.type, enabled=False):
            delta = torch.addmm(rectangular_diagonal(diag, dim_out, dim_in), up, down)
        return delta.to(self.base_layer.weight.dtype)

    def merged_weight(self) -> Tensor:
        return self.base_layer.weight + self.delta_weight()

    @property
    def computes_with_merged_weight(self) -> bool:
        return self.compute == "weight"

    def forward(self, x: Tensor) -> Tensor:
        if self.compute == "weight":
            return super().forward(x)
        return low_rank_linear(x, self.base_layer.weight, self.base_layer.bias, *self.factors())

    @staticmethod
    def qkv_forward(fused: nn.Linear, parts: list[HTALinear | None], x: Tensor) -> Tensor | None:
        """Activation form on a fused qkv: the closed-form factors of all adapted blocks in one batched pass, then one
        base GEMM plus one low-rank ``addmm`` and one diagonal ``addcmul``."""
        adapted = [p for p in parts if p is not None]
        if adapted[0].compute != "activation" or len({(p.normalize, p.hta_down is None) for p in adapted}) > 1:
            return None
        names = ["hta_v_left", "hta_diag", "hta_v_right"] + (
            [] if adapted[0].hta_down is None else ["hta_down", "hta_up"]
        )
        stacked = [at_least_float32(torch.stack([getattr(p, n) for p in adapted])) for n in names]
        with torch.autocast(device_type=x.device.type, enabled=False):
            downs, ups = hta_factors(*stacked[:3], *stacked[3:], normalize=adapted[0].normalize)
        # each block's U taken as a view of its row-major Uᵀ, so that the gradients stay row-major (no copies); the
        # ups are computed from the parameters, so one GEMM gives every block's up gradient
        ups_t, diags, index, factors = ups.transpose(-1, -2), stacked[1], 0, []
        for part in parts:
            factors.append(None if part is None else (downs[index], ups_t[index].T, diags[index]))
            index += part is not None
        return qkv_low_rank(x, fused.weight, fused.bias, factors, ups_are_parameters=False)


@register_method("hta")
@dataclass
class HTAConfig(MethodConfig):
    """HTA, LoRA-based (Eq. 6), on q, k, v and the attention projection (see the module docstring).

    Args:
        rank: rank of the LoRA term ``W_down W_up`` (paper: 1; 0 gives pure HTA, Eq. 5).
        normalize: textbook Householder reflection ``I - 2 v vᵀ / ‖v‖²`` instead of the paper's ``I - v vᵀ``.
        compute: ``activation`` (O(N·D) update on the activations) or ``weight`` (build ``W + ΔW``, one GEMM).
    """

    targets: list[str] = field(default_factory=lambda: ["attn.q", "attn.k", "attn.v", "attn.proj"])
    rank: int = 1
    normalize: bool = False
    compute: str = "activation"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.rank, "rank", minimum=0)
        check_bool(self.normalize, "normalize")
        check_choice(self.compute, "compute", COMPUTE_FORMS)

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        check_linear(name, base, self.name)
        return HTALinear(base, self.rank, self.normalize, self.compute)
