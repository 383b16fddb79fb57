"""Fused kernels: the methods' formulas written so that a training step dispatches few ops and keeps few tensors.

* :class:`ScaleShiftFunction` (SSF): ``y = γ ⊙ x + β`` that saves its output, not its input, and recomputes
  ``Σ g ⊙ x`` from it in backward as ``(Σ g ⊙ y − β Σ g) / γ`` (the output is saved by the next op anyway, so SSF
  adds no activation memory, and the backward makes no N×D pass beyond the two products it needs).
* :class:`RescaledLinearFunction` (RLRR): ``y = x (W ⊙ (1 + s_out s_inᵀ))ᵀ + b`` that never keeps ``W'``; backward
  computes ``G = gᵀx`` once and both scale gradients from ``G ⊙ W`` by two matrix-vector products. One call covers
  ``P`` stacked ``(out, in)`` blocks (q, k and v of timm's fused qkv in one GEMM).
* :func:`low_rank_linear`: ``x Wᵀ + b + (x Aᵀ) Bᵀ (+ x ⊙ d)`` as one base GEMM plus an ``addmm`` (LoRA, AOFT and HTA's
  closed form), and :func:`qkv_low_rank` for the q/k/v column blocks of a fused qkv sharing that one base GEMM;
  :func:`shared_up_linear` for FacT, whose output blocks share one up-projection.

Each is tested against the plain formula (forward and every gradient) in float64 and under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# --- SSF -------------------------------------------------------------------------------------------------------------


def _channel_view(vector: Tensor, ndim: int, dim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return vector.view(shape)


class ScaleShiftFunction(torch.autograd.Function):
    """``γ ⊙ x + β`` along ``dim`` in ``x``'s dtype; backward recomputes ``x`` from the saved output."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, shift: Tensor, dim: int) -> Tensor:
        dim = dim % x.ndim
        scale_v = _channel_view(scale.to(x.dtype), x.ndim, dim)
        out = torch.addcmul(_channel_view(shift.to(x.dtype), x.ndim, dim), x, scale_v)
        ctx.dim = dim
        ctx.save_for_backward(out, scale, shift)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        out, scale, shift = ctx.saved_tensors
        dim, ndim = ctx.dim, out.ndim
        reduce = [d for d in range(ndim) if d != dim]
        grad_x = grad * _channel_view(scale.to(grad.dtype), ndim, dim) if ctx.needs_input_grad[0] else None
        wide = torch.promote_types(out.dtype, scale.dtype)
        # with x = (y − β) / γ never materialised: Σ g ⊙ x = (Σ g ⊙ y − β ⊙ Σ g) / γ, per channel (O(C) after the sums)
        grad_shift = grad.sum(reduce, dtype=wide)
        grad_y = (grad.to(wide) * out.to(wide)).sum(reduce)
        grad_scale = (grad_y - shift * grad_shift) / scale
        return grad_x, grad_scale.to(scale.dtype), grad_shift.to(shift.dtype), None


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor, dim: int = -1) -> Tensor:
    """SSF's ``γ ⊙ x + β`` along ``dim`` through :class:`ScaleShiftFunction`."""
    return ScaleShiftFunction.apply(x, scale, shift, dim)


# --- RLRR ------------------------------------------------------------------------------------------------------------


def rescaled_weight(weight: Tensor, scale_out: Tensor, scale_in: Tensor) -> Tensor:
    """``W ⊙ (1 + s_out s_inᵀ)`` per block: ``weight`` ``(P·out, in)``, ``scale_out`` ``(P·out,)``, ``scale_in``
    ``(P, in)``."""
    blocks, dim_in = scale_in.shape
    w = weight.view(blocks, -1, dim_in)
    outer = scale_out.view(blocks, -1, 1) * scale_in.view(blocks, 1, dim_in)
    return torch.addcmul(w, w, outer).view_as(weight)


def _compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, weight.dtype)


class RescaledLinearFunction(torch.autograd.Function):
    """``F.linear(x, W ⊙ (1 + s_out s_inᵀ), bias)`` saving ``x`` (in the compute dtype) but not ``W'``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale_out: Tensor, scale_in: Tensor, bias: Tensor | None) -> Tensor:
        dtype, input_dtype = _compute_dtype(x, weight), x.dtype
        x = x.to(dtype)
        merged = rescaled_weight(weight, scale_out, scale_in).to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x, merged, None if bias is None else bias.to(dtype))
        ctx.input_dtype = input_dtype
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, scale_out, scale_in)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, scale_out, scale_in = ctx.saved_tensors
        grad = grad.to(x.dtype)
        blocks, dim_in = scale_in.shape
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ rescaled_weight(weight, scale_out, scale_in).to(grad.dtype)).to(ctx.input_dtype)
        # G = gᵀx, the one weight-sized GEMM; ∂/∂s_out = (G ⊙ W) s_in, ∂/∂s_in = (G ⊙ W)ᵀ s_out per block
        g2d, x2d = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        masked = (g2d.T @ x2d).to(weight.dtype).mul_(weight).view(blocks, -1, dim_in)
        grad_out = torch.bmm(masked, scale_in.view(blocks, dim_in, 1)).view_as(scale_out)
        grad_in = torch.bmm(scale_out.view(blocks, 1, -1), masked).view_as(scale_in)
        grad_bias = g2d.sum(0, dtype=weight.dtype) if ctx.has_bias and ctx.needs_input_grad[4] else None
        return grad_x, None, grad_out, grad_in, grad_bias


def rescaled_linear(x: Tensor, weight: Tensor, scale_out: Tensor, scale_in: Tensor, bias: Tensor | None) -> Tensor:
    """RLRR's linear through :class:`RescaledLinearFunction`; ``scale_in`` is ``(in,)`` or ``(P, in)``."""
    return RescaledLinearFunction.apply(x, weight, scale_out, scale_in.view(-1, weight.shape[1]), bias)


# --- low-rank branches (LoRA, AOFT, HTA's closed form) ----------------------------------------------------------------


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def low_rank_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, up: Tensor, diag: Tensor | None = None
) -> Tensor:
    """``x Wᵀ + b + (x downᵀ) upᵀ + pad(x[:, :m] ⊙ d)`` with ``down`` ``(r, in)``, ``up`` ``(out, r)``, ``d`` of length
    ``m = min(in, out)``: one base GEMM, the low-rank branch accumulated by ``addmm`` (:func:`shared_up_linear` with a
    single output block)."""
    out = shared_up_linear(x, weight, bias, down, up)
    return out if diag is None else _add_diagonal(out, x, diag)


def _dtype_of(x: Tensor, weight: Tensor) -> torch.dtype:
    return _compute_dtype(x, weight)


def _add_diagonal(out: Tensor, x: Tensor, diag: Tensor) -> Tensor:
    """``out + pad(x[..., :m] ⊙ d)`` (a rectangular diagonal ``(in, out)`` in the paper's layout)."""
    m = diag.numel()
    if m == out.shape[-1] == x.shape[-1]:
        return torch.addcmul(out, x.to(out.dtype), diag.to(out.dtype))
    return out + F.pad(x[..., :m].to(out.dtype) * diag.to(out.dtype), (0, out.shape[-1] - m))


def shared_up_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, down: Tensor, up: Tensor, dropout: torch.nn.Module | None = None
) -> Tensor:
    """``x Wᵀ + b`` plus, per ``d``-wide output block ``o``, ``drop(x downᵀ)_o upᵀ``: ``down`` ``(B·r, in)`` holds every
    block's down-projection, ``up`` ``(d, r)`` is shared by the ``B = out / d`` blocks (FacT's ``V``). One base GEMM,
    one down GEMM and one ``addmm`` over the ``(N·B, d)`` view of the output: no block-diagonal zeros."""
    hidden = F.linear(x, down)
    if dropout is not None:
        hidden = dropout(hidden)
    dim, rank = up.shape
    out = F.linear(x, weight, bias)
    out = torch.addmm(out.reshape(-1, dim), hidden.reshape(-1, rank), up.T.to(_dtype_of(x, weight)))
    return out.view(*x.shape[:-1], weight.shape[0])


class BlockDiagonalUpFunction(torch.autograd.Function):
    """``out + hidden · blockdiag(up_1, …, up_B)ᵀ`` (one ``addmm``), ``out`` ``(N, B·w)``, ``hidden`` ``(N, Σr)``,
    ``up_i`` ``(w, r_i)``. With ``per_block`` backward computes each ``up_i``'s gradient ``grad_iᵀ hidden_i`` in
    ``up_i``'s memory layout, for ups that are parameters (or views of them): through ``torch.block_diag`` autograd
    would hand out strided slices of one ``(B·w, Σr)`` product that gradient accumulation then copies again. Equal,
    evenly spaced blocks (q and v) share one batched GEMM, others get one GEMM each. Without ``per_block`` (ups
    computed from other parameters, whose backward takes any strides) one GEMM gives all blocks."""

    @staticmethod
    def forward(ctx, out: Tensor, hidden: Tensor, per_block: bool, *ups: Tensor) -> Tensor:
        block = torch.block_diag(*(up.to(out.dtype) for up in ups))
        ctx.per_block = per_block
        ctx.save_for_backward(hidden, block, *ups)
        return torch.addmm(out, hidden.to(out.dtype), block.T)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        hidden, block, *ups = ctx.saved_tensors
        grad_hidden = (grad @ block).to(hidden.dtype) if ctx.needs_input_grad[1] else None
        needed = [i for i, up in enumerate(ups) if ctx.needs_input_grad[3 + i] and up.shape[1] > 0]
        rows, cols = _offsets([up.shape[0] for up in ups]), _offsets([up.shape[1] for up in ups])
        grads: dict[int, Tensor] = {}
        if not ctx.per_block:
            full = grad.T @ hidden.to(grad.dtype)
            grads = {i: full[rows[i] : rows[i + 1], cols[i] : cols[i + 1]] for i in needed}
        elif needed:
            grads = _up_grads_in_one_gemm(grad, hidden, ups, needed, rows, cols)
            if grads is None:
                grads = {
                    i: _product_in_layout_of(
                        grad[:, rows[i] : rows[i + 1]].T, hidden[:, cols[i] : cols[i + 1]].to(grad.dtype), ups[i]
                    )
                    for i in needed
                }
        grad_ups = [grads[i].to(up.dtype) if i in grads else None for i, up in enumerate(ups)]
        return grad, grad_hidden, None, *grad_ups


def _offsets(sizes: list[int]) -> list[int]:
    """Start of each of ``sizes`` laid end to end, and the end: ``[0, s0, s0 + s1, …]``."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def _up_grads_in_one_gemm(
    grad: Tensor, hidden: Tensor, ups: list[Tensor], needed: list[int], rows: list[int], cols: list[int]
) -> dict[int, Tensor] | None:
    """The gradients ``grad_iᵀ hidden_i`` of the ``needed`` ups as one batched GEMM over strided views of ``grad``
    and ``hidden``, each in its up's row-major layout; None when the needed blocks are not equally shaped, row-major
    and evenly spaced in both (then one GEMM per block). q and v of a fused qkv (k unadapted, its rank 0) are."""
    width, rank = ups[needed[0]].shape
    # a list, not a generator: Dynamo fails to trace a generator in this backward and the compiled step breaks
    if not all([ups[i].shape == (width, rank) and ups[i].is_contiguous() for i in needed]):
        return None
    row_steps = [rows[b] - rows[a] for a, b in zip(needed[:-1], needed[1:], strict=True)] or [width]
    col_steps = [cols[b] - cols[a] for a, b in zip(needed[:-1], needed[1:], strict=True)] or [rank]
    if len(set(row_steps)) > 1 or set(col_steps) != {rank}:
        return None
    row_step, count, first = row_steps[0], len(needed), needed[0]
    span = grad[:, rows[first] : rows[first] + (count - 1) * row_step + width]
    grads = span.unfold(1, width, row_step).permute(1, 2, 0)  # (count, width, N)
    hiddens = hidden[:, cols[first] : cols[first] + count * rank].unflatten(1, (count, rank)).transpose(0, 1)
    products = torch.bmm(grads, hiddens.to(grad.dtype))  # (count, width, rank)
    return dict(zip(needed, products.unbind(), strict=True))


def _product_in_layout_of(a: Tensor, b: Tensor, like: Tensor) -> Tensor:
    """``a @ b``, computed as ``(bᵀ aᵀ)ᵀ`` when ``like`` is column-major, so that the result has ``like``'s strides."""
    if like.T.is_contiguous() and not like.is_contiguous():
        return (b.T @ a.T).T
    return a @ b


def qkv_low_rank(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    factors: list[tuple[Tensor, Tensor, Tensor | None] | None],
    ups_are_parameters: bool = True,
) -> Tensor:
    """timm's fused qkv ``x Wᵀ + b`` (one GEMM) plus each adapted block's ``(x downᵀ) upᵀ (+ x ⊙ d)``.

    ``factors`` holds per q, k, v block ``(down, up, diag)`` or None (unadapted). All downs run as one GEMM; the
    ups form one block-diagonal ``(3·out, Σr)`` matrix so that the branch is a single ``addmm`` into the output.
    ``ups_are_parameters``: the ups are parameters (or views of them), which get their gradients in their own
    layout (:class:`BlockDiagonalUpFunction`); False when they are computed from parameters (AOFT's bases).
    """
    width = weight.shape[0] // len(factors)
    downs = [f[0] for f in factors if f is not None]
    ups = [f[1] if f is not None else weight.new_zeros(width, 0) for f in factors]
    hidden = F.linear(x, torch.cat(downs) if len(downs) > 1 else downs[0])
    out = BlockDiagonalUpFunction.apply(_flat(F.linear(x, weight, bias)), _flat(hidden), ups_are_parameters, *ups)
    out = out.view(*x.shape[:-1], weight.shape[0])
    diags = [f[2] if f is not None else None for f in factors]
    if all(d is None for d in diags):
        return out
    if x.shape[-1] != width:
        raise ValueError(f"a diagonal term on qkv blocks needs square blocks, got in={x.shape[-1]}, out={width}")
    zeros = weight.new_zeros(width)
    diag = torch.stack([zeros if d is None else d.to(zeros.dtype) for d in diags])  # (3, width)
    blocks = torch.addcmul(out.unflatten(-1, (len(factors), width)), x.unsqueeze(-2).to(out.dtype), diag.to(out.dtype))
    return blocks.flatten(-2)


def qkv_low_rank_forward(fused: torch.nn.Linear, parts: list, x: Tensor) -> Tensor | None:
    """The fused-qkv forward of layers with ``low_rank_factors()`` (LoRA, AOFT, HTA's activation form): one base GEMM
    plus :func:`qkv_low_rank`. ``parts`` holds the adapted layer of q, k, v or None; returns None (use the generic
    path) when an adapted part has no low-rank form (e.g. LoRA with dropout)."""
    factors = [None if part is None else part.low_rank_factors() for part in parts]
    if any(part is not None and f is None for part, f in zip(parts, factors, strict=True)):
        return None
    return qkv_low_rank(x, fused.weight, fused.bias, factors)
