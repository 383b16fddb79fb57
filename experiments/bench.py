"""Throughput and memory of every registered method side by side, against full fine-tuning and the frozen limit.

For one backbone, batch and dtype, all candidates live in one process and are timed interleaved (warm-up excluded,
``--repeats`` rounds, the order rotated every round, median per candidate):

* ``train``: one optimisation step: forward, cross-entropy, backward, AdamW step over the trainable parameters only;
* ``infer``: a forward pass of the adapted model under ``torch.inference_mode``;
* ``merged``: the same for ``merge_and_unload`` of a deep copy (n/a for methods that cannot merge);
* ``plain``: the same for an unmodified timm model (the inference reference).

Two training references bracket every method: ``full`` (every parameter trains) and ``frozen``, the frozen-backbone
limit: every weight frozen except the head and the position embedding, whose gradient (a sum over the batch of the
first block's input gradient) makes the backward pass compute every activation gradient through all blocks and no
weight gradient. No method that adapts the blocks can need less backward work. (A ``requires_grad_()`` on the
patch-embedding output would do the same in eager mode, but it breaks a compiled model into three graphs and costs a
gradient copy, which made the compiled reference 34 kernels at one ViT-B block instead of 32.)

Memory per candidate, measured after timing with one more step: on CUDA ``max_memory_allocated`` during the step above
what was allocated before it, plus the candidate's own parameters, buffers and optimiser state (other candidates share
the GPU, so they are subtracted); everywhere the deterministic estimate parameters + buffers + gradients + optimiser
state + the bytes autograd saves for backward (``saved_tensors_hooks``, distinct storages, parameters excluded). On CPU
only the estimate exists (RSS growth is not attributable per method in one process).

Also: the data path (uint8 cache vs PIL, from ``experiments/bench_data.py``), the end-to-end time of one VTAB-1k task
(``--epochs`` × ``--train-size`` training images + ``--test-size`` test images at the measured throughput) and of
all ``--tasks`` tasks, and with ``--micro`` a layer-level comparison of the activation and weight forms of RLRR and HTA.

Usage::

    python experiments/bench.py                                         # ViT-B/16, 224 px, batch 64 (GPU run)
    python experiments/bench.py --device cuda --dtype bf16
    python experiments/bench.py --backbone vit_tiny --device cpu         # 64 px, batch 16, about 3 minutes
    python experiments/bench.py --micro --device cpu                    # RLRR/HTA forms at ViT-B/16 layer sizes

Results go to ``experiments/results/bench/<device>-<backbone>-<dtype>.{md,json}`` (``micro-<device>-<dtype>`` for
``--micro``); an existing file is never overwritten unless ``--force`` (a timestamped name is used instead).
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peftlab.backbones import create_backbone
from peftlab.methods import NotMergeableError, get_method, list_methods
from peftlab.methods.hta import HTALinear
from peftlab.methods.inject import merge_and_unload
from peftlab.methods.rlrr import RLRRLinear
from peftlab.methods.state import count_parameters
from peftlab.optim import parameter_groups
from peftlab.results import atomic_write_text, git_sha, now, versions

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "bench"
REFERENCES = ("frozen", "full")
MIB = 2**20

#: pass/fail thresholds (set for the GPU run; CPU numbers are indicative)
TARGETS = {
    "train_vs_frozen": ("<=", 1.15, "train step ≤ 1.15× frozen limit"),
    "train_vs_floor": ("<=", 1.15, "train step ≤ 1.15× its own floor"),
    "memory_vs_full": ("<=", 0.7, "peak memory ≤ 0.7× full fine-tuning"),
    "ops_vs_frozen": ("<=", 1.5, "dispatched kernel ops ≤ 1.5× the frozen step's"),
    "merged_vs_plain": (">=", 0.98, "merged inference ≥ 0.98× plain timm ViT (within 2%; faster is noise)"),
}

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_DESCRIPTIONS = {
    "wall": "wall clock (perf_counter, synchronised on CUDA)",
    "cpu": "process CPU time (process_time): with one thread it excludes the time a shared CPU spends on other "
    "processes",
}


REFERENCE_DEFINITIONS = {
    "frozen": "frozen-backbone limit: all weights frozen but the head and the position embedding (every activation "
    "gradient through all blocks, no weight gradient; one graph when compiled)",
    "full": "full fine-tuning: every parameter trains",
    "plain": "plain timm model (no method injected), inference only",
}


@dataclass(frozen=True)
class Backbone:
    timm_name: str
    model_kwargs: dict[str, Any]
    image_size: int
    batch: int


BACKBONES = {
    "vit_tiny": Backbone("vit_tiny_patch16_224", {"patch_size": 8}, image_size=64, batch=16),
    "vit_b16": Backbone("vit_base_patch16_224", {}, image_size=224, batch=64),
    "vit_l16": Backbone("vit_large_patch16_224", {}, image_size=224, batch=64),
}


# --- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="vit_b16")
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's (224; vit_tiny 64)")
    parser.add_argument("--batch", type=int, default=None, help="default: the backbone's (64; vit_tiny 16)")
    parser.add_argument("--depth", type=int, default=None, help="override the number of blocks (quick checks)")
    parser.add_argument("--methods", default="all", help="comma-separated registered methods (default: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate before timing")
    parser.add_argument("--steps", type=int, default=2, help="calls per timed sample")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: 1 on CPU)")
    parser.add_argument("--clock", choices=("auto", *CLOCKS), default="auto", help="auto: cpu on 1 CPU thread")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=100, help="end-to-end estimate: epochs per VTAB-1k task")
    parser.add_argument("--train-size", type=int, default=1000, help="end-to-end estimate: training images")
    parser.add_argument("--test-size", type=int, default=10_000, help="end-to-end estimate: test images")
    parser.add_argument("--tasks", type=int, default=19, help="end-to-end estimate: tasks in the benchmark")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra candidate with non-default options, e.g. hta:compute=weight (repeatable)",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="torch.compile every model (a mode as trainer.compile takes; default: 'default'); ops then count the "
        "compiled step's kernels",
    )
    parser.add_argument("--tag", default=None, help="suffix of the result file names")
    parser.add_argument(
        "--block",
        action="store_true",
        help="one ViT-B/16 block at batch 16 × 197 tokens (--backbone vit_b16 --depth 1 --batch 16, tag 'block')",
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="GIT_REV",
        help="also time every method as of this git revision (candidates '<method>@before'), interleaved",
    )
    parser.add_argument("--no-data", action="store_true", help="skip the data-path comparison")
    parser.add_argument("--data-source-size", type=int, default=128, help="side of the generated JPEGs (px)")
    parser.add_argument("--data-workers", type=int, default=0, help="DataLoader workers of the PIL path")
    parser.add_argument("--data-epochs", type=int, default=1)
    parser.add_argument("--micro", action="store_true", help="only the RLRR/HTA activation-vs-weight micro-benchmark")
    parser.add_argument("--micro-batch", type=int, default=64)
    parser.add_argument("--micro-tokens", type=int, default=197)
    parser.add_argument("--micro-dim", type=int, default=768)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--force", action="store_true", help="overwrite an existing result file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def resolve_methods(selection: str) -> list[str]:
    """The registered methods to measure (references excluded: they are always measured)."""
    registered = list_methods()
    names = registered if selection == "all" else [n.strip() for n in selection.split(",") if n.strip()]
    unknown = [n for n in names if n not in registered and n not in REFERENCES]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(registered)}")
    return [n for n in dict.fromkeys(names) if n not in REFERENCES]


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``hta:compute=weight,rank=0`` -> (``hta[compute=weight,rank=0]``, ``hta``, options); values parsed as YAML."""
    import yaml

    method, _, assignments = text.partition(":")
    pairs = [item.split("=", 1) for item in assignments.split(",") if item]
    if method not in list_methods() or not pairs or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--variant {text!r}: expected <registered method>:<option>=<value>[,<option>=<value>]")
    options = {key.strip(): yaml.safe_load(value) for key, value in pairs}
    return f"{method}[{assignments}]", method, options


def setup_runtime(args: argparse.Namespace) -> torch.device:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.device == "cpu" and args.backbone != "vit_tiny" and not args.micro:
        log(args, f"note: {args.backbone} on CPU takes hours for every method; --backbone vit_tiny is the CPU setting")
    if args.device == "cpu" and args.dtype == "bf16":
        log(args, "note: bf16 autocast on CPU is usually slower than fp32; measuring anyway")
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    if args.compile:
        load_sibling("bench_floor").enable_compiled_kernel_events()
        args.tag = f"{args.tag}-compiled" if args.tag else "compiled"
    args.clock = resolve_clock(args)
    return torch.device(args.device)


def log(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- candidates ------------------------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One trained model (a method or a reference), its optimiser and, when mergeable, its merged export."""

    name: str
    role: str  # "reference" or "method"
    model: nn.Module
    optimizer: torch.optim.Optimizer
    counts: dict[str, int]
    mergeable: bool | None = None
    merged: nn.Module | None = None
    flops: dict[str, int] | None = None
    ops: dict[str, int] | None = None
    kernels_added: int | None = None  # the kernels its math adds to the frozen step's (the dispatch floor)


def build_backbone(args: argparse.Namespace) -> nn.Module:
    spec = BACKBONES[args.backbone]
    kwargs = {**spec.model_kwargs, "img_size": args.image_size}
    if args.depth:
        kwargs["depth"] = args.depth
    return create_backbone(spec.timm_name, args.num_classes, pretrained=False, head_init="default", model_kwargs=kwargs)


def make_frozen_limit(model: nn.Module) -> nn.Module:
    """The frozen-backbone limit: a linear probe whose position embedding trains too, so that every activation
    gradient through the blocks is computed (and no weight gradient)."""
    get_method("linear")().apply(model)
    model.pos_embed.requires_grad_(True)
    return model


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only, with the training recipe's decay groups."""
    groups = [g for g in parameter_groups(model, 1e-4) if g["params"]]
    return torch.optim.AdamW(groups, lr=1e-4)


def merged_copy(model: nn.Module) -> nn.Module | None:
    """``merge_and_unload`` of a deep copy, or None when the method cannot be merged."""
    try:
        return merge_and_unload(copy.deepcopy(model)).eval()
    except NotMergeableError:
        return None


def build_candidate(
    name: str,
    args: argparse.Namespace,
    device: torch.device,
    method: str | None = None,
    options: dict | None = None,
    registry: Any = None,
) -> Candidate:
    """``name`` labels the candidate; ``method`` (default: ``name``) with ``options`` is the registered config, taken
    from ``registry`` (a ``methods`` package; default: the current one) when given (``role`` ``before``)."""
    model = build_backbone(args)
    if name == "frozen":
        make_frozen_limit(model)
    else:
        (registry.get_method if registry is not None else get_method)(method or name)(**(options or {})).apply(model)
    model.to(device)
    role = "reference" if name in REFERENCES else "before" if registry is not None else "method"
    candidate = Candidate(name, role, model, make_optimizer(model), count_parameters(model))
    if role == "method":
        candidate.merged = merged_copy(model)
        candidate.mergeable = candidate.merged is not None
    if args.compile:
        for compiled in (model, candidate.merged):
            if compiled is not None:
                compiled.compile(mode=args.compile)
    return candidate


# --- timing ----------------------------------------------------------------------------------------------------------


def autocast(device: torch.device, dtype: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_fn(candidate: Candidate, images: Tensor, labels: Tensor, dtype: str) -> Callable[[], None]:
    def step() -> None:
        candidate.model.train()
        candidate.optimizer.zero_grad(set_to_none=True)
        with autocast(images.device, dtype):
            logits = candidate.model(images)
        F.cross_entropy(logits.float(), labels).backward()
        candidate.optimizer.step()

    return step


def infer_step_fn(model: nn.Module, images: Tensor, dtype: str) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.inference_mode(), autocast(images.device, dtype):
            model(images)

    return step


def resolve_clock(args: argparse.Namespace) -> str:
    """``auto``: CPU time when timing on the CPU with one thread (robust to shared cores), else wall clock."""
    if args.clock != "auto":
        return args.clock
    return "cpu" if args.device == "cpu" and torch.get_num_threads() == 1 else "wall"


def seconds_per_call(fn: Callable[[], None], calls: int, device: torch.device, clock: str) -> float:
    """With the garbage collector paused, as ``timeit`` does: a GPU step bound by the host (every eager step of a ViT-B
    at batch 64 on an H200) otherwise absorbs whichever collection pass falls into it."""
    read = CLOCKS[clock]
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        synchronize(device)
        start = read()
        for _ in range(calls):
            fn()
        synchronize(device)
        return (read() - start) / calls
    finally:
        if was_enabled:
            gc.enable()


def interleaved_samples(
    tasks: dict[str, Callable[[], None]], args: argparse.Namespace, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of every task: warm-up first, then ``repeats`` rounds over all tasks, rotated each round."""
    for key, fn in tasks.items():
        log(args, f"warm-up {key}")
        for _ in range(args.warmup):
            fn()
    synchronize(device)
    keys, samples = list(tasks), {key: [] for key in tasks}
    for round_index in range(args.repeats):
        log(args, f"round {round_index + 1}/{args.repeats}")
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(seconds_per_call(tasks[key], args.steps, device, args.clock))
    return samples


# --- memory ----------------------------------------------------------------------------------------------------------


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return tensor_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor))


class SavedActivationMeter:
    """Counts the distinct storages autograd saves for backward inside the context, the model's own tensors excluded."""

    def __init__(self, model: nn.Module) -> None:
        self.excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.seen: set[int] = set()
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved)

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.excluded and pointer not in self.seen:
            self.seen.add(pointer)
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedActivationMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)


def memory_profile(candidate: Candidate, step: Callable[[], None], device: torch.device) -> dict[str, int | None]:
    """Bytes of one training step of ``candidate`` (see the module docstring for the two measures)."""
    candidate.optimizer.zero_grad(set_to_none=True)
    model = candidate.model
    static = tensor_bytes([*model.parameters(), *model.buffers()]) + optimizer_state_bytes(candidate.optimizer)
    grads = tensor_bytes(p for p in model.parameters() if p.requires_grad)
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with SavedActivationMeter(model) as meter:
        step()
    measured = None
    if device.type == "cuda":
        synchronize(device)
        measured = static + torch.cuda.max_memory_allocated(device) - before
    return {
        "static_bytes": static,
        "grad_bytes": grads,
        "saved_activation_bytes": meter.bytes,
        "estimated_bytes": static + grads + meter.bytes,
        "cuda_peak_bytes": measured,
    }


# --- the benchmark ---------------------------------------------------------------------------------------------------


def random_batch(args: argparse.Namespace, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, args.num_classes, (args.batch,), generator=generator)
    return images.to(device), labels.to(device)


def timing_tasks(
    candidates: list[Candidate], plain: nn.Module, images: Tensor, labels: Tensor, dtype: str
) -> dict[str, Callable[[], None]]:
    tasks = {"plain/infer": infer_step_fn(plain, images, dtype)}
    for c in candidates:
        tasks[f"{c.name}/train"] = train_step_fn(c, images, labels, dtype)
        if c.role == "method":
            tasks[f"{c.name}/infer"] = infer_step_fn(c.model, images, dtype)
        if c.merged is not None:
            tasks[f"{c.name}/merged"] = infer_step_fn(c.merged, images, dtype)
    return tasks


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def check_target(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, bound, _ = TARGETS[key]
    return value <= bound if op == "<=" else value >= bound


def end_to_end_seconds(train_ips: float | None, infer_ips: float | None, args: argparse.Namespace) -> float | None:
    """One VTAB-1k task: ``epochs`` × ``train_size`` training images, then ``test_size`` test images."""
    if not train_ips or not infer_ips:
        return None
    return args.epochs * args.train_size / train_ips + args.test_size / infer_ips


def relative_spread(values: list[float]) -> float:
    """(max − min) / median of the timing samples: how noisy a measurement was."""
    return (max(values) - min(values)) / statistics.median(values)


def floor_and_ops(candidate: Candidate, medians: dict[str, float], frozen: Candidate) -> dict[str, Any]:
    """The math floor (``step flops / frozen flops`` × the frozen step) and the dispatch cost against the frozen's."""
    floor = ratio(candidate.flops["step"], candidate.flops["frozen"]) if candidate.flops else None
    train_vs_frozen = ratio(medians[f"{candidate.name}/train"], medians["frozen/train"])
    ops, frozen_ops = candidate.ops or {}, frozen.ops or {}
    ops_floor = None
    if frozen_ops.get("kernel") is not None and candidate.kernels_added is not None:
        ops_floor = frozen_ops["kernel"] + candidate.kernels_added
    return {
        "flops_step": candidate.flops and candidate.flops["step"],
        "floor_vs_frozen": floor,
        "train_vs_floor": ratio(train_vs_frozen, floor),
        "ops_kernel": ops.get("kernel"),
        "ops_all": ops.get("all"),
        "ops_vs_frozen": ratio(ops.get("kernel"), frozen_ops.get("kernel")),
        "ops_all_vs_frozen": ratio(ops.get("all"), frozen_ops.get("all")),
        "ops_floor": ops_floor,
        "ops_floor_vs_frozen": ratio(ops_floor, frozen_ops.get("kernel")),
        "ops_vs_floor": ratio(ops.get("kernel"), ops_floor),
        "launch_sources": ops.get("launch_sources"),  # CUDA only: launches by API call, the most frequent kernels
    }


def before_after(rows: list[dict[str, Any]], revision: str | None) -> list[dict[str, Any]]:
    """Per method timed both ways: the ratios before (``<method>@before``, code as of ``revision``) and after."""
    by_name = {row["name"]: row for row in rows}
    keys = (
        "train_vs_frozen",
        "train_vs_full",
        "train_vs_floor",
        "memory_vs_full",
        "ops_vs_frozen",
        "ops_all_vs_frozen",
    )
    return [
        {"method": name, "revision": revision, **{f"{k}_before": by_name[f"{name}@before"][k] for k in keys}}
        | {f"{k}_after": row[k] for k in keys}
        for name, row in by_name.items()
        if f"{name}@before" in by_name
    ]


def candidate_row(
    candidates: list[Candidate],
    candidate: Candidate,
    samples: dict[str, list[float]],
    medians: dict[str, float],
    memory: dict[str, dict[str, int | None]],
    args: argparse.Namespace,
    memory_key: str,
) -> dict[str, Any]:
    name, batch = candidate.name, args.batch
    frozen = next(c for c in candidates if c.name == "frozen")
    throughput = {kind: ratio(batch, medians.get(f"{name}/{kind}")) for kind in ("train", "infer", "merged")}
    plain_ips = ratio(batch, medians["plain/infer"])
    infer_ips = throughput["infer"] if candidate.role == "method" else plain_ips
    mem = memory[name]
    row = {
        "name": name,
        "role": candidate.role,
        "mergeable": candidate.mergeable,
        "trainable_params": candidate.counts["trainable"],
        "trainable_params_without_head": candidate.counts["trainable_without_head"],
        "train_step_s": medians[f"{name}/train"],
        "train_spread": relative_spread(samples[f"{name}/train"]),
        "train_images_per_s": throughput["train"],
        "train_vs_frozen": ratio(medians[f"{name}/train"], medians["frozen/train"]),
        "train_vs_full": ratio(medians[f"{name}/train"], medians["full/train"]),
        **mem,
        "memory_bytes": mem[memory_key],
        "memory_vs_full": ratio(mem[memory_key], memory["full"][memory_key]),
        "infer_images_per_s": infer_ips,
        "infer_vs_plain": ratio(infer_ips, plain_ips),
        "merged_images_per_s": throughput["merged"],
        "merged_vs_plain": ratio(throughput["merged"], plain_ips),
        **floor_and_ops(candidate, medians, frozen),
    }
    judged = candidate.role == "method" and candidate.mergeable
    row["targets"] = {key: check_target(key, row[key]) if judged else None for key in TARGETS}
    row["e2e_task_s"] = end_to_end_seconds(row["train_images_per_s"], infer_ips, args)
    row["e2e_benchmark_s"] = None if row["e2e_task_s"] is None else row["e2e_task_s"] * args.tasks
    return row


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def setup_record(args: argparse.Namespace, device: torch.device, plain: nn.Module) -> dict[str, Any]:
    return {
        "device": device.type,
        "device_name": device_description(device),
        "dtype": args.dtype,
        "autocast": "bf16" if args.dtype == "bf16" else None,
        "backbone": args.backbone,
        "timm_model": BACKBONES[args.backbone].timm_name,
        "depth": len(plain.blocks),
        "embed_dim": plain.embed_dim,
        "image_size": args.image_size,
        "tokens": plain.patch_embed.num_patches + plain.num_prefix_tokens,
        "batch": args.batch,
        "num_classes": args.num_classes,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "steps_per_sample": args.steps,
        "torch_threads": torch.get_num_threads(),
        "clock": CLOCK_DESCRIPTIONS[args.clock],
        "optimizer": "AdamW (trainable parameters only, foreach default)",
        "compile": args.compile,
    }


def apply_block_preset(args: argparse.Namespace) -> None:
    """``--block``: one ViT-B/16 block (plus patch embedding and head) at batch 16 × 197 tokens."""
    if args.block:
        args.backbone, args.depth, args.batch, args.image_size = "vit_b16", 1, 16, 224
        args.tag = args.tag or "block"


def dispatch_counts(
    candidate: Candidate, images: Tensor, labels: Tensor, dtype: str, compiled: bool = False
) -> dict[str, int]:
    """ATen ops (compiled: kernels) of one forward + backward, the optimiser step excluded, counted after one uncounted
    call. On CUDA ``kernel`` is the host-side launches instead (:class:`bench_floor.LaunchCounter`) and ``all`` the
    kernel ops."""

    def forward_backward() -> None:
        candidate.model.train()
        candidate.optimizer.zero_grad(set_to_none=True)
        with autocast(images.device, dtype):
            logits = candidate.model(images)
        F.cross_entropy(logits.float(), labels).backward()

    forward_backward()
    floor = load_sibling("bench_floor")
    with floor.CompiledKernelCounter() if compiled else floor.DispatchCounter() as counter:
        forward_backward()
    if not images.is_cuda:
        return {"all": counter.all, "kernel": counter.kernel}
    with floor.LaunchCounter() as launches:
        forward_backward()
    kernels = sum(launches.kernels.values())
    sources = {
        "launch_calls": dict(launches.calls),
        "kernels": kernels,
        "top_kernels": dict(launches.kernels.most_common(25)),
    }
    return {"all": counter.kernel, "kernel": launches.count, "launch_sources": sources}


def build_candidates(args: argparse.Namespace, device: torch.device, methods: list[str]) -> list[Candidate]:
    candidates = []
    variants = [(name, name, {}) for name in [*REFERENCES, *methods]] + [parse_variant(v) for v in args.variant]
    for name, method, options in variants:
        log(args, f"building {name}")
        candidates.append(build_candidate(name, args, device, method, options))
    if args.before:
        registry = load_sibling("bench_floor").load_before(args.before)
        for name in methods:
            if name not in registry.list_methods():
                log(args, f"{name} did not exist at {args.before}: no '{name}@before'")
                continue
            log(args, f"building {name}@before ({args.before})")
            candidates.append(build_candidate(f"{name}@before", args, device, name, registry=registry))
    return candidates


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    apply_block_preset(args)
    spec = BACKBONES[args.backbone]
    args.image_size = args.image_size or spec.image_size
    args.batch = args.batch or spec.batch
    methods = resolve_methods(args.methods)
    device = setup_runtime(args)
    images, labels = random_batch(args, device)
    plain = build_backbone(args).to(device).eval()
    if args.compile:
        plain.compile(mode=args.compile)
    candidates = build_candidates(args, device, methods)
    samples = interleaved_samples(timing_tasks(candidates, plain, images, labels, args.dtype), args, device)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    memory = {c.name: memory_profile(c, train_step_fn(c, images, labels, args.dtype), device) for c in candidates}
    tokens = plain.patch_embed.num_patches + plain.num_prefix_tokens
    for c in candidates:
        c.ops = dispatch_counts(c, images, labels, args.dtype, compiled=bool(args.compile))
        c.flops = load_sibling("bench_floor").step_flops(plain, c.model, c.name, args.batch, tokens)
        c.kernels_added = load_sibling("bench_floor").added_kernels(c.model, c.name)
    memory_key = "cuda_peak_bytes" if device.type == "cuda" else "estimated_bytes"
    rows = [candidate_row(candidates, c, samples, medians, memory, args, memory_key) for c in candidates]
    data = None if args.no_data else data_path_comparison(args)
    report = {
        "kind": "peftlab-bench",
        "created": now(),
        "command": args.command,
        "git_sha": git_sha(),
        "versions": versions(),
        "setup": setup_record(args, device, plain),
        "references": REFERENCE_DEFINITIONS,
        "memory_source": memory_source(device),
        "targets": {key: {"op": op, "bound": bound, "text": text} for key, (op, bound, text) in TARGETS.items()},
        "targets_apply_to": "re-parameterisable (mergeable) methods, on the GPU run",
        "plain_infer_images_per_s": ratio(args.batch, medians["plain/infer"]),
        "median_relative_spread": statistics.median(relative_spread(v) for v in samples.values()),
        "rows": rows,
        "before_after": before_after(rows, args.before),
        "floor": load_sibling("bench_floor").FLOOR_DEFINITION,
        "ops_floor": load_sibling("bench_floor").KERNEL_FLOOR_DEFINITION,
        "end_to_end": end_to_end_record(args, data),
        "data": data,
        "samples_s": samples,
    }
    report["markdown"] = bench_markdown(report)
    return write_report(report, result_stem(f"{device.type}-{args.backbone}-{args.dtype}", args), args)


def memory_source(device: torch.device) -> str:
    if device.type == "cuda":
        return "CUDA max_memory_allocated during one step above the allocation before it + own params/buffers/optimizer"
    return "estimate: params + buffers + grads + AdamW state + autograd-saved activations (transient buffers excluded)"


def end_to_end_record(args: argparse.Namespace, data: dict[str, Any] | None) -> dict[str, Any]:
    images_per_task = args.epochs * args.train_size + args.test_size
    record = {
        "epochs": args.epochs,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "tasks": args.tasks,
        "formula": "epochs*train_size/train_images_per_s + test_size/infer_images_per_s (adapted model); ×tasks",
    }
    if data:
        record["data_s_per_task"] = {path: images_per_task / rate for path, rate in data["images_per_s"].items()}
    return record


# --- data path (experiments/bench_data.py) ---------------------------------------------------------------------------


def load_sibling(name: str):
    """``experiments/<name>.py`` as a module (this file may be imported from anywhere, e.g. by the tests)."""
    if f"peftlab_{name}" in sys.modules:
        return sys.modules[f"peftlab_{name}"]
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"peftlab_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_bench_data():
    return load_sibling("bench_data")


def data_path_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of the PIL DataLoader and of the in-memory uint8 cache on a generated task in the VTAB-1k layout,
    using ``bench_data.py``'s loaders (224 px, batch 32, cache on the CPU)."""
    from peftlab.data import make_demo_dataset

    bench_data = load_bench_data()
    log(args, "data path: PIL vs uint8 cache")
    with tempfile.TemporaryDirectory() as scratch:
        root = make_demo_dataset(Path(scratch) / "demo", image_size=args.data_source_size)
        plain = bench_data.datamodule(root, "none", args.data_workers)
        pil_rate = bench_data.images_per_second(plain.train_dataloader(), args.data_epochs)
        cached, build_rate = bench_data.timed_setup(root, "memory", args.data_workers)
        cached_rate = bench_data.images_per_second(cached.train_dataloader(), args.data_epochs)
    return {
        "settings": {
            "image_size": 224,
            "batch": 32,
            "source_jpeg_px": args.data_source_size,
            "pil_workers": args.data_workers,
            "epochs": args.data_epochs,
            "train_images": len(plain.train_data),
            "cache_device": "cpu",
        },
        "images_per_s": {"pil": pil_rate, "cached": cached_rate},
        "cache_build_images_per_s": build_rate,
        "cached_vs_pil": ratio(cached_rate, pil_rate),
    }


# --- RLRR / HTA: activation form vs weight form ----------------------------------------------------------------------


class RLRRActivationForm(nn.Module):
    """RLRR applied to the activations, sharing the parameters of an :class:`RLRRLinear`:
    ``y = x Wᵀ + s_out ⊙ ((x ⊙ s_in) Wᵀ) + b + f`` (two GEMMs forward, two backward, no weight-gradient GEMM)."""

    def __init__(self, layer: RLRRLinear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        layer = self.layer
        weight = layer.base_layer.weight
        rescaled = F.linear(x * layer.rlrr_scale_in, weight) * layer.rlrr_scale_out
        return F.linear(x, weight, layer.merged_bias()) + rescaled


@torch.no_grad()
def _perturb(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        if p.requires_grad:
            p.add_(0.1 * torch.randn(p.shape, generator=generator).to(p))


def micro_layers(dim_in: int, dim_out: int, device: torch.device) -> dict[str, nn.Module]:
    """One frozen Linear and every variant built on it: references and both forms of RLRR and HTA."""
    frozen = nn.Linear(dim_in, dim_out).to(device).requires_grad_(False)
    full = copy.deepcopy(frozen).requires_grad_(True)
    rlrr_weight = RLRRLinear(frozen)
    hta_activation = HTALinear(frozen, rank=1, compute="activation")
    _perturb(hta_activation, seed=1)
    hta_weight = HTALinear(frozen, rank=1, compute="weight")
    hta_weight.load_state_dict(hta_activation.state_dict())
    return {
        "frozen (dx only)": frozen,
        "full (dx + dW)": full,
        "rlrr weight form": rlrr_weight,
        "rlrr activation form": RLRRActivationForm(rlrr_weight),
        "hta activation form": hta_activation,
        "hta weight form": hta_weight,
    }


def micro_step_fn(layer: nn.Module, x: Tensor, grad_out: Tensor, dtype: str) -> Callable[[], None]:
    def step() -> None:
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        with autocast(x.device, dtype):
            out = layer(x)
        out.backward(grad_out.to(out.dtype))

    return step


def forms_max_difference(layers: dict[str, nn.Module], x: Tensor, method: str) -> float:
    with torch.no_grad():
        weight_form, activation_form = layers[f"{method} weight form"](x), layers[f"{method} activation form"](x)
    return (weight_form - activation_form).abs().max().item()


def run_micro(args: argparse.Namespace) -> dict[str, Any]:
    device = setup_runtime(args)
    dim = args.micro_dim
    shapes = [(dim, dim), (dim, 4 * dim)]  # q/k/v slices and attn.proj; mlp.fc1 (fc2 is its transpose)
    tasks, checks = {}, {}
    for dim_in, dim_out in shapes:
        shape = f"{dim_in}->{dim_out}"
        layers = micro_layers(dim_in, dim_out, device)
        x = torch.randn(args.micro_batch, args.micro_tokens, dim_in, device=device, requires_grad=True)
        grad_out = torch.randn(args.micro_batch, args.micro_tokens, dim_out, device=device)
        checks[shape] = {m: forms_max_difference(layers, x[:2], m) for m in ("rlrr", "hta")}
        for variant, layer in layers.items():
            tasks[f"{shape}|{variant}"] = micro_step_fn(layer, x, grad_out, args.dtype)
    samples = interleaved_samples(tasks, args, device)
    rows = micro_rows(samples)
    report = {
        "kind": "peftlab-bench-micro",
        "created": now(),
        "command": args.command,
        "git_sha": git_sha(),
        "versions": versions(),
        "setup": {
            "device": device.type,
            "device_name": device_description(device),
            "dtype": args.dtype,
            "batch": args.micro_batch,
            "tokens": args.micro_tokens,
            "shapes": [f"{a}->{b}" for a, b in shapes],
            "repeats": args.repeats,
            "warmup": args.warmup,
            "steps_per_sample": args.steps,
            "torch_threads": torch.get_num_threads(),
            "clock": CLOCK_DESCRIPTIONS[args.clock],
            "measured": "forward + backward of one layer (input requires grad), grads set to None each call",
        },
        "forms_max_abs_difference": checks,
        "rows": rows,
        "recommendations": micro_recommendations(rows),
        "samples_s": samples,
    }
    report["markdown"] = micro_markdown(report)
    return write_report(report, result_stem(f"micro-{device.type}-{args.dtype}", args), args)


def micro_rows(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    medians = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for key, seconds in medians.items():
        shape, variant = key.split("|")
        rows.append(
            {
                "shape": shape,
                "variant": variant,
                "seconds": seconds,
                "vs_frozen": seconds / medians[f"{shape}|frozen (dx only)"],
                "vs_full": seconds / medians[f"{shape}|full (dx + dW)"],
            }
        )
    return rows


def micro_recommendations(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method and shape: weight-form time / activation-form time and the faster form."""
    seconds = {(r["shape"], r["variant"]): r["seconds"] for r in rows}
    advice: dict[str, dict[str, Any]] = {}
    for method in ("rlrr", "hta"):
        for shape in dict.fromkeys(r["shape"] for r in rows):
            weight_over_activation = (
                seconds[(shape, f"{method} weight form")] / seconds[(shape, f"{method} activation form")]
            )
            advice.setdefault(method, {})[shape] = {
                "weight_over_activation": weight_over_activation,
                "faster": "weight" if weight_over_activation < 1 else "activation",
            }
    return advice


# --- output ----------------------------------------------------------------------------------------------------------


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}" if value >= 10 * MIB else f"{value / MIB:.1f}"


def fmt_check(value: bool | None) -> str:
    return "n/a" if value is None else "pass" if value else "FAIL"


def fmt_seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def fmt_hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 3600:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


BENCH_HEADER = [
    "method",
    "re-param",
    "trainable",
    "train img/s",
    "×frozen",
    "floor ×frozen",
    "×floor",
    "×full",
    "mem MiB",
    "mem ×full",
    "ops ×frozen",
    "ops floor ×frozen",
    "ops ×floor",
    "all ops ×frozen",
    "infer img/s",
    "merged img/s",
    "merged/plain",
    "≤1.15×frozen",
    "≤1.15×floor",
    "mem≤0.7×full",
    "ops≤1.5×",
    "merged±2%",
    "task s",
    "all tasks h",
]


def bench_table_row(row: dict[str, Any]) -> list[str]:
    targets = row["targets"]
    reparam = "before" if row["role"] == "before" else {True: "yes", False: "no", None: "ref"}[row["mergeable"]]
    return [
        row["name"],
        reparam,
        f"{row['trainable_params']:,}",
        fmt_rate(row["train_images_per_s"]),
        fmt_ratio(row["train_vs_frozen"]),
        fmt_ratio(row["floor_vs_frozen"]),
        fmt_ratio(row["train_vs_floor"]),
        fmt_ratio(row["train_vs_full"]),
        fmt_mib(row["memory_bytes"]),
        fmt_ratio(row["memory_vs_full"]),
        fmt_ratio(row["ops_vs_frozen"]),
        fmt_ratio(row["ops_floor_vs_frozen"]),
        fmt_ratio(row["ops_vs_floor"]),
        fmt_ratio(row["ops_all_vs_frozen"]),
        fmt_rate(row["infer_images_per_s"]),
        fmt_rate(row["merged_images_per_s"]),
        fmt_ratio(row["merged_vs_plain"], 3),
        *(fmt_check(targets[key]) for key in TARGETS),
        fmt_seconds(row["e2e_task_s"]),
        fmt_hours(row["e2e_benchmark_s"]),
    ]


OPS_DEFINITION = {
    (False, False): "ops: ATen ops of one forward + backward (optimiser excluded), kernels only (views, transposes, "
    "detach excluded); all ops: including those.",
    (False, True): "ops (every model torch.compile'd): kernels of one compiled forward + backward (optimiser "
    "excluded), counted by the profiler: Inductor-generated kernels plus the outermost ATen calls (GEMMs, attention, "
    "ops outside the graph); all ops = ops.",
    (True, False): "ops: host-side kernel launches of one forward + backward (optimiser excluded), from the profiler's "
    "CUDA runtime/driver launch calls; all ops: the ATen kernel ops dispatched (views, transposes, detach excluded).",
    (True, True): "ops (every model torch.compile'd): host-side kernel launches of one compiled forward + backward "
    "(optimiser excluded), from the profiler's CUDA runtime/driver launch calls, a CUDA-graph replay counting one; "
    "all ops: the kernels Inductor and ATen run (Inductor kernels plus outermost ATen calls).",
}


def bench_markdown(report: dict[str, Any]) -> str:
    s, e2e = report["setup"], report["end_to_end"]
    lines = [
        f"# peftlab bench: {s['backbone']} ({s['timm_model']}), {s['device']} ({s['device_name']}), {s['dtype']}",
        "",
        f"- created {report['created']}, git {report['git_sha']}, torch {report['versions']['torch']}, "
        f"timm {report['versions']['timm']}, python {report['versions']['python']}",
        f"- batch {s['batch']}, image {s['image_size']} px ({s['tokens']} tokens), depth {s['depth']}, "
        f"dim {s['embed_dim']}, {s['num_classes']} classes, torch threads {s['torch_threads']}",
        f"- timing: {s['warmup']} warm-up calls per candidate (excluded), then {s['repeats']} interleaved rounds "
        f"(order rotated each round) of {s['steps_per_sample']} calls; median; {s['clock']}",
        f"- train = forward + cross-entropy + backward + {s['optimizer']}; infer = inference_mode forward"
        + (f"; every model torch.compile'd (mode {s['compile']})" if s.get("compile") else ""),
        f"- plain timm ViT inference: {fmt_rate(report['plain_infer_images_per_s'])} img/s; timing noise: median "
        f"(max − min) / median over all measurements {report['median_relative_spread']:.0%}",
        f"- memory: {report['memory_source']}",
        *(f"- reference `{name}`: {text}" for name, text in report["references"].items()),
        "- targets (for the GPU run; judged for re-parameterisable methods only, n/a otherwise): "
        + "; ".join(t["text"] for t in report["targets"].values()),
        "",
        *markdown_table(BENCH_HEADER, [bench_table_row(r) for r in report["rows"]]),
        "",
        f"×frozen, ×full: train step time over the reference's. task s: one VTAB-1k task, {e2e['epochs']} epochs × "
        f"{e2e['train_size']} images + {e2e['test_size']} test images at the measured train/infer throughput (model "
        f"only); all tasks h: × {e2e['tasks']}.",
    ]
    ops_definition = OPS_DEFINITION[s["device"] == "cuda", bool(s.get("compile"))]
    lines += [
        "",
        f"floor ×frozen: {report['floor']} ×floor = ×frozen / floor ×frozen. {ops_definition}",
        "",
        f"ops floor ×frozen: {report['ops_floor']} ops ×floor = ops / (frozen ops + those).",
    ]
    if report["before_after"]:
        lines += ["", *before_after_markdown(report["before_after"])]
    if report["data"]:
        lines += ["", *data_markdown(report["data"], e2e)]
    return "\n".join(lines) + "\n"


def before_after_markdown(pairs: list[dict[str, Any]]) -> list[str]:
    keys = [
        ("train_vs_frozen", "step ×frozen"),
        ("train_vs_full", "step ×full"),
        ("train_vs_floor", "step ×floor"),
        ("memory_vs_full", "mem ×full"),
        ("ops_vs_frozen", "ops ×frozen"),
        ("ops_all_vs_frozen", "all ops ×frozen"),
    ]
    rows = [
        [p["method"], *(f"{fmt_ratio(p[f'{k}_before'])} → {fmt_ratio(p[f'{k}_after'])}" for k, _ in keys)]
        for p in pairs
    ]
    return [
        f"## Before → after (code as of `{pairs[0]['revision']}` vs this tree, timed interleaved in one process)",
        "",
        *markdown_table(["method", *(label for _, label in keys)], rows),
    ]


def data_markdown(data: dict[str, Any], e2e: dict[str, Any]) -> list[str]:
    s = data["settings"]
    rows = [
        [path, fmt_rate(rate), fmt_seconds(e2e["data_s_per_task"][path])] for path, rate in data["images_per_s"].items()
    ]
    return [
        f"## Data path ({s['image_size']} px, batch {s['batch']}, {s['train_images']} train images from "
        f"{s['source_jpeg_px']} px JPEGs, PIL workers {s['pil_workers']}, cache on {s['cache_device']})",
        "",
        *markdown_table(["path", "img/s", "data s per task"], rows),
        "",
        f"cached / PIL: {fmt_ratio(data['cached_vs_pil'])}×; cache build (one-time decode, train + test splits): "
        f"{fmt_rate(data['cache_build_images_per_s'])} train img/s. The data time adds to the model time of a task "
        "when batches are produced in the training process (the cached path).",
    ]


def micro_markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    rows = [
        [r["shape"], r["variant"], f"{r['seconds'] * 1e3:.1f}", fmt_ratio(r["vs_frozen"]), fmt_ratio(r["vs_full"])]
        for r in report["rows"]
    ]
    advice = [
        f"- {method} {shape}: weight form / activation form = {a['weight_over_activation']:.2f} → {a['faster']} "
        f"form is faster"
        for method, shapes in report["recommendations"].items()
        for shape, a in shapes.items()
    ]
    lines = [
        f"# RLRR / HTA forms: {s['device']} ({s['device_name']}), {s['dtype']}",
        "",
        f"- batch {s['batch']} × {s['tokens']} tokens, layers {', '.join(s['shapes'])}; {s['measured']}",
        f"- {s['warmup']} warm-up calls, {s['repeats']} interleaved rounds of {s['steps_per_sample']} calls, median; "
        f"torch threads {s['torch_threads']}; {s['clock']}",
        f"- git {report['git_sha']}, torch {report['versions']['torch']}",
        f"- forms agree (max |weight − activation| on 2 samples): {json.dumps(report['forms_max_abs_difference'])}",
        "",
        *markdown_table(["layer", "variant", "ms fwd+bwd", "×frozen", "×full"], rows),
        "",
        *advice,
    ]
    return "\n".join(lines) + "\n"


def result_stem(stem: str, args: argparse.Namespace) -> str:
    return f"{stem}-{args.tag}" if args.tag else stem


def output_paths(out_dir: Path, stem: str, force: bool) -> tuple[Path, Path]:
    """``<stem>.md``/``.json``; if either exists and not ``force``, a timestamped stem that does not exist yet."""
    candidate = stem
    if not force:
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        counter = 0
        while (out_dir / f"{candidate}.md").exists() or (out_dir / f"{candidate}.json").exists():
            counter += 1
            candidate = f"{stem}-{stamp}" + (f"-{counter}" if counter > 1 else "")
    return out_dir / f"{candidate}.md", out_dir / f"{candidate}.json"


def write_report(report: dict[str, Any], stem: str, args: argparse.Namespace) -> dict[str, Any]:
    markdown_path, json_path = output_paths(args.out_dir, stem, args.force)
    if markdown_path.stem != stem:
        log(args, f"{stem}.md/.json exists (use --force to overwrite): writing {markdown_path.stem} instead")
    report["files"] = {"markdown": str(markdown_path), "json": str(json_path)}
    atomic_write_text(markdown_path, report["markdown"])
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    print(report["markdown"])
    print(f"written: {markdown_path} and {json_path}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.command = " ".join(["experiments/bench.py", *(sys.argv[1:] if argv is None else argv)])
    return run_micro(args) if args.micro else run_bench(args)


if __name__ == "__main__":
    main()
