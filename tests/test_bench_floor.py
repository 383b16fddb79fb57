"""The math floor of a training step (experiments/bench_floor.py): derived from the layer shapes and each method's
equation, checked here against hand-derived FLOP counts on a tiny ViT."""

from __future__ import annotations

import pytest
import torch

from peftlab.methods import get_method
from tests.helpers import DIM, TINY_VIT, load_experiment, tiny_vit

BATCH = 2
TOKENS = (TINY_VIT["img_size"] // TINY_VIT["patch_size"]) ** 2 + 1
ROWS = BATCH * TOKENS
DEPTH, HIDDEN = TINY_VIT["depth"], int(DIM * TINY_VIT["mlp_ratio"])


@pytest.fixture(scope="module")
def floor():
    return load_experiment("bench_floor")


def flops(floor, method: str, **options) -> dict[str, int]:
    plain = tiny_vit()
    adapted = tiny_vit() if method in ("full", "frozen") else get_method(method)(**options).apply(tiny_vit())
    return floor.step_flops(plain, adapted, method, BATCH, TOKENS)


def block_weights() -> int:
    """in·out summed over qkv, proj, fc1, fc2 of one block."""
    return 3 * DIM * DIM + DIM * DIM + 2 * DIM * HIDDEN


def test_frozen_step_is_forward_and_input_gradient_gemms_plus_attention(floor):
    frozen = flops(floor, "frozen")
    patch = 2 * BATCH * (TOKENS - 1) * 3 * TINY_VIT["patch_size"] ** 2 * DIM
    head = 6 * BATCH * DIM * 5
    expected = DEPTH * (4 * ROWS * block_weights() + 12 * BATCH * TOKENS**2 * DIM) + patch + head
    assert frozen["frozen"] == frozen["step"] == expected


def test_weight_shaped_updates_add_the_weight_gradient_gemm(floor):
    base = flops(floor, "frozen")["step"]
    rlrr = flops(floor, "rlrr")["step"]
    assert rlrr - base == DEPTH * 2 * ROWS * block_weights()  # q, k, v, proj, fc1, fc2 all rescaled
    full = flops(floor, "full")["step"]
    assert full > rlrr  # full also needs the patch-embedding weight gradient


def test_rank_r_branches_and_elementwise_methods(floor):
    base = flops(floor, "frozen")["step"]
    rank = 4
    lora = flops(floor, "lora", rank=rank)["step"]
    assert lora - base == DEPTH * 2 * 6 * ROWS * rank * (DIM + DIM)  # q and v
    hta = flops(floor, "hta", compute="activation", rank=1)["step"]
    assert hta - base == DEPTH * 4 * 6 * ROWS * (2 + 1) * 2 * DIM  # q, k, v, proj at rank 2 + r
    hta_weight = flops(floor, "hta", compute="weight")["step"]
    assert hta_weight - base == DEPTH * 4 * 2 * ROWS * DIM * DIM
    assert flops(floor, "ssf")["step"] == flops(floor, "bitfit")["step"] == base
    oft = flops(floor, "oft", block_size=16)["step"]
    assert oft - base == DEPTH * 2 * 6 * ROWS * DIM * 16


def test_dispatch_counter_counts_kernels_and_metadata_ops(floor):
    x = torch.randn(3, 4, requires_grad=True)
    with floor.DispatchCounter() as counter:
        (x.t() @ x).sum().backward()
    assert counter.kernel >= 3 and counter.all > counter.kernel


def test_launch_counter_counts_runtime_and_driver_launches_and_graph_replays(floor):
    names = ["cudaLaunchKernel", "cudaLaunchKernelExC_v11060", "cuLaunchKernel", "cudaGraphLaunch", "aten::mm",
             "cudaMemcpyAsync", "triton_poi_fused_add_0", "cudaStreamSynchronize"]  # fmt: skip
    assert sum(floor.launch_calls(names).values()) == 4


@pytest.mark.gpu
def test_launch_counter_sees_one_launch_per_eager_kernel_on_cuda(floor):
    x = torch.randn(64, 64, device="cuda")
    x @ x  # warm-up (cuBLAS handle)
    with floor.LaunchCounter() as counter:
        for _ in range(3):
            x = x @ x
    ran = sum(counter.kernels.values())
    # eager: every host launch runs one kernel; more launches than kernels would mean a launch counted twice (a runtime
    # call and the driver call under it, say), and the bench's dispatch column would be inflated
    assert counter.count == ran >= 3, f"{counter.count} launches {dict(counter.calls)}, {ran} kernels {counter.kernels}"


@pytest.mark.slow
def test_compiled_kernel_counter_sees_inductor_kernels_and_the_gemms_left_to_aten(floor):
    floor.enable_compiled_kernel_events()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)

    def step(m):
        m.zero_grad(set_to_none=True)
        m(x).square().mean().backward()

    step(model)
    with floor.DispatchCounter() as eager:
        step(model)
    torch._dynamo.reset()
    model.compile()
    step(model)
    with floor.CompiledKernelCounter() as compiled:
        step(model)
    assert compiled.ops["inductor"] >= 2  # GELU, LayerNorm and the loss fused into generated kernels
    assert compiled.ops["mm"] + compiled.ops["addmm"] >= 4  # forward and gradient GEMMs stay ATen calls
    assert compiled.kernel < eager.kernel


#: ATen ops that are a GEMM, a solve or a convolution (what the dispatch floor counts one kernel each)
GEMM_OPS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "linalg_solve_ex",
            "_linalg_solve_ex", "linalg_solve", "linalg_lu_solve"}  # fmt: skip


def adapted(method: str):
    if method == "full":
        return tiny_vit()
    if method == "frozen":  # the bench's frozen-backbone reference: the head and the position embedding train
        model = tiny_vit().requires_grad_(False)
        model.head.requires_grad_(True)
        return model
    return get_method(method)().apply(tiny_vit())


def gemm_kernels(floor, model) -> int:
    """GEMM-class ops of an eager forward + backward, the position embedding trained as in the frozen reference (so
    every block's input gradient is computed, as the floor assumes)."""
    model.pos_embed.requires_grad_(True)
    x = torch.randn(BATCH, 3, TINY_VIT["img_size"], TINY_VIT["img_size"])
    with floor.DispatchCounter() as counter:
        model(x).square().mean().backward()
    return sum(n for name, n in counter.ops.items() if name in GEMM_OPS)


def test_dispatch_floor_per_method_from_its_branches(floor):
    """6 per rank-r branch (q, k, v of the fused qkv one branch), 1 per RLRR linear, 6 per OFT rotation, 1 more for
    DoRA's BA (3 with the norm's gradient); FacT's four branches per block plus its factors built once per step;
    every block weight's gradient and the patch embedding's for full fine-tuning."""
    per_block = {"lora": 6, "aoft": 6, "oft": 6, "dora": 7, "hta": 12, "rlrr": 4, "arc": 12, "adapter": 6,
                 "ssf": 0, "bitfit": 0, "vpt_deep": 0}  # fmt: skip
    for method, kernels in per_block.items():
        assert floor.added_kernels(adapted(method), method) == DEPTH * kernels, method
    assert floor.added_kernels(adapted("fact_tt"), "fact_tt") == DEPTH * 4 * 6 + 3  # U·Σ_i
    assert floor.added_kernels(adapted("fact_tk"), "fact_tk") == DEPTH * 4 * 6 + 6  # C ×₁ P_i, then U·Σ_i
    assert floor.added_kernels(adapted("full"), "full") == DEPTH * 4 + 1
    dora_norm_trained = get_method("dora")(detach_norm=False).apply(tiny_vit())
    assert floor.added_kernels(dora_norm_trained, "dora") == DEPTH * 9


def test_dispatch_floor_is_a_lower_bound_on_every_methods_gemms(floor):
    """A floor that claimed fewer kernels than a method's formula can be computed with would be no floor: every
    method's eager step runs at least the GEMMs the floor adds to the frozen step's."""
    from peftlab.methods import list_methods

    frozen = gemm_kernels(floor, adapted("frozen"))
    for method in ["full", *list_methods()]:
        model = adapted(method)
        assert gemm_kernels(floor, model) - frozen >= floor.added_kernels(model, method), method
