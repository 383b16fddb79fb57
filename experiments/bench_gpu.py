"""``make bench-gpu``: the whole GPU measurement in one command (about 9 minutes on one H200; ``--only`` runs a part).

1. ``bench.py`` for ViT-B/16 at 224 px, bf16 autocast, batch 64: every method's step × frozen, × its floor, × full,
   peak memory × full, dispatch cost × frozen and merged inference × plain (about 2.5 minutes).
2. ``bench_sweep.py``: the end-to-end time of a VTAB-1k sweep for one method with k = 1, 2 and 4 jobs per GPU (about
   2 minutes per k).

Both write into ``experiments/results/bench/``. Without CUDA it stops before any work with one ``error:`` line.

The measured eager table (an H200) is bound by the host: every method's step time follows its kernel launches.
``--graphs`` measures the CUDA-graph path that removes them (``trainer.compile=reduce-overhead``): the same table for
a few methods, every model compiled with CUDA graphs, host-side launches per step counted by the profiler
(``experiments/results/bench/cuda-*-graphs-compiled.md``).

    python experiments/bench_gpu.py [--method lora] [--only table|sweep]
    python experiments/bench_gpu.py --graphs
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: few, as every candidate is compiled for training and inference: a frozen-class method (LoRA), the paper method with
#: the most eager launches (HTA, 4.5× the frozen step's on an H200) and RLRR, whose floor is full fine-tuning's step
GRAPH_METHODS = "lora,hta,rlrr"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"peftlab_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora", help="method of the sweep estimate")
    parser.add_argument("--jobs-per-device", default="1,2,4", help="k values of the sweep estimate")
    parser.add_argument("--only", choices=("table", "sweep"), help="one of the two parts (default: both)")
    parser.add_argument("--graphs", action="store_true", help="only the CUDA-graph table (reduce-overhead)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "error: make bench-gpu needs a CUDA device and none is visible; on a CPU run `make bench` and "
            "`make bench-sweep` instead",
            file=sys.stderr,
        )
        raise SystemExit(2)
    common = ["--backbone", "vit_b16", "--device", "cuda", "--dtype", "bf16", "--batch", "64", "--no-data"]
    if args.graphs:
        load("bench").main(
            [*common, "--compile", "reduce-overhead", "--methods", GRAPH_METHODS, "--repeats", "3", "--warmup", "3",
             "--steps", "5", "--tag", "graphs"]
        )  # fmt: skip
        return
    if args.only in (None, "table"):
        load("bench").main([*common, "--repeats", "5", "--warmup", "3", "--steps", "10", "--tag", "gpu"])
    if args.only in (None, "sweep"):
        sweep = load("bench_sweep")
        probes = ["--jobs-per-device", args.jobs_per_device, "--train-batches", "16", "--more-epochs", "8"]
        probes += ["--eval-batches", "8"]
        probes += ["--test-size", "2048"]  # 2V = 16 full test batches of 128
        sweep.run(sweep.parse_args(["--method", args.method, "--device", "cuda", "--precision", "bf16-mixed", *probes]))


if __name__ == "__main__":
    main()
