"""Dense reference forms of the equations (AOFT generator, timm Mlp, ARC adapter, OFT rotation), written out from
the papers entry by entry: the one place the method tests take them from."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
