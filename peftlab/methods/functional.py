"""Pure math of the methods, one function per equation. Wrappers in the method modules only call these.

Convention: PyTorch weights are ``W ∈ R^{out×in}`` and a linear layer computes ``y = x Wᵀ + b``; equations from the
papers (written ``X W`` with ``W ∈ R^{in×out}``) are transposed accordingly in each docstring.
"""

from __future__ import annotations

from torch import Tensor


def scale_shift(x: Tensor, scale: Tensor, shift: Tensor, dim: int = -1) -> Tensor:
    """SSF (Lian et al., NeurIPS 2022, Eq. 2): ``y = γ ⊙ x + β`` along channel dimension ``dim``."""
    if dim != -1 and dim != x.ndim - 1:
        shape = [1] * x.ndim
        shape[dim] = -1
        scale, shift = scale.view(shape), shift.view(shape)
    return x * scale + shift
