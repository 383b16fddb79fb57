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
    is the transpose, ``ΔW_torch = hta_update(I_in, ...)ᵀ``. This is the plain formula (two Householder passes);
    :func:`hta_factors` gives the same update in closed form.
    """
    out = hta_transform(x, v_left, diag, v_right, normalize)
    if down is not None:
        out = out + (x @ down) @ up
    return out


def householder_vector(v: Tensor, normalize: bool) -> Tensor:
    """The ``v`` of ``H = I − v vᵀ``: as given (Eq. 3) or scaled to ``‖v‖² = 2`` (the textbook reflection)."""
    return v * torch.rsqrt(v.square().sum(-1, keepdim=True).clamp_min(1e-12) / 2) if normalize else v


def hta_factors(
    v_left: Tensor,
    diag: Tensor,
    v_right: Tensor,
    down: Tensor | None = None,
    up: Tensor | None = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """HTA's Eq. 6 update in closed form: ``ΔW = D + V Uᵀ`` (paper layout ``in×out``, ``D`` the rectangular diagonal
    of ``d``), returned as ``(Vᵀ, U)`` of rank ``2 + r``.

    Expanding ``H_l D H_r = (I − v_l v_lᵀ) D (I − v_r v_rᵀ)`` with ``a = Dᵀ v_l``, ``b = D v_r`` and
    ``c = v_lᵀ D v_r`` gives ``D − v_l (a − c v_r)ᵀ − b v_rᵀ``; the low-rank term adds ``W_down W_up``. So
    ``x ΔW = pad(x[:, :m] ⊙ d) + (x V) Uᵀ`` and, in PyTorch's layout, ``ΔW_torch = Dᵀ + U Vᵀ``: no D×D product.
    Batched over leading dimensions (the q, k and v blocks of a fused qkv in one pass).
    """
    v_left, v_right = householder_vector(v_left, normalize), householder_vector(v_right, normalize)
    m = diag.shape[-1]
    a = _pad_last(v_left[..., :m] * diag, v_right.shape[-1])
    b = _pad_last(diag * v_right[..., :m], v_left.shape[-1])
    c = (a * v_right).sum(-1, keepdim=True)
    v_t = torch.stack([v_left, b], dim=-2)
    u_t = torch.stack([c * v_right - a, -v_right], dim=-2)
    if down is not None:
        v_t, u_t = torch.cat([v_t, down.transpose(-1, -2)], dim=-2), torch.cat([u_t, up], dim=-2)
    # U as a view of Uᵀ: the GEMMs then hand back Uᵀ's gradient row-major, so `up`'s gradient is a contiguous slice
    return v_t, u_t.transpose(-1, -2)


def _pad_last(x: Tensor, size: int) -> Tensor:
    """``x`` zero-padded to ``size`` along its last dimension (no op when it has that size: square layers)."""
    return x if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def rectangular_diagonal(diag: Tensor, rows: int, cols: int) -> Tensor:
    """A ``rows×cols`` matrix with ``diag`` on its main diagonal."""
    square = torch.diag(diag)
    return F.pad(square, (0, cols - diag.numel(), 0, rows - diag.numel()))


def ao_basis(q: Tensor, rank: int, eps: float = 1e-4) -> Tensor:
    """AOFT's generator (Yang et al., ICCV 2025): the first ``rank`` columns of ``Q(q)`` built from one vector ``q``.

    With ``q = (q_0, u)``, ``Q = [[q_0, -uᵀ], [u, I - u uᵀ / (1 + q_0)]]``, which is exactly orthogonal when ``‖q‖ = 1``
    and approximately so otherwise (the norm is deliberately not enforced). Column 0 is ``q``; column ``j >= 1`` is
    ``e_j − q_j z`` with ``z = (1, u / (1 + q_0))``, so the ``D×rank`` result costs O(D·rank) and ``Q`` is never built.
    ``|1 + q_0|`` is kept at least ``eps`` (sign preserved) so the division stays finite. Batched over leading
    dimensions of ``q`` (``(..., D)`` -> ``(..., D, rank)``), so that all generators of a layer are built in one pass.
    Only secondary summaries of the paper were available, so no equation number is cited; column 0 = ``q`` is a
    reconstruction.
    """
    eye = torch.eye(q.shape[-1], rank, dtype=q.dtype, device=q.device)
    q0 = q[..., :1]
    shifted = q0 + 1
    denom = torch.copysign(shifted.abs().clamp_min(eps), shifted)
    z = torch.addcdiv(eye[:, 0], q - q0 * eye[:, 0], denom)  # (1, u / (1 + q_0))
    columns = eye[:, 1:] - z.unsqueeze(-1) * q[..., 1:rank].unsqueeze(-2)
    return torch.cat([q.unsqueeze(-1), columns], dim=-1)


def aoft_update(x: Tensor, basis_down: Tensor, scale: Tensor, basis_up: Tensor) -> Tensor:
    """``x ΔW`` for LoRA+AOFT, ``ΔW = AO(q_down) diag(λ) AO(q_up)ᵀ`` (paper layout ``in×out``).

    ``scale`` is ``λ ∈ R^rank`` (AOFT*) or a single gate broadcast over the ranks.
    """
    return ((x @ basis_down) * scale) @ basis_up.T


def lora(x: Tensor, a: Tensor, b: Tensor, scale: float) -> Tensor:
    """LoRA (Hu et al., ICLR 2022, Eq. 3 with the α/r scaling of §4.1) on activations: ``ΔW x = (α/r)·B A x``.

    Row convention: ``x Aᵀ Bᵀ · scale`` with ``A ∈ R^{r×in}``, ``B ∈ R^{out×r}``; the dense ``ΔW`` is never built.
    """
    return F.linear(F.linear(x, a), b) * scale


def lora_delta_weight(a: Tensor, b: Tensor, scale: float) -> Tensor:
    """LoRA (Hu et al., ICLR 2022, Eq. 3): the dense update ``ΔW = (α/r)·B A ∈ R^{out×in}`` (for merging)."""
    return (b @ a) * scale


def dora_norm(weight: Tensor) -> Tensor:
    """DoRA (Liu et al., ICML 2024, Eq. 5): ``‖W‖_c``, the L2 norm of each output unit's weight vector.

    The paper's ``W ∈ R^{d×k}`` has one column per output; in PyTorch's ``W ∈ R^{out×in}`` that is each row (dim 1).
    """
    return torch.linalg.vector_norm(weight, dim=1)


def dora_scale(weight: Tensor, delta: Tensor, magnitude: Tensor, detach_norm: bool = True) -> Tensor:
    """DoRA (Liu et al., ICML 2024, Eq. 5): the per-output factor ``m / ‖W₀ + ΔW‖_c``.

    With ``detach_norm`` the norm is a constant for backprop (DoRA §4.3); the value is unchanged.
    """
    norm = dora_norm(weight + delta)
    return magnitude / (norm.detach() if detach_norm else norm)


def dora_weight(weight: Tensor, delta: Tensor, magnitude: Tensor) -> Tensor:
    """DoRA (Liu et al., ICML 2024, Eq. 5): ``W' = m · (W₀ + ΔW) / ‖W₀ + ΔW‖_c`` (rows of a PyTorch weight)."""
    directed = weight + delta
    return (magnitude / dora_norm(directed)).unsqueeze(1) * directed


def skew_symmetric(upper: Tensor, size: int) -> Tensor:
    """OFT (Qiu et al., NeurIPS 2023, §3): skew-symmetric ``Q = U − Uᵀ`` from the strict upper triangle ``U``.

    ``upper`` has shape ``(blocks, size·(size−1)/2)`` (row-major order of ``triu_indices``); returns
    ``(blocks, size, size)``.
    """
    rows, cols = torch.triu_indices(size, size, offset=1, device=upper.device)
    triangle = upper.new_zeros(upper.shape[0], size, size)
    triangle[:, rows, cols] = upper
    return triangle - triangle.transpose(-1, -2)


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32, or as is when it is already wider (float64 stays float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def cayley(skew: Tensor) -> Tensor:
    """OFT (Qiu et al., NeurIPS 2023, §3): Cayley transform ``R = (I + Q)(I − Q)⁻¹``, orthogonal for skew ``Q``.

    Batched over leading dimensions. Always computed in at least float32 with autocast disabled (a bf16/fp16
    inverse loses orthogonality); returns that dtype, the caller casts.
    """
    with torch.autocast(device_type=skew.device.type, enabled=False):
        q = at_least_float32(skew)
        eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device).expand_as(q)
        # X (I − Q) = I + Q  ⇔  X = (I + Q)(I − Q)⁻¹. I − Q is invertible for every skew Q (eigenvalues 1 − iλ), so
        # solve_ex skips linalg.solve's error check, a device-to-host sync per call on a GPU
        return torch.linalg.solve_ex(eye - q, eye + q, left=False)[0]


def rotate_input_blocks(weight: Tensor, rotation: Tensor) -> Tensor:
    """OFT (Qiu et al., NeurIPS 2023, §3): ``z = (R W⁰)ᵀ x`` with ``R = diag(R_1, …, R_n)`` rotating the input side.

    PyTorch layout: returns ``W Rᵀ`` for ``weight`` ``(out, n·b)`` and ``rotation`` ``(n, b, b)``, so that
    ``F.linear(x, W Rᵀ) = F.linear(x R, W)``.
    """
    out_features, in_features = weight.shape
    blocks, size, _ = rotation.shape
    rotated = torch.einsum("onb,ncb->onc", weight.reshape(out_features, blocks, size), rotation)
    return rotated.reshape(out_features, in_features)


def rotate_input(x: Tensor, rotation: Tensor) -> Tensor:
    """OFT on activations: ``x R`` with ``R = diag(R_1, …, R_n)``, so ``F.linear(x R, W) = F.linear(x, W Rᵀ)``
    (:func:`rotate_input_blocks`). ``rotation`` ``(n, b, b)`` is cast to ``x``'s dtype (the autocast dtype applies to
    the GEMM that follows)."""
    blocks, size, _ = rotation.shape
    rotated = torch.einsum("...nc,ncb->...nb", x.unflatten(-1, (blocks, size)), rotation.to(x.dtype))
    return rotated.flatten(-2)


def rotate_input_per_block(x: Tensor, rotations: Tensor) -> Tensor:
    """:func:`rotate_input` for ``P`` rotations at once: ``rotations`` ``(P, n, b, b)``, returns ``(P, *x.shape)``
    with ``x R_p`` in row ``p`` (the adapted blocks of a fused qkv, each with its own OFT rotation). One batched
    GEMM over the ``P·n`` blocks, each rotation in the layout the Cayley solve gives it (and its gradient in the
    layout the solve's backward takes), on ``x`` laid out once per rotation."""
    parts, blocks, size, _ = rotations.shape
    per_block = x.reshape(-1, blocks, size).transpose(0, 1)  # (n, N, b)
    per_block = per_block.unsqueeze(0).expand(parts, -1, -1, -1).reshape(parts * blocks, -1, size)
    rotated = torch.bmm(per_block, rotations.reshape(parts * blocks, size, size).to(x.dtype))  # (P·n, N, b)
    return rotated.unflatten(0, (parts, blocks)).transpose(1, 2).reshape(parts, *x.shape)


# --- Baselines: bottleneck adapters, VPT, FacT, ARC ------------------------------------------------------------------


def bottleneck_adapter(
    x: Tensor, down_weight: Tensor, down_bias: Tensor, up_weight: Tensor, up_bias: Tensor, activation: torch.nn.Module
) -> Tensor:
    """The bottleneck branch ``up(act(down(x)))`` of Houlsby et al. (ICML 2019, §2.1, Fig. 2) and AdaptFormer
    (Chen et al., NeurIPS 2022, §3.2: ``x̃ = ReLU(x W_down) W_up``); weights in PyTorch layout (out×in)."""
    return F.linear(activation(F.linear(x, down_weight, down_bias)), up_weight, up_bias)


def vpt_insert_prompts(x: Tensor, prompts: Tensor, num_prefix_tokens: int) -> Tensor:
    """VPT (Jia et al., ECCV 2022, §3.2): the layer input ``[x, P, E]``, i.e. the ``p×D`` prompts ``P`` placed
    between the prefix (cls) tokens ``x`` and the patch tokens ``E``."""
    prompts = prompts.to(x.dtype).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :num_prefix_tokens], prompts, x[:, num_prefix_tokens:]], dim=1)


def vpt_remove_prompts(x: Tensor, num_prompts: int, num_prefix_tokens: int) -> Tensor:
    """VPT §3.2: drop the prompt outputs ``Z`` of ``[x, Z, E]``; the head only ever sees ``x`` and ``E``."""
    return torch.cat([x[:, :num_prefix_tokens], x[:, num_prefix_tokens + num_prompts :]], dim=1)


def vpt_replace_prompts(x: Tensor, prompts: Tensor, num_prefix_tokens: int) -> Tensor:
    """VPT-Deep (§3.2): ``[x_{i-1}, P_{i-1}, E_{i-1}]``, the previous layer's prompt outputs replaced by new ones."""
    kept = vpt_remove_prompts(x, prompts.shape[-2], num_prefix_tokens)
    return vpt_insert_prompts(kept, prompts, num_prefix_tokens)


def fact_tk_cores(core: Tensor, p_rows: Tensor) -> Tensor:
    """FacT-TK (Jie & Deng, AAAI 2023, Eq. 10-11): the slice cores ``Σ_i = C ×₁ P_i`` (``C ∈ R^{r×r×r}``) for the
    given rows ``P_i`` of ``P ∈ R^{12L×r}``, after which FacT-TK is FacT-TT (Eq. 8-9) with ``Σ`` computed."""
    return torch.einsum("abc,ia->ibc", core, p_rows)


def fact_delta_weight(u: Tensor, v: Tensor, cores: Tensor, scale: float, out_blocks: int, in_blocks: int) -> Tensor:
    """FacT Eq. 9 (and 11): ``ΔW_i[j, k] = s·Σ_{t₁,t₂} Σ_i[t₁, t₂] U[j, t₁] V[k, t₂]`` for the ``d×d`` slices
    ``i`` of one weight, assembled in PyTorch layout (out×in).

    A weight of ``out_blocks·d × in_blocks·d`` holds ``out_blocks·in_blocks`` slices (Eq. 3-4: fc1 and fc2 are four
    ``d×d`` slices each); ``cores`` is ``(out_blocks·in_blocks, r, r)`` in row-major (output, input) block order.
    """
    d = u.shape[0]
    slices = scale * torch.einsum("iab,ja,kb->ikj", cores, u, v)  # slice i in PyTorch layout: s·V Σ_iᵀ Uᵀ
    grid = slices.reshape(out_blocks, in_blocks, d, d)
    return grid.permute(0, 2, 1, 3).reshape(out_blocks * d, in_blocks * d)


def fact_down(u: Tensor, cores: Tensor, out_blocks: int, in_blocks: int) -> Tensor:
    """FacT's ``x ΔWᵀ = s·((x U) Σ_i) Vᵀ`` (Eq. 9/11) as one down-projection of all slices of a weight: the
    ``(out_blocks·r, in_blocks·d)`` matrix whose block ``(o, j)`` is ``(U Σ_{o,j})ᵀ``, so that ``x downᵀ`` gives every
    output block's ``r``-dimensional core output ``Σ_j (x_j U) Σ_{o,j}`` in one GEMM (``cores`` as in
    :func:`fact_delta_weight`)."""
    d, rank = u.shape
    grid = cores.reshape(out_blocks, in_blocks, rank, rank)
    # block (o, j) = Σ_{o,j}ᵀ Uᵀ; written with Uᵀ on the right, autograd hands U its gradient row-major, as U is stored
    return torch.matmul(grid.transpose(-1, -2), u.T).permute(0, 2, 1, 3).reshape(out_blocks * rank, in_blocks * d)


def arc_adapter(x: Tensor, u: Tensor, scale: Tensor, bias: Tensor, dropout: torch.nn.Module | None = None) -> Tensor:
    """ARC (Dong et al., NeurIPS 2023, §3; official ``ARC_ViT.py``): the re-composed linear adapter
    ``x + drop(x (U diag(s))) Uᵀ + b`` with the down-projection ``U`` shared across layers and its transpose as the
    up-projection (symmetric), ``s`` and ``b`` per layer."""
    down = (x @ u.to(x.dtype)) * scale.to(x.dtype)  # diag(s) on the r-wide activation, with the dropout's pass
    if dropout is not None:
        down = dropout(down)
    # one addmm: the residual and bias ride in the GEMM's accumulator instead of a separate element-wise pass
    flat = torch.addmm(
        (x + bias.to(x.dtype)).reshape(-1, x.shape[-1]), down.reshape(-1, down.shape[-1]), u.to(x.dtype).T
    )
    return flat.view_as(x)


def arc_merged_weight(weight: Tensor, u: Tensor, scale: Tensor) -> Tensor:
    """ARC's re-parameterisation into the following linear ``W`` (out×in): ``W (I + U diag(s) Uᵀ)``; the bracket is
    symmetric, so ``x M Wᵀ = x (W M)ᵀ``."""
    return weight + (weight @ (u * scale)) @ u.T


def arc_merged_bias(weight: Tensor, bias: Tensor | None, adapter_bias: Tensor) -> Tensor:
    """ARC's re-parameterisation of the adapter bias into the following linear: ``c + W b``."""
    merged = weight @ adapter_bias
    return merged if bias is None else bias + merged
