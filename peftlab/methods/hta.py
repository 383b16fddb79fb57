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
* ``compute: weight`` (default) builds ``W + ΔW`` once per step and runs one GEMM (its backward adds the
  weight-gradient GEMM); ``compute: activation`` applies ``H`` as ``x - (x v) vᵀ`` in O(N·D) and never builds a D×D
  matrix. Measured side by side (``experiments/bench.py --micro``, CPU, batch 64 × 197 tokens, forward + backward of
  one ViT-B layer) the weight form takes 0.49× (768→768) of the activation form's time, and the whole network trains
  at 1.38× instead of 1.69× the frozen-backbone step: the activation form's element-wise passes over N×D tensors cost
  more than the extra GEMM. GPU not yet measured. The Householder terms run in float32 even under autocast.

Mergeable (``W + ΔW``): zero inference overhead. Trainable parameters on ViT-B/16, head excluded: 184,320.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from peftlab.methods import register_method
from peftlab.methods.base import MethodConfig, check_bool, check_choice, check_int
from peftlab.methods.functional import at_least_float32, hta_update
from peftlab.methods.layers import AdapterLayer, LinearSlice

COMPUTE_FORMS = ("activation", "weight")


class HTALinear(AdapterLayer):
    """A frozen Linear (or qkv slice) plus HTA's Eq. 6 update ``W_down W_up + H(v_left) diag(d) H(v_right)``.

    Args:
        base_layer: the frozen ``nn.Linear`` or :class:`LinearSlice`.
        rank: rank of the LoRA term (0: none).
        normalize: use the textbook reflection ``I - 2 v vᵀ / ‖v‖²`` instead of Eq. 3's ``I - v vᵀ``.
        compute: ``activation`` (apply the update to the activations) or ``weight`` (build ``W + ΔW``).
    """

    def __init__(self, base_layer: nn.Module, rank: int = 1, normalize: bool = False, compute: str = "weight"):
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

    def _update(self, x: Tensor) -> Tensor:
        """``x (W_down W_up + W_HTA)`` in the paper's layout, computed in float32 even under autocast."""
        low_rank = (self.hta_down, self.hta_up) if self.hta_down is not None else (None, None)
        params = [
            p if p is None else at_least_float32(p)
            for p in (self.hta_v_left, self.hta_diag, self.hta_v_right, *low_rank)
        ]
        with torch.autocast(device_type=x.device.type, enabled=False):
            return hta_update(at_least_float32(x), *params, normalize=self.normalize)

    def delta_weight(self) -> Tensor:
        """``ΔW`` in PyTorch's ``out×in`` layout."""
        eye = torch.eye(self.base_layer.in_features, device=self.hta_diag.device, dtype=self.hta_diag.dtype)
        return self._update(eye).T.to(self.base_layer.weight.dtype)

    def merged_weight(self) -> Tensor:
        return self.base_layer.weight + self.delta_weight()

    @property
    def computes_with_merged_weight(self) -> bool:
        return self.compute == "weight"

    def forward(self, x: Tensor) -> Tensor:
        if self.compute == "weight":
            return super().forward(x)
        out = self.base_layer(x)
        return out + self._update(x).to(out.dtype)


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
    compute: str = "weight"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.rank, "rank", minimum=0)
        check_bool(self.normalize, "normalize")
        check_choice(self.compute, "compute", COMPUTE_FORMS)

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        if not isinstance(base, (nn.Linear, LinearSlice)):
            raise TypeError(f"HTA adapts linear weights; {name!r} is a {type(base).__name__}")
        return HTALinear(base, self.rank, self.normalize, self.compute)
