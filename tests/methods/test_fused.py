"""Fused kernels against their plain formulas: forward and every gradient, in float64 (the methods' test dtype) and
under bf16 autocast; the model-level fused paths (one-GEMM qkv, custom backward) against the merged-weight path."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from peftlab.methods import functional, fused, get_method
from peftlab.methods.layers import AdapterLayer, FusedQKV, base_forward
from tests.helpers import ATOL, RTOL, images, perturb, tiny_vit

BF16_TOL = {"atol": 0.05, "rtol": 0.05}


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def grads_of(fn, inputs: list[torch.Tensor], grad_out: torch.Tensor | None = None, autocast: bool = False):
    """Output of ``fn(*inputs)`` and the gradients of every input for a fixed random output gradient."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(*inputs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    grads = torch.autograd.grad(out, inputs, grad_out)
    return out, grads


def assert_same(fast, plain, inputs: list[torch.Tensor], autocast: bool = False) -> None:
    out_fast, grads_fast = grads_of(fast, leaves(*inputs), autocast=autocast)
    out_plain, grads_plain = grads_of(plain, leaves(*inputs), autocast=autocast)
    tol = BF16_TOL if autocast else {"atol": ATOL, "rtol": RTOL}
    if autocast:  # relative to each tensor's scale: bf16 keeps ~3 significant digits
        for a, b in zip((out_fast, *grads_fast), (out_plain, *grads_plain), strict=True):
            scale = b.float().abs().max().item()
            torch.testing.assert_close(a.float(), b.float(), atol=0.05 * scale, rtol=0.05)
        return
    torch.testing.assert_close(out_fast, out_plain, **tol)
    for a, b in zip(grads_fast, grads_plain, strict=True):
        torch.testing.assert_close(a, b, **tol)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def autocast_cases():
    return pytest.mark.parametrize(
        "autocast", [False, pytest.param(True, marks=pytest.mark.float32)], ids=["f64", "bf16"]
    )


@autocast_cases()
@pytest.mark.parametrize("dim, shape", [(-1, (2, 5, 6)), (1, (2, 6, 3, 3))], ids=["channels_last", "conv"])
def test_scale_shift_recomputing_backward_equals_the_formula(dim, shape, autocast):
    x, scale, shift = randn(*shape), 1 + 0.1 * randn(6, seed=1), 0.1 * randn(6, seed=2)
    plain = lambda x, s, b: functional.scale_shift(x, s, b, dim=dim)  # noqa: E731
    assert_same(lambda x, s, b: fused.scale_shift(x, s, b, dim=dim), plain, [x, scale, shift], autocast)


def test_scale_shift_saves_its_output_not_its_input():
    x = randn(4, 6).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fused.scale_shift(x * 2, torch.ones(6, requires_grad=True), torch.zeros(6, requires_grad=True))
    activations = [t for t in saved if t.shape == out.shape]
    assert [t.data_ptr() for t in activations] == [out.data_ptr()]


@autocast_cases()
@pytest.mark.parametrize("blocks", [1, 3], ids=["linear", "qkv"])
def test_rescaled_linear_equals_rlrr_eq19(blocks, autocast):
    dim_in, dim_out = 6, 4
    x, weight = randn(2, 5, dim_in), randn(blocks * dim_out, dim_in, seed=1)
    scale_out, scale_in, bias = randn(blocks * dim_out, seed=2), randn(blocks, dim_in, seed=3), randn(blocks * dim_out)

    def plain(x, s_out, s_in, b):
        rows = [
            functional.rlrr_weight(w, so, si)
            for w, so, si in zip(weight.chunk(blocks), s_out.chunk(blocks), s_in, strict=True)
        ]
        return F.linear(x, torch.cat(rows), b)

    fast = lambda x, s_out, s_in, b: fused.rescaled_linear(x, weight, s_out, s_in, b)  # noqa: E731
    assert_same(fast, plain, [x, scale_out, scale_in, bias], autocast)


def test_rescaled_linear_keeps_no_rescaled_weight():
    weight = randn(4, 6)
    scales = leaves(randn(4, seed=1), randn(6, seed=2))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused.rescaled_linear(randn(3, 6), weight, *scales, None)
    assert not any(t.shape == weight.shape and t.data_ptr() != weight.data_ptr() for t in saved)


@autocast_cases()
@pytest.mark.parametrize("dim_in, dim_out", [(6, 6), (6, 4), (4, 6)])
def test_low_rank_linear_with_diagonal_equals_the_formula(dim_in, dim_out, autocast):
    x, weight, bias = randn(2, 3, dim_in), randn(dim_out, dim_in, seed=1), randn(dim_out, seed=2)
    down, up, diag = randn(3, dim_in, seed=3), randn(dim_out, 3, seed=4), randn(min(dim_in, dim_out), seed=5)

    def plain(x, down, up, diag):
        square = functional.rectangular_diagonal(diag, dim_out, dim_in)
        return F.linear(x, weight + up @ down + square, bias)

    assert_same(
        lambda x, d, u, g: fused.low_rank_linear(x, weight, bias, d, u, g), plain, [x, down, up, diag], autocast
    )


@autocast_cases()
@pytest.mark.parametrize("v_rank", [2, 3], ids=["equal-ranks", "unequal-ranks"])
@pytest.mark.parametrize("ups_are_parameters", [True, False], ids=["per-block", "one-gemm"])
def test_qkv_low_rank_equals_per_block_updates(autocast, ups_are_parameters, v_rank):
    dim, rank = 5, 2
    x, weight, bias = randn(2, 3, dim), randn(3 * dim, dim, seed=1), randn(3 * dim, seed=2)
    q_down, q_up, v_diag = randn(rank, dim), randn(dim, rank), randn(dim)
    v_down, v_up = randn(v_rank, dim, seed=3), randn(dim, v_rank, seed=4)

    def fast(x, q_down, q_up, v_down, v_up, v_diag):
        factors = [(q_down, q_up, None), None, (v_down, v_up, v_diag)]
        return fused.qkv_low_rank(x, weight, bias, factors, ups_are_parameters)

    def plain(x, q_down, q_up, v_down, v_up, v_diag):
        w_q, w_k, w_v = weight.chunk(3)
        rows = [w_q + q_up @ q_down, w_k, w_v + v_up @ v_down + torch.diag(v_diag)]
        return F.linear(x, torch.cat(rows), bias)

    assert_same(fast, plain, [x, q_down, q_up, v_down, v_up, v_diag], autocast)


@pytest.mark.parametrize("adapted", [(0, 2), (1, 2), (0, 1), (0, 1, 2), (1,)], ids=str)
def test_qkv_up_gradients_of_equal_blocks_are_one_gemm_in_each_ups_layout(adapted):
    """Equally shaped ups of evenly spaced blocks (q and v of LoRA and DoRA) get their gradients from one batched GEMM
    over strided views; each equals its own ``grad_iᵀ hidden_i`` and is row-major like its parameter."""
    dim, rank = 5, 2
    ups = [randn(dim, rank, seed=i) if i in adapted else torch.zeros(dim, 0) for i in range(3)]
    grad, hidden = randn(7, 3 * dim, seed=5), randn(7, rank * len(adapted), seed=6)
    rows, cols = fused._offsets([dim] * 3), fused._offsets([up.shape[1] for up in ups])
    grads = fused._up_grads_in_one_gemm(grad, hidden, ups, list(adapted), rows, cols)
    assert grads is not None and sorted(grads) == list(adapted)
    for i in adapted:
        expected = grad[:, rows[i] : rows[i + 1]].T @ hidden[:, cols[i] : cols[i + 1]]
        torch.testing.assert_close(grads[i], expected, atol=ATOL, rtol=RTOL)
        assert grads[i].stride() == ups[i].stride()


def test_qkv_up_gradients_of_unequal_blocks_fall_back_to_one_gemm_each():
    ups = [randn(5, 2), torch.zeros(5, 0), randn(5, 3, seed=1)]
    rows, cols = fused._offsets([5, 5, 5]), fused._offsets([2, 0, 3])
    assert fused._up_grads_in_one_gemm(randn(4, 15), randn(4, 5), ups, [0, 2], rows, cols) is None


@pytest.mark.parametrize("dim_in, dim_out, rank, normalize", [(6, 6, 1, False), (6, 4, 0, True), (4, 7, 2, False)])
def test_hta_closed_form_equals_the_householder_chain_with_gradients(dim_in, dim_out, rank, normalize):
    params = [randn(dim_in), randn(min(dim_in, dim_out), seed=1), randn(dim_out, seed=2)]
    if rank:
        params += [randn(dim_in, rank, seed=3), randn(rank, dim_out, seed=4)]
    x = randn(3, dim_in, seed=5)

    def closed(*p):
        down, up = functional.hta_factors(*p, normalize=normalize)
        m = p[1].numel()
        return F.linear(F.linear(x, down), up) + F.pad(x[:, :m] * p[1], (0, dim_out - m))

    assert_same(closed, lambda *p: functional.hta_update(x, *p, normalize=normalize), params)


def test_hta_closed_form_is_batched_over_blocks():
    v_left, diag, v_right = randn(3, 5), randn(3, 5, seed=1), randn(3, 5, seed=2)
    down, up = functional.hta_factors(v_left, diag, v_right)
    for i in range(3):
        single = functional.hta_factors(v_left[i], diag[i], v_right[i])
        torch.testing.assert_close((down[i], up[i]), single, atol=ATOL, rtol=RTOL)


def test_ao_basis_is_batched_and_matches_single_vectors():
    q = randn(4, 9)
    batched = functional.ao_basis(q, 3)
    for i in range(4):
        torch.testing.assert_close(batched[i], functional.ao_basis(q[i], 3), atol=ATOL, rtol=RTOL)


@autocast_cases()
def test_oft_input_rotation_equals_the_rotated_weight(autocast):
    x, weight = randn(2, 3, 8), randn(5, 8, seed=1)
    skew = 0.3 * randn(2, 6, seed=2)

    def rotation(skew):
        return functional.cayley(functional.skew_symmetric(skew, 4))

    def fast(x, skew):
        return F.linear(functional.rotate_input(x, rotation(skew)), weight)

    def plain(x, skew):
        return F.linear(x, functional.rotate_input_blocks(weight, rotation(skew).to(weight.dtype)))

    assert_same(fast, plain, [x, skew], autocast)


# --- whole models: the fused paths against the merged-weight path (plain autograd through merged_weight) -----------

FUSED_METHODS = [
    ("lora", {}),
    ("aoft", {"use_scale": True}),
    ("hta", {"compute": "activation"}),
    ("hta", {"compute": "weight", "rank": 2}),
    ("rlrr", {}),
    ("ssf", {}),
    ("oft", {"block_size": 16}),
    ("dora", {"detach_norm": False}),  # the merged weight's norm is not detached: the same gradients
    ("arc", {"dropout": 0.0}),  # the merged weight has no dropout
]


def merged_weight_forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, FusedQKV):
        return F.linear(x, module.merged_weight(), module.merged_bias())
    return base_forward(module.base_layer, x, module.merged_weight(), module.merged_bias())


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy whose adapter layers all run ``base op(x; merged_weight, merged_bias)``."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, AdapterLayer):
            module.forward = lambda x, m=module: merged_weight_forward(m, x)
    return reference


@pytest.mark.parametrize("autocast", [False, pytest.param(True, marks=pytest.mark.float32)], ids=["f64", "bf16"])
@pytest.mark.parametrize("name, options", FUSED_METHODS, ids=[f"{n}{o}" for n, o in FUSED_METHODS])
def test_model_gradients_equal_the_merged_weight_path(name, options, autocast):
    model = get_method(name)(**options).apply(tiny_vit()).train()
    perturb(model)
    reference = plain_copy(model)
    outputs, grads = [], []
    for candidate in (model, reference):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = candidate(images())
        out.float().square().mean().backward()
        outputs.append(out.detach().float())
        grads.append({n: p.grad.float() for n, p in candidate.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and all(g.abs().sum() > 0 for g in grads[0].values() if g.numel() > 1)
    if autocast:
        # an absolute floor for gradients that are 0 in exact arithmetic (the k bias: softmax is shift-invariant)
        for a, b in zip((outputs[0], *grads[0].values()), (outputs[1], *grads[1].values()), strict=True):
            torch.testing.assert_close(a, b, atol=0.1 * b.abs().max().item() + 1e-4, rtol=0.1)
        return
    torch.testing.assert_close(outputs[0], outputs[1], atol=ATOL, rtol=RTOL)
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], atol=ATOL, rtol=RTOL, msg=key)


@pytest.mark.gpu
@pytest.mark.float32
@pytest.mark.parametrize("name, options", FUSED_METHODS, ids=[f"{n}{o}" for n, o in FUSED_METHODS])
def test_model_gradients_equal_the_merged_weight_path_on_cuda_under_bf16(name, options):
    model = get_method(name)(**options).apply(tiny_vit()).train()
    perturb(model)
    model, reference = model.cuda(), plain_copy(model).cuda()
    x = images().cuda()
    results = []
    for candidate in (model, reference):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = candidate(x)
        out.float().square().mean().backward()
        grads = [p.grad.float() for p in candidate.parameters() if p.requires_grad]
        results.append([out.detach().float(), *grads])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=0.1 * b.abs().max().item() + 1e-4, rtol=0.1)
