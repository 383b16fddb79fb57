"""Dense reference forms of the methods' equations (AOFT, DoRA, FacT, HTA, LoRA, OFT, RLRR, SSF, VPT, the ARC adapter,
timm's Mlp), written out from the papers entry by entry: the one place the method tests take them from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from peftlab.methods.aoft import AOFTLinear
from peftlab.methods.hta import HTALinear
from peftlab.methods.lora import LoraLayer
from peftlab.methods.rlrr import RLRRLinear
from peftlab.methods.ssf import ScaleShift


def dense_q(q: torch.Tensor) -> torch.Tensor:
    """AOFT's generator ``Q(q)`` (``D×D``) entry by entry: first row ``(q_0, -q_1, …)`` and lower-right block
    ``δ_ij - q_i q_j / (1 + q_0)`` as the summaries describe it, first column ``q`` (docs/methods.md §3.2)."""
    n = q.numel()
    out = torch.empty(n, n, dtype=q.dtype)
    out[0, 0] = q[0]
    for i in range(1, n):
        out[0, i], out[i, 0] = -q[i], q[i]
        for j in range(1, n):
            out[i, j] = float(i == j) - q[i] * q[j] / (1 + q[0])
    return out


def dense_mlp(mlp, x):
    """timm Mlp written out: GELU(x W₁ᵀ + b₁) W₂ᵀ + b₂."""
    return F.gelu(x @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias


def dense_adapter(u, s, b):
    """``h ↦ h (I + U diag(s) Uᵀ) + b`` as a dense matrix ``M`` and bias."""
    return torch.eye(u.shape[0]) + u @ torch.diag(s) @ u.T, b


def dense_rotation(free: torch.Tensor, block: int) -> torch.Tensor:
    """R = diag(R_1, …) with R_i = (I + Q_i)(I − Q_i)⁻¹, Q_i filled row by row from its strict upper triangle."""
    blocks = []
    for entries in free.detach().double():
        q = torch.zeros(block, block, dtype=torch.float64)
        k = 0
        for i in range(block):
            for j in range(i + 1, block):
                q[i, j], q[j, i] = entries[k], -entries[k]
                k += 1
        eye = torch.eye(block, dtype=torch.float64)
        blocks.append((eye + q) @ torch.linalg.inv(eye - q))
    return torch.block_diag(*blocks)


def aoft_projections(layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rank = layer.rank
    down = dense_q(layer.aoft_q_down.detach())[:, :rank]
    up = dense_q(layer.aoft_q_up.detach())[:, :rank]
    scale = layer.aoft_scale.detach().expand(rank)
    return down, scale, up


def aoft_weight(layer: AOFTLinear) -> torch.Tensor:
    """``W + AO(q_down) diag(λ) AO(q_up)ᵀ`` in the paper's ``in×out`` layout, returned as out×in."""
    down, scale, up = aoft_projections(layer)
    return (layer.base_layer.weight.detach().T + down @ torch.diag(scale) @ up.T).T


def dora_weight(w0: torch.Tensor, layer, alpha: float, rank: int) -> torch.Tensor:
    """Eq. 5 written out: m · (W₀ + ΔW) / ‖W₀ + ΔW‖_c, with the norm of each output unit's input weights."""
    directed = w0 + (alpha / rank) * layer.lora_b.detach() @ layer.lora_a.detach()
    norms = directed.pow(2).sum(dim=1, keepdim=True).sqrt()  # one norm per output row (over the inputs)
    return layer.dora_magnitude.detach().unsqueeze(1) * directed / norms


def fact_increment(factors, scale: float) -> torch.Tensor:
    """ΔW ∈ R^{12L×d×d} in the paper's ``x W`` layout: Eq. 9 (TT) or Eq. 11 (TK), index by index."""
    u, v = factors.fact_u, factors.fact_v
    if hasattr(factors, "fact_sigma"):
        return scale * torch.einsum("iab,ja,kb->ijk", factors.fact_sigma, u, v)
    return scale * torch.einsum("abc,ia,jb,kc->ijk", factors.fact_core, factors.fact_p, u, v)


def householder_dense(v: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Eq. 3, ``I - v vᵀ``; the textbook ``I - 2 v vᵀ / ‖v‖²`` when ``normalize``."""
    factor = 2 / v.dot(v) if normalize else 1.0
    return torch.eye(v.numel()) - factor * torch.outer(v, v)


def hta_weight(layer: HTALinear, normalize: bool = False) -> torch.Tensor:
    """Eq. 6, ``W + W_down W_up + H(v_left) diag(d) H(v_right)`` in the paper's in×out layout, returned out×in."""
    w = layer.base_layer.weight.detach().T
    h_left = householder_dense(layer.hta_v_left.detach(), normalize)
    h_right = householder_dense(layer.hta_v_right.detach(), normalize)
    w_hta = h_left @ torch.diag(layer.hta_diag.detach()) @ h_right
    low_rank = 0 if layer.hta_down is None else layer.hta_down.detach() @ layer.hta_up.detach()
    return (w + low_rank + w_hta).T


def rlrr_linear(layer: RLRRLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 19-20 in the paper's layout ``X W`` (``W ∈ R^{in×out}``), returned in PyTorch's layout."""
    w = layer.base_layer.weight.detach().T
    s_left, s_right = layer.rlrr_scale_in.detach(), layer.rlrr_scale_out.detach()
    w_new = w + s_left.view(-1, 1) * w * s_right.view(1, -1)  # W + s_left ⊙ W ⊙ s_rightᵀ
    return w_new.T, layer.base_layer.bias.detach() + layer.rlrr_shift.detach()  # b + f


def add_scale_shift(module: torch.nn.Module, layer: ScaleShift, channel_dim: int = -1) -> None:
    """SSF ``γ ⊙ op(x) + β`` on the output of ``module`` (a forward hook on the reference model)."""
    shape = [-1, 1, 1] if channel_dim == 1 else [-1]
    scale, shift = layer.ssf_scale.detach().view(shape), layer.ssf_shift.detach().view(shape)
    module.register_forward_hook(lambda _, __, out: out * scale + shift)


def lora_update(layer: LoraLayer, alpha: float, rank: int) -> torch.Tensor:
    """The paper's ΔW = (α/r) B A, written out (PyTorch layout out×in)."""
    return (alpha / rank) * layer.lora_b.detach() @ layer.lora_a.detach()


def oft_rotated(w_torch: torch.Tensor, layer, block: int) -> torch.Tensor:
    """The paper's W = R W⁰ with W⁰ = W_torchᵀ ∈ R^{in×out}, returned in PyTorch layout."""
    w0 = w_torch.detach().double().T
    return (dense_rotation(layer.oft_skew, block) @ w0).T.float()


def vpt_forward(base, prompts, deep: bool, x):
    """VPT §3.2 on the frozen model's components: ``[x₀, P, E₀]`` into block 1, for deep ``[x_{i-1}, P_{i-1},
    E_{i-1}]`` into every later block, prompt outputs dropped before the final norm and the head."""
    tokens = base.norm_pre(base.patch_drop(base._pos_embed(base.patch_embed(x))))
    batch, p = tokens.shape[0], prompts.shape[1]
    for i, block in enumerate(base.blocks):
        if i == 0 or deep:
            rest = tokens[:, 1:] if i == 0 else tokens[:, 1 + p :]
            tokens = torch.cat([tokens[:, :1], prompts[i if deep else 0].expand(batch, -1, -1), rest], dim=1)
        tokens = block(tokens)
    features = base.norm(torch.cat([tokens[:, :1], tokens[:, 1 + p :]], dim=1))
    return base.forward_head(features)
