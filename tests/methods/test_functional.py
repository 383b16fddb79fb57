"""The pure math of SSF, RLRR, HTA and AOFT against dense matrices written out from the papers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peftlab.methods.functional import (
    ao_basis,
    aoft_update,
    fold_scale_shift,
    householder,
    hta_transform,
    hta_update,
    rlrr_weight,
    scale_shift,
)
from tests.helpers import ATOL, RTOL
from tests.methods.equations import dense_q


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed))


@pytest.mark.parametrize(
    "op, x, dim",
    [
        (nn.Linear(6, 5), randn(3, 6), -1),
        (nn.Linear(6, 5, bias=False), randn(3, 6), -1),
        (nn.Conv2d(3, 5, 2, stride=2), randn(2, 3, 4, 4), 1),
        (nn.LayerNorm(5), randn(3, 5), -1),
    ],
)
def test_fold_scale_shift_equals_scale_after_the_op(op, x, dim):
    op, x = op.double(), x.double()  # built at collection, before the float64 default applies
    with torch.no_grad():
        for p in op.parameters():
            p.add_(randn(*p.shape, seed=3))
    scale, shift = randn(5, seed=1), randn(5, seed=2)
    weight, bias = fold_scale_shift(op.weight, op.bias, scale, shift)
    folded = {
        nn.Linear: lambda: nn.functional.linear(x, weight, bias),
        nn.Conv2d: lambda: op._conv_forward(x, weight, bias),
    }
    folded[nn.LayerNorm] = lambda: nn.functional.layer_norm(x, (5,), weight, bias, op.eps)
    torch.testing.assert_close(folded[type(op)](), scale_shift(op(x), scale, shift, dim), atol=ATOL, rtol=RTOL)


def test_rlrr_weight_is_eq19_elementwise():
    weight, s_out, s_in = randn(4, 3), randn(4, seed=1), randn(3, seed=2)
    expected = torch.empty(4, 3)
    for o in range(4):
        for i in range(3):
            expected[o, i] = weight[o, i] * (
                1 + s_out[o] * s_in[i]
            )  # Eq. 19: W_ij (1 + s_left_i s_right_j), transposed
    torch.testing.assert_close(rlrr_weight(weight, s_out, s_in), expected, atol=ATOL, rtol=RTOL)


def test_householder_is_eq3_without_normalisation():
    v, x = randn(6), randn(4, 6, seed=1)
    dense = torch.eye(6) - torch.outer(v, v)
    torch.testing.assert_close(householder(x, v), x @ dense, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(dense.T @ dense, torch.eye(6), atol=1e-3), "I - vvᵀ is not orthogonal for ‖v‖² != 2"
    v2 = v * (2 / v.square().sum()).sqrt()
    eye = torch.eye(6)
    torch.testing.assert_close(householder(eye, v2).T @ householder(eye, v2), eye, atol=ATOL, rtol=RTOL)


def test_householder_normalized_is_the_textbook_reflection():
    v, x = randn(6), randn(4, 6, seed=1)
    reflection = torch.eye(6) - 2 * torch.outer(v, v) / v.dot(v)
    torch.testing.assert_close(householder(x, v, normalize=True), x @ reflection, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dim_in, dim_out", [(5, 5), (6, 4), (4, 6)])
def test_hta_update_is_eq6_with_dense_matrices(dim_in, dim_out):
    v_l, v_r, d = randn(dim_in), randn(dim_out, seed=1), randn(min(dim_in, dim_out), seed=2)
    down, up, x = randn(dim_in, 2, seed=3), randn(2, dim_out, seed=4), randn(3, dim_in, seed=5)
    h_l = torch.eye(dim_in) - torch.outer(v_l, v_l)
    h_r = torch.eye(dim_out) - torch.outer(v_r, v_r)
    diag = torch.zeros(dim_in, dim_out)
    diag[range(d.numel()), range(d.numel())] = d
    torch.testing.assert_close(hta_transform(x, v_l, d, v_r), x @ (h_l @ diag @ h_r), atol=ATOL, rtol=RTOL)
    expected = x @ (down @ up + h_l @ diag @ h_r)
    torch.testing.assert_close(hta_update(x, v_l, d, v_r, down, up), expected, atol=ATOL, rtol=RTOL)


def test_ao_basis_is_the_first_columns_of_q():
    q = randn(7)
    torch.testing.assert_close(ao_basis(q, 3), dense_q(q)[:, :3], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ao_basis(q, 7), dense_q(q), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ao_basis(q, 1), q.view(-1, 1))


def test_ao_basis_is_orthogonal_for_a_unit_vector_and_only_approximately_otherwise():
    q = randn(9)
    full = ao_basis(q / q.norm(), 9)
    torch.testing.assert_close(full.T @ full, torch.eye(9), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(full @ full.T, torch.eye(9), atol=ATOL, rtol=RTOL)
    scaled = ao_basis(1.1 * q / q.norm(), 9)
    assert not torch.allclose(scaled.T @ scaled, torch.eye(9), atol=1e-2)


def test_ao_basis_stays_finite_at_the_singular_point():
    q = torch.zeros(5, requires_grad=True)
    with torch.no_grad():
        q[0], q[1] = -1.0, 0.5
    basis = ao_basis(q, 3)
    basis.sum().backward()
    assert torch.isfinite(basis).all() and torch.isfinite(q.grad).all()


def test_aoft_update_is_the_low_rank_product():
    down, up, scale, x = randn(6, 3), randn(5, 3, seed=1), randn(3, seed=2), randn(4, 6, seed=3)
    expected = x @ (down @ torch.diag(scale) @ up.T)
    torch.testing.assert_close(aoft_update(x, down, scale, up), expected, atol=ATOL, rtol=RTOL)
