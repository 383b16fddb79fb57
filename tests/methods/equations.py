"""Dense reference forms of the papers' equations, written out entry by entry: the one copy every test compares with."""

from __future__ import annotations

import torch


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
