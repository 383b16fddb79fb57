"""The floor of a training step derived from the math, the dispatch cost of a step, and the pre-change code path.

* :func:`step_flops`: the GEMM FLOPs a training step of an adapted timm ViT needs forward and backward, from the
  layer shapes and each method's equation, never from a measurement. The frozen step needs, per linear, the forward
  GEMM and the input-gradient GEMM (``4·N·in·out``) plus attention (``12·B·T²·D`` per block); a method adds only what
  its own math requires: the weight-gradient GEMM ``2·N·in·out`` where the update is weight-shaped (full fine-tuning,
  RLRR, HTA's weight form), ``6·N·r·(in+out)`` for a rank-``r`` branch (LoRA, AOFT, HTA's activation form with rank
  ``2 + r``, adapters, ARC, FacT), ``6·N·in·b`` for OFT's input-side block rotation, extra tokens for VPT, and nothing
  for the O(N·D) element-wise methods (SSF, BitFit). The floor of a step is ``frozen step × flops / frozen flops``.
* :func:`added_kernels`: the kernels a method's math adds to the frozen step's, at one kernel per GEMM (or solve)
  and every element-wise pass fused into a neighbour: 6 per rank-``r`` branch (forward down and up GEMMs; backward
  the hidden gradient, the input gradient through the down factor and both factor gradients), with q, k and v of a
  fused qkv one branch (their downs stacked, their ups block-diagonal); 1 per rescaled linear (RLRR's weight-gradient
  GEMM); 3 + 3 per OFT rotation (the block-diagonal ``bmm`` forward, its input and rotation gradients; the Cayley
  solve forward, its backward solve and GEMM); for DoRA's ``BA`` (the weight norm) 1, or 3 when the norm is not
  detached; 3 for each factor FacT builds once per step for all layers; 0 for element-wise methods and prompts.
  The dispatch floor of a step is the frozen step's kernels + these: what no fusion below whole-step graph capture
  can go under.
* :class:`DispatchCounter`: the ATen ops a forward + backward dispatches (a ``TorchDispatchMode``): exact and
  independent of machine load. ``kernel`` excludes metadata-only ops (views, transposes, detach), ``all`` includes
  them. The optimiser step is excluded (one fused/foreach kernel per group on a GPU).
* :class:`LaunchCounter`: on CUDA, the host-side kernel launches of a step (a CUDA-graph replay counts one).
* :func:`load_before`: a git revision's ``peftlab`` package imported as ``peftlab_before``, so the code before a change
  is timed in the same process and interleaved with the code after it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parent.parent
FLOOR_DEFINITION = (
    "GEMM FLOPs of a step from the layer shapes and the method's equation (frozen: forward + input-gradient GEMM per "
    "linear and attention; + weight-gradient GEMM where the update is weight-shaped: full, RLRR, HTA weight form; "
    "+ 6·N·r·(in+out) per rank-r branch: LoRA, AOFT, HTA activation form (rank 2 + r), adapters, ARC, FacT; "
    "+ 6·N·in·b for OFT's input-side rotation; + prompt tokens for VPT; O(N·D) element-wise work not counted), "
    "over the frozen step's."
)
KERNEL_FLOOR_DEFINITION = (
    "the frozen step's kernels plus those the method's math adds at one kernel per GEMM or solve, every element-wise "
    "pass fused (6 per rank-r branch, q, k and v of a fused qkv one branch; 1 per RLRR linear; 6 per OFT rotation; "
    "DoRA's BA 1, 3 with the norm not detached; 3 per factor FacT builds once per step; 0 for element-wise methods "
    "and prompts), over the frozen step's: what no fusion short of capturing the whole step as one graph goes under."
)
METADATA_OPS = frozenset(
    "view _unsafe_view t transpose permute expand slice select unsqueeze squeeze detach alias as_strided unflatten "
    "reshape split split_with_sizes unbind chunk narrow diagonal promote_types".split()
)


# --- dispatch cost ---------------------------------------------------------------------------------------------------


class DispatchCounter(TorchDispatchMode):
    """Counts every ATen op dispatched inside the context (forward and the backward it triggers)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def all(self) -> int:
        return sum(self.ops.values())

    @property
    def kernel(self) -> int:
        return sum(n for name, n in self.ops.items() if name not in METADATA_OPS)


def enable_compiled_kernel_events() -> None:
    """Make Inductor's generated CPU kernels visible to the profiler (set before compiling) and let every candidate
    keep its compiled graphs (one process compiles many models of the same timm code), each specialised to its own
    shapes: with automatic dynamic shapes a candidate compiled after another with the same code but other sizes (FacT-TT
    after FacT-TK) would get a dynamic-shape graph with extra size arithmetic, and its counts would depend on the
    order of the candidates."""
    import torch._dynamo
    import torch._inductor.config

    torch._inductor.config.cpp.enable_kernel_profile = True
    torch._dynamo.config.automatic_dynamic_shapes = False
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 4096)


class CompiledKernelCounter:
    """Kernels a compiled step runs, from the profiler: each Inductor-generated kernel plus each outermost ATen call
    (the GEMMs and attention Inductor leaves to ATen, and any op outside the graph), views and the like excluded.

    (A dispatch mode cannot count a compiled step: Dynamo runs the model eagerly while one is active.)
    """

    def __enter__(self) -> CompiledKernelCounter:
        from torch.profiler import ProfilerActivity, profile

        self._profile = profile(activities=[ProfilerActivity.CPU])
        self._profile.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._profile.__exit__(*exc)
        self.ops = Counter(_kernel_name(e) for e in self._profile.events() if _is_kernel(e))
        self.all = self.kernel = sum(self.ops.values())


#: host-side launch calls of the CUDA runtime and driver (version suffixes such as ``_v11060`` vary)
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchCooperativeKernel", "cudaGraphLaunch")


class LaunchCounter:
    """Kernel launches a CUDA step issues from the host, from the profiler's runtime/driver API events: what bounds a
    short GPU step. A CUDA-graph replay (``trainer.compile=reduce-overhead``) is one launch for the whole graph."""

    def __enter__(self) -> LaunchCounter:
        from torch.profiler import ProfilerActivity, profile

        self._profile = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        self._profile.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch
        from torch.autograd import DeviceType

        torch.cuda.synchronize()
        self._profile.__exit__(*exc)
        events = self._profile.events()
        #: by API call, and the kernels the device ran by name: where the launches come from
        self.calls = launch_calls(event.name for event in events)
        self.count = sum(self.calls.values())
        self.kernels = Counter(event.name for event in events if event.device_type == DeviceType.CUDA)


def launch_calls(names: Any) -> Counter[str]:
    """The profiler event ``names`` that are launch calls (:data:`LAUNCH_CALLS`), counted by name."""
    return Counter(name for name in names if name.startswith(LAUNCH_CALLS))


def _is_kernel(event: Any) -> bool:
    if "cpp_fused" in event.name or event.name.startswith("triton_"):
        return True
    if not event.name.startswith("aten::") or event.name[6:] in METADATA_OPS:
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def _kernel_name(event: Any) -> str:
    return "inductor" if not event.name.startswith("aten::") else event.name[6:]


# --- the floor -------------------------------------------------------------------------------------------------------


def _linear_shape(layer: nn.Module) -> tuple[int, int]:
    base = getattr(layer, "base_layer", layer)
    return base.in_features, base.out_features


def low_rank_flops(rows: int, dim_in: int, dim_out: int, rank: int) -> int:
    """A rank-``r`` branch ``(x Aᵀ) Bᵀ``: forward, input gradient and both factor gradients (3 × the forward)."""
    return 6 * rows * rank * (dim_in + dim_out)


def adapter_flops(layer: nn.Module, rows: int) -> int:
    """Extra FLOPs of one adapter layer over the frozen layer it wraps, from its method's equation."""
    kind = type(layer).__name__
    if kind in ("FusedQKV",):
        return sum(adapter_flops(p, rows) for p in layer.parts.values() if hasattr(p, "base_layer"))
    if kind in ("ScaleShift", "LinearSlice"):
        return 0  # O(N·D) element-wise
    if kind == "RLRRLinear":
        return 2 * rows * _prod(_linear_shape(layer))  # the weight-gradient GEMM its scale vectors need
    if kind == "HTALinear":
        if layer.compute == "weight":
            return 2 * rows * _prod(_linear_shape(layer))
        rank = 2 + (0 if layer.hta_down is None else layer.hta_down.shape[1])
        return low_rank_flops(rows, *_linear_shape(layer), rank)
    if kind in ("LoraLayer", "DoraLayer"):
        dim_in, dim_out = _linear_shape(layer)
        rank = layer.lora_a.shape[0]
        dense = 2 * dim_in * dim_out * rank if kind == "DoraLayer" else 0  # ‖W + BA‖ needs BA once per step
        return low_rank_flops(rows, dim_in, dim_out, rank) + dense
    if kind == "AOFTLinear":
        return low_rank_flops(rows, *_linear_shape(layer), layer.rank)
    if kind == "OftLayer":
        return 6 * rows * _linear_shape(layer)[0] * layer.block_size
    if kind == "AOFTAdapter":
        return low_rank_flops(rows, layer.aoft_q_down.numel(), layer.aoft_q_up.numel(), layer.rank)
    if kind == "BottleneckAdapter":
        rank, dim_in = layer.adapter_down_weight.shape
        return low_rank_flops(rows, dim_in, layer.adapter_up_weight.shape[0], rank)
    if kind == "ArcLayer":
        dim = layer.arc_bias.numel()
        return low_rank_flops(rows, dim, dim, layer.arc_scale.numel())
    if kind == "FactLayer":  # per d×d slice: x U (r), core (r×r), V (r): a rank-r branch over the whole weight
        dim_in, dim_out = _linear_shape(layer)
        return low_rank_flops(rows, dim_in, dim_out, layer._factors.fact_u.shape[1])
    if kind == "PromptedBlocks":
        return 0  # the prompt tokens are counted as extra rows of the frozen blocks
    raise ValueError(f"no floor derivation for adapter layer {kind}; add one to experiments/bench_floor.py")


#: kernels a rank-r branch adds: forward down and up GEMMs; backward the hidden gradient, the input gradient through
#: the down factor, and the gradient of each factor
LOW_RANK_KERNELS = 6
#: a factor computed from parameters once per step: its GEMM and the gradients of its two operands
BUILT_FACTOR_KERNELS = 3
#: OFT per rotated input: the block-diagonal rotation forward and its two gradients, plus the Cayley transform's
#: solve forward and its solve + GEMM backward
ROTATION_KERNELS = 3 + 3


def adapter_kernels(layer: nn.Module) -> int:
    """Kernels one adapter layer adds to the frozen layer it wraps (see :func:`added_kernels`)."""
    kind = type(layer).__name__
    if kind == "FusedQKV":
        parts = [p for p in layer.parts.values() if hasattr(p, "base_layer")]
        if parts and all(hasattr(type(p), "qkv_forward") for p in parts):  # one branch over q, k and v
            return max(adapter_kernels(p) for p in parts)
        return sum(adapter_kernels(p) for p in parts)
    if kind in ("ScaleShift", "LinearSlice", "PromptedBlocks"):
        return 0
    if kind == "RLRRLinear":
        return 1
    if kind == "HTALinear":  # weight form: the weight-gradient GEMM plus building ΔW (a GEMM and its gradient)
        return 1 + BUILT_FACTOR_KERNELS if layer.compute == "weight" else LOW_RANK_KERNELS
    if kind == "DoraLayer":  # ‖W + BA‖ needs BA once per step, and its gradients unless the norm is detached
        return LOW_RANK_KERNELS + (1 if layer.detach_norm else BUILT_FACTOR_KERNELS)
    if kind in ("LoraLayer", "AOFTLinear", "AOFTAdapter", "BottleneckAdapter", "ArcLayer", "FactLayer"):
        return LOW_RANK_KERNELS
    if kind == "OftLayer":
        return ROTATION_KERNELS
    raise ValueError(f"no dispatch floor for adapter layer {kind}; add one to experiments/bench_floor.py")


def added_kernels(adapted: nn.Module, method: str) -> int:
    """Kernels ``method``'s math adds to a frozen-backbone step of ``adapted`` at one kernel per GEMM, element-wise
    passes fused (module docstring)."""
    if method == "full":  # every block linear's weight-gradient GEMM and the patch embedding's
        return len(_block_linears(adapted)) + 1
    shared = getattr(adapted, "peft_shared", None)
    factors = getattr(shared, "tensor_format", None)  # FacT: U·Σ_i (TT), and Σ_i = C ×₁ P_i first (TK)
    built = {None: 0, "tt": 1, "tk": 2}[factors] * BUILT_FACTOR_KERNELS
    return built + sum(adapter_kernels(layer) for layer in top_adapters(adapted))


def _prod(shape: tuple[int, int]) -> int:
    return shape[0] * shape[1]


def _block_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.blocks.modules() if isinstance(m, nn.Linear)]


def frozen_flops(plain: nn.Module, batch: int, tokens: int) -> int:
    """Frozen-backbone step of the unadapted ``plain`` model: per block linear forward + input-gradient GEMMs and
    attention, patch embedding forward, head forward and backward."""
    rows, dim = batch * tokens, plain.embed_dim
    model = plain
    linears = sum(4 * rows * m.in_features * m.out_features for m in _block_linears(model))
    attention = 12 * batch * tokens**2 * dim * len(model.blocks)
    patch = model.patch_embed.proj
    patches = batch * model.patch_embed.num_patches
    patch_fwd = 2 * patches * patch.in_channels * _prod(patch.kernel_size) * patch.out_channels
    head = 6 * batch * dim * model.num_classes
    return linears + attention + patch_fwd + head


def step_flops(plain: nn.Module, adapted: nn.Module, method: str, batch: int, tokens: int) -> dict[str, int]:
    """``frozen`` and ``step`` FLOPs of one training step of ``adapted`` (``plain`` adapted by ``method``, see the
    module docstring); the adapter layers of ``adapted`` give the ranks and shapes."""
    base = frozen_flops(plain, batch, tokens)
    if method == "full":
        patch = plain.patch_embed.proj
        patches = batch * plain.patch_embed.num_patches
        patch_grad = 2 * patches * patch.in_channels * _prod(patch.kernel_size) * patch.out_channels
        extra = sum(2 * batch * tokens * m.in_features * m.out_features for m in _block_linears(plain))
        return {"frozen": base, "step": base + extra + patch_grad}
    prompts = prompt_tokens(adapted)
    extra = frozen_flops(plain, batch, tokens + prompts) - base if prompts else 0
    rows = batch * (tokens + prompts)
    extra += sum(adapter_flops(layer, rows) for layer in top_adapters(adapted))
    return {"frozen": base, "step": base + extra}


def top_adapters(model: nn.Module) -> list[nn.Module]:
    """Adapter layers (modules with a ``base_layer``) not nested in another one."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if hasattr(module, "base_layer") and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    return [m for _, m in found]


def prompt_tokens(model: nn.Module) -> int:
    """Extra tokens a prompt method adds to every block (VPT); 0 otherwise."""
    prompts = getattr(getattr(model, "peft_shared", None), "vpt_prompts", None)
    return 0 if prompts is None else prompts.shape[1]


# --- the code before a change ----------------------------------------------------------------------------------------


def load_before(revision: str) -> Any:
    """``peftlab`` as of git ``revision`` imported as the package ``peftlab_before`` (its ``methods`` registry)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "peftlab"],
        check=True,
        capture_output=True,
    ).stdout
    root = Path(tempfile.mkdtemp(prefix="peftlab-before-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    source = root / "peftlab"
    for path in source.rglob("*.py"):
        text = path.read_text()
        path.write_text(
            text.replace("peftlab.", "peftlab_before.").replace("from peftlab import", "from peftlab_before import")
        )
    source.rename(root / "peftlab_before")
    sys.path.insert(0, str(root))
    return importlib.import_module("peftlab_before.methods")
