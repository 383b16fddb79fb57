"""Pure math of the methods, one function per equation. Wrappers in the method modules only call these.

Convention: PyTorch weights are ``W ∈ R^{out×in}`` and a linear layer computes ``y = x Wᵀ + b``; equations from the
papers (written ``X W`` with ``W ∈ R^{in×out}``) are transposed accordingly in each docstring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor, dim: int = -1) -> Tensor:
    """SSF (Lian et al., NeurIPS 2022, Eq. 2): ``y = γ ⊙ x + β`` along channel dimension ``dim``."""
    if dim != -1 and dim != x.ndim - 1:
        shape = [1] * x.ndim
        shape[dim] = -1
        scale, shift = scale.view(shape), shift.view(shape)
    return x * scale + shift


def fold_scale_shift(weight: Tensor, bias: Tensor | None, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """SSF re-parameterisation (Lian et al., NeurIPS 2022): ``γ ⊙ (op(x; W, b)) + β = op(x; γ ⊙ W, γ ⊙ b + β)``.

    ``scale`` multiplies dim 0 of ``weight`` (output rows of a Linear, output channels of a Conv2d, the affine weight of
    a LayerNorm); a missing ``bias`` counts as zero.
    """
    shape = (-1,) + (1,) * (weight.ndim - 1)
    folded_bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(shape), folded_bias


def rlrr_weight(weight: Tensor, scale_out: Tensor, scale_in: Tensor) -> Tensor:
    """RLRR (Dong et al., CVPR 2024, Eq. 19-20): ``W' = W ⊙ (1 + s_out s_inᵀ)``, a residual rank-1 rescaling of ``W``.

    In PyTorch's out×in layout ``s_out`` is the paper's ``s_right`` (official ``scale_line``) and ``s_in`` its
    ``s_left`` (official ``scale_col``).
    """
    return weight + weight * torch.outer(scale_out, scale_in)


def householder(x: Tensor, v: Tensor, normalize: bool = False) -> Tensor:
    """``x H`` for HTA's Householder matrix (Dong et al., NeurIPS 2024, Eq. 3) ``H = I - v vᵀ``, in O(N·D).

    ``H`` is symmetric, so this is also ``H x`` for column vectors. The paper writes ``I - v vᵀ`` with no factor 2 and
    no normalisation (orthogonal only when ``‖v‖² = 2``); ``normalize=True`` gives the textbook reflection
    ``I - 2 v vᵀ / ‖v‖²`` instead.
    """
    if normalize:
        v = v * torch.rsqrt(v.square().sum().clamp_min(1e-12) / 2)
    return x - (x @ v).unsqueeze(-1) * v


def hta_transform(x: Tensor, v_left: Tensor, diag: Tensor, v_right: Tensor, normalize: bool = False) -> Tensor:
    """``x W_HTA`` with HTA's Eq. 5 ``W_HTA = H(v_left) diag(d) H(v_right)`` (paper layout ``W ∈ R^{in×out}``).

    For a non-square ``in×out`` matrix ``diag(d)`` is rectangular with ``d ∈ R^{min(in, out)}``.
    """
    z = householder(x, v_left, normalize)[..., : diag.numel()] * diag
    missing = v_right.numel() - diag.numel()
    if missing:
        z = F.pad(z, (0, missing))
    return householder(z, v_right, normalize)


def hta_update(
    x: Tensor,
    v_left: Tensor,
    diag: Tensor,
    v_right: Tensor,
    down: Tensor | None = None,
    up: Tensor | None = None,
    normalize: bool = False,
) -> Tensor:
    """``x ΔW`` for HTA's Eq. 6 ``X (W + W_down W_up + W_HTA)``: the Householder term plus the optional low-rank term.

    ``down ∈ R^{in×r}`` and ``up ∈ R^{r×out}`` are in the paper's layout. For PyTorch's ``y = x Wᵀ`` the weight change
    is the transpose, ``ΔW_torch = hta_update(I_in, ...)ᵀ``.
    """
    out = hta_transform(x, v_left, diag, v_right, normalize)
    if down is not None:
        out = out + (x @ down) @ up
    return out


def ao_basis(q: Tensor, rank: int, eps: float = 1e-4) -> Tensor:
    """AOFT's generator (Yang et al., ICCV 2025): the first ``rank`` columns of ``Q(q)`` built from one vector ``q``.

    With ``q = (q_0, u)``, ``Q = [[q_0, -uᵀ], [u, I - u uᵀ / (1 + q_0)]]``, which is exactly orthogonal when ``‖q‖ = 1``
    and approximately so otherwise (the norm is deliberately not enforced). Column 0 is ``q``; column ``j >= 1`` is
    ``(-q_j; e_j - u q_j / (1 + q_0))``, so the ``D×rank`` result costs O(D·rank) and ``Q`` is never built.
    ``|1 + q_0|`` is kept at least ``eps`` (sign preserved) so the division stays finite.
    """
    q0, u = q[0], q[1:]
    denom = 1 + q0
    denom = torch.where(denom < 0, -1.0, 1.0) * denom.abs().clamp_min(eps)
    picked = u[: rank - 1]
    top = torch.cat([q0.view(1), -picked])
    lower = torch.eye(u.numel(), rank - 1, dtype=q.dtype, device=q.device) - torch.outer(u, picked) / denom
    return torch.cat([top.view(1, -1), torch.cat([u.view(-1, 1), lower], dim=1)], dim=0)


def aoft_update(x: Tensor, basis_down: Tensor, scale: Tensor, basis_up: Tensor) -> Tensor:
    """``x ΔW`` for LoRA+AOFT, ``ΔW = AO(q_down) diag(λ) AO(q_up)ᵀ`` (paper layout ``in×out``).

    ``scale`` is ``λ ∈ R^rank`` (AOFT*) or a single gate broadcast over the ranks.
    """
    return ((x @ basis_down) * scale) @ basis_up.T
