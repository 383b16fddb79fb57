"""``trainer.compile``: a torch.compile'd model computes what the eager one does, through every fused kernel
(custom autograd functions included), forward and every trainable gradient, in float64."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from peftlab.build import compile_in_place, compile_mode
from peftlab.methods import get_method, list_methods
from peftlab.options import ConfigError
from tests.helpers import ATOL, RTOL, images, load_experiment, perturb, tiny_vit, without_dropout

#: the methods whose training step runs a fused path: a kernel of ``peftlab.methods.fused``, a custom autograd
#: function, or a GEMM with its element-wise neighbours folded in (ARC's residual and bias in the accumulator)
FUSED_METHODS = ["ssf", "rlrr", "hta", "aoft", "oft", "lora", "dora", "arc", "fact_tt"]


def loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_methods())
def test_compiled_step_equals_eager(name):
    """Every method, fused or not: one graph, no break (the precondition of ``reduce-overhead`` capturing the whole
    step as CUDA graphs), and the eager step's outputs and gradients."""
    eager = without_dropout(name).apply(tiny_vit(depth=1))
    perturb(eager)
    eager.train()
    compiled = copy.deepcopy(eager)
    compile_in_place(compiled)
    x, y = images(4, seed=3), torch.tensor([0, 1, 2, 3])
    logits, grads = loss_and_grads(eager, x, y)
    counters.clear()
    compiled_logits, compiled_grads = loss_and_grads(compiled, x, y)
    # the model really ran as one compiled graph: a graph break would leave the fused kernels' neighbours unfused
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(compiled_logits, logits, atol=ATOL, rtol=RTOL)
    assert compiled_grads.keys() == grads.keys() and grads
    for key, grad in grads.items():
        torch.testing.assert_close(compiled_grads[key], grad, atol=ATOL, rtol=RTOL, msg=key)


@pytest.mark.parametrize(
    ("value", "mode"), [(False, None), (None, None), (True, "default"), ("reduce-overhead", "reduce-overhead")]
)
def test_compile_option_maps_to_a_torch_compile_mode(value, mode):
    assert compile_mode(value) == mode


def test_unknown_compile_mode_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"trainer.compile='fast' is invalid: expected one of true, false, default"):
        compile_mode("fast")


@pytest.mark.gpu
@pytest.mark.float32
@pytest.mark.parametrize("name", FUSED_METHODS)
def test_cuda_graphs_step_equals_eager_on_cuda(name):
    """``trainer.compile=reduce-overhead``: the step replays as CUDA graphs (after its recording steps) and still
    computes the eager step's outputs and gradients."""
    eager = without_dropout(name).apply(tiny_vit(depth=1))
    perturb(eager)
    eager = eager.train().cuda()
    compiled = copy.deepcopy(eager)
    compile_in_place(compiled, "reduce-overhead")
    x, y = images(4, seed=3).cuda(), torch.tensor([0, 1, 2, 3]).cuda()
    logits, grads = loss_and_grads(eager, x, y)
    for _ in range(3):  # warm-up and recording runs, then a replay
        compiled_logits, compiled_grads = loss_and_grads(compiled, x, y)
        compiled_logits, compiled_grads = compiled_logits.clone(), {k: g.clone() for k, g in compiled_grads.items()}
    torch.testing.assert_close(compiled_logits, logits, atol=1e-4, rtol=1e-3)
    for key, grad in grads.items():
        torch.testing.assert_close(compiled_grads[key], grad, atol=1e-4, rtol=1e-3, msg=key)


def replay_launches(model, x, y) -> int:
    """Host-side kernel launches of one training step (forward + backward) of a ``reduce-overhead`` model, counted
    after its warm-up and recording steps: a graph replay is one launch, an op outside the graph one per kernel."""
    for _ in range(3):
        loss_and_grads(model, x, y)
    with load_experiment("bench_floor").LaunchCounter() as launches:
        loss_and_grads(model, x, y)
    return launches.count


@pytest.fixture(scope="module")
def frozen_replay_launches():
    """The frozen-backbone step (the bench's reference: the head and the position embedding train) under CUDA graphs."""
    frozen = get_method("linear")().apply(tiny_vit(depth=1))
    frozen.pos_embed.requires_grad_(True)
    frozen = frozen.train().cuda()
    compile_in_place(frozen, "reduce-overhead")
    return replay_launches(frozen, images(4, seed=3).cuda(), torch.tensor([0, 1, 2, 3]).cuda())


@pytest.mark.gpu
@pytest.mark.parametrize("name", list_methods())
def test_cuda_graphs_launch_a_step_in_at_most_one_and_a_half_times_the_frozen_steps_host_calls(
    name, frozen_replay_launches
):
    """The dispatch target (host-side cost per step ≤ 1.5× the frozen step's) with ``trainer.compile=reduce-overhead``.
    Fails when a method's graph is not captured (a graph break, or cudagraphs skipped: a CPU tensor, a mutated input),
    as every kernel is then launched from the host again."""
    model = without_dropout(name).apply(tiny_vit(depth=1))
    model = model.train().cuda()
    compile_in_place(model, "reduce-overhead")
    launches = replay_launches(model, images(4, seed=3).cuda(), torch.tensor([0, 1, 2, 3]).cuda())
    print(f"{name}: {launches} launches per replayed step, frozen {frozen_replay_launches}")
    assert launches <= 1.5 * frozen_replay_launches, f"{name}: {launches} launches vs frozen {frozen_replay_launches}"
