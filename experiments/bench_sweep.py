"""End-to-end time of a whole VTAB-1k sweep for one method, extrapolated from measured probe runs of the real CLI.

One task is generated in the real on-disk layout (NOAH's: ``train800``, ``val200``, ``train800val200`` copies and
``test``; 1,000 training images and ``--test-size`` test JPEGs of ``--source-px``). Then, for each ``k`` in
``--jobs-per-device``, three probe sweeps of ``k`` identical jobs (different seeds) run through
``hydra/launcher=parallel`` with ``jobs_per_device=k``. A job's seconds (under k-fold sharing) are read from the
launcher's journal, from its process start to its exit:

* P1: 1 epoch of ``B`` train batches, no validation, ``V`` test batches;
* P2: as P1 with ``1 + M`` epochs -> seconds per train batch (M·B batches more: enough on a GPU to stand out of the
  jobs' start-up noise);
* P3: as P1 with ``2V`` test batches -> seconds per eval batch;
* the rest of P1 is the fixed cost of a job (interpreter, imports, model build, cache load);
* a probe's wall time less its longest job is the launcher's own start, paid once per sweep.

The cache build (decode of every image, paid by the first job of a task only: the disk cache is shared) is timed
separately. A task then takes ``fixed + epochs · (train batches · t_train + eval passes per epoch · eval batches ·
t_eval) + final test``, with the real VTAB-1k test sizes below (splits over ``cache_max_gb`` are decoded at every
evaluation, as the PIL path does); the sweep is the launcher's start plus the sum over the 19 tasks divided by ``k``
(jobs sharing one device).

    python experiments/bench_sweep.py --method lora                    # CPU: ViT-B/16, a few batches per probe
    python experiments/bench_sweep.py --device cuda --jobs-per-device 1,2,4 --train-batches 16 --more-epochs 8 \
        --eval-batches 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "bench"
TRAIN_IMAGES = 1000  # train800val200 (split=final)

#: VTAB-1k test split sizes (the TFDS splits that NOAH's generator exports)
VTAB1K_TEST_SIZES = {
    "cifar100": 10_000,
    "caltech101": 6_084,
    "dtd": 1_880,
    "oxford_flowers102": 6_149,
    "oxford_iiit_pet": 3_669,
    "svhn": 26_032,
    "sun397": 21_750,
    "patch_camelyon": 32_768,
    "eurosat": 5_400,
    "resisc45": 6_300,
    "diabetic_retinopathy": 42_670,
    "clevr_count": 15_000,
    "clevr_dist": 15_000,
    "dmlab": 22_735,
    "kitti": 711,
    "dsprites_loc": 73_728,
    "dsprites_ori": 73_728,
    "smallnorb_azi": 12_150,
    "smallnorb_ele": 12_150,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora", help="experiment <method>_vtab1k")
    parser.add_argument("--backbone", default="vit_b16_in21k", help="backbone config (random init: no download)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--jobs-per-device", default="1", help="comma-separated k values (GPU: 1,2,4)")
    parser.add_argument("--train-batches", type=int, default=2, help="B: train batches per probe epoch")
    parser.add_argument("--more-epochs", type=int, default=1, help="M: P2's extra epochs (GPU: enough for seconds)")
    parser.add_argument("--eval-batches", type=int, default=1, help="V: test batches of P1 and P2 (P3: 2V)")
    parser.add_argument("--test-size", type=int, default=2000, help="test images of the generated task")
    parser.add_argument("--source-px", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--precision", default=None, help="trainer.precision of the probes (GPU: bf16-mixed)")
    parser.add_argument("--extra", action="append", default=[], help="more overrides for the probe runs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default=None)
    return parser.parse_args(argv)


def write_task(task_dir: Path, test_size: int, source_px: int, num_classes: int = 100) -> Path:
    """One VTAB-1k task in NOAH's layout with random JPEGs (the pixels do not matter, the sizes do)."""
    rng = np.random.default_rng(0)
    counts = {"train800": 800, "val200": 200, "test": test_size}
    for split, count in counts.items():
        lines = []
        for index in range(count):
            relative = f"images/{split}/{index:06d}.jpg"
            _random_jpeg(task_dir / relative, rng, source_px)
            lines.append(f"{relative} {index % num_classes}\n")
        (task_dir / f"{split}.txt").write_text("".join(lines))
    merged = []
    for split in ("train800", "val200"):
        for line in (task_dir / f"{split}.txt").read_text().splitlines():
            relative, label = line.split()
            target = f"images/train800val200/{len(merged):06d}.jpg"
            (task_dir / target).parent.mkdir(parents=True, exist_ok=True)
            os.link(task_dir / relative, task_dir / target)
            merged.append(f"{target} {label}\n")
    (task_dir / "train800val200.txt").write_text("".join(merged))
    return task_dir


def _random_jpeg(path: Path, rng: np.random.Generator, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=90)


def decode_rate(task_dir: Path) -> float:
    """Images per second of the cache build (decode + resize to 224 px) of the test split, with as many threads as the
    PIL path's ``num_workers: auto`` has workers (the rate at which a split too large for the cache is decoded)."""
    from peftlab.data.base import resolve_num_workers
    from peftlab.data.cache import decode_all
    from peftlab.data.splits import read_txt_split

    images, _ = read_txt_split(task_dir, "test")
    start = time.perf_counter()
    decode_all(images, 224, "bicubic", workers=resolve_num_workers("auto"), progress=False)
    return len(images) / (time.perf_counter() - start)


def probe(args: argparse.Namespace, root: Path, k: int, epochs: int, evals: int, logs: Path) -> dict[str, Any]:
    """A sweep of ``k`` identical jobs run ``k`` at a time (``epochs`` of B batches, no validation, ``evals`` test
    batches): its wall seconds, and each job's seconds from the launcher's journal (process start to exit:
    interpreter, imports, build, training, test)."""
    overrides = [
        "-m",
        "hydra/launcher=parallel",
        f"hydra.launcher.jobs_per_device={k}",
        f"hydra.sweep.dir={logs}",
        f"experiment={args.method}_vtab1k",
        "data=vtab1k/cifar100",
        f"data.root={root}",
        f"backbone={args.backbone}",
        "backbone.pretrained=false",
        f"seed={','.join(str(s) for s in range(1, k + 1))}",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs + 1}",  # no validation: the test pass measures evaluation
        f"+trainer.limit_train_batches={args.train_batches}",
        f"+trainer.limit_test_batches={evals}",
        "logger=none",
        "callbacks=none",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        *([f"trainer.precision={args.precision}"] if args.precision else []),
        *args.extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    batches = f"{epochs} epoch(s) of {args.train_batches} train batches, {evals} test batches"
    print(f"[bench-sweep] probe: {k} job(s) at a time, {batches}", file=sys.stderr)
    start = time.perf_counter()
    # the jobs' output goes to stderr as it comes: a slow or stuck probe shows where it is
    proc = subprocess.run([sys.executable, "-m", "peftlab.train", *overrides], env=env, stdout=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"error: a probe sweep failed (exit {proc.returncode}); its jobs' output is above")
    from hydra_plugins.peftlab_launcher.parallel_launcher import JOURNAL_NAME

    return {"wall_s": time.perf_counter() - start, "job_s": job_seconds(logs / JOURNAL_NAME)}


def job_seconds(journal: Path) -> list[float]:
    """Each job's seconds in the parallel launcher's journal (``<sweep dir>/launcher.jsonl``), by job number."""
    records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return [r["end"] - r["start"] for r in sorted(records, key=lambda r: r["job"])]


def job_costs(args: argparse.Namespace, root: Path, k: int, scratch: Path) -> dict[str, Any]:
    """Per-job costs under ``k``-fold sharing, from the mean job seconds of the three probes. A sweep's launcher
    (its own interpreter and imports) starts once per sweep, not once per job: it is kept apart as ``launcher_s``."""
    b, m, v = args.train_batches, args.more_epochs, args.eval_batches
    probes = [
        probe(args, root, k, 1, v, scratch / f"k{k}-p1"),
        probe(args, root, k, 1 + m, v, scratch / f"k{k}-p2"),
        probe(args, root, k, 1, 2 * v, scratch / f"k{k}-p3"),
    ]
    p1, p2, p3 = (sum(p["job_s"]) / len(p["job_s"]) for p in probes)
    train_batch = max(p2 - p1, 0.0) / (m * b)
    eval_batch = max(p3 - p1, 0.0) / v
    fixed = max(p1 - b * train_batch - v * eval_batch, 0.0)
    launcher = sum(p["wall_s"] - max(p["job_s"]) for p in probes) / len(probes)
    return {
        "probes": probes,
        "train_batch_s": train_batch,
        "eval_batch_s": eval_batch,
        "fixed_s": fixed,
        "launcher_s": launcher,
    }


def task_seconds(costs: dict[str, float], test_size: int, recipe: dict[str, Any], epochs: int, rate: float) -> float:
    """One job of a task: fixed + epochs of training and per-epoch evaluation + the final test pass."""
    train_batches = math.ceil(TRAIN_IMAGES / recipe["batch_size"])
    eval_batches = math.ceil(test_size / recipe["eval_batch_size"])
    uncached = 3 * 224 * 224 * test_size > recipe["cache_max_gb"] * 1e9
    eval_pass = eval_batches * costs["eval_batch_s"] + (test_size / rate if uncached else 0.0)
    passes = epochs // recipe["check_val_every_n_epoch"] + 1
    return costs["fixed_s"] + epochs * train_batches * costs["train_batch_s"] + passes * eval_pass


def cache_limit_gb(value: float | str, device: str, jobs_per_device: int) -> float:
    """``data.cache_max_gb`` as each of ``jobs_per_device`` jobs resolves it on ``device`` (``auto``: a share of the
    GPU's memory, :func:`peftlab.data.cache.resolve_cache_max_gb`)."""
    import torch

    from peftlab.data.cache import resolve_cache_max_gb

    return resolve_cache_max_gb(value, torch.device(device), jobs=jobs_per_device)


def check_probe_sizes(args: argparse.Namespace, recipe: dict[str, Any]) -> None:
    """The probes' differences count batches that must exist: B train batches in an epoch, 2V in the test split."""
    epoch = math.ceil(TRAIN_IMAGES / recipe["batch_size"])
    test = math.ceil(args.test_size / recipe["eval_batch_size"])
    if args.train_batches > epoch:
        raise SystemExit(
            f"error: --train-batches {args.train_batches} is more than an epoch has ({epoch} batches of "
            f"{recipe['batch_size']}): use at most {epoch}, and --more-epochs for a longer probe"
        )
    if 2 * args.eval_batches > test:
        raise SystemExit(
            f"error: --eval-batches {args.eval_batches} needs {2 * args.eval_batches} test batches of "
            f"{recipe['eval_batch_size']} and --test-size {args.test_size} has {test}: raise --test-size to at least "
            f"{2 * args.eval_batches * recipe['eval_batch_size']}"
        )


def recipe_facts(args: argparse.Namespace) -> dict[str, Any]:
    """Batch sizes, cache limit and evaluation frequency as the experiment config sets them."""
    from hydra import compose, initialize_config_dir

    from peftlab.conf import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=[f"experiment={args.method}_vtab1k", "data=vtab1k/cifar100"])
    return {
        "batch_size": cfg.data.batch_size,
        "eval_batch_size": cfg.data.eval_batch_size,
        "cache_max_gb": cfg.data.cache_max_gb,
        "check_val_every_n_epoch": cfg.trainer.check_val_every_n_epoch,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                "error: --device cuda: no CUDA device is available (run on a GPU machine, or --device cpu)"
            )
    ks = [int(k) for k in args.jobs_per_device.split(",")]
    recipe = recipe_facts(args)
    check_probe_sizes(args, recipe)
    costs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="peftlab-sweep-bench-") as scratch:
        scratch = Path(scratch)
        root = scratch / "vtab-1k"
        write_task(root / "cifar100", args.test_size, args.source_px)
        rate = decode_rate(root / "cifar100")
        for k in ks:  # the report is rewritten after each k: a run stopped early keeps the k values it measured
            costs[k] = job_costs(args, root, k, scratch / "logs")
            report = sweep_report(args, recipe, rate, costs, complete=k == ks[-1])
            write(report, args)
    return report


def sweep_report(
    args: argparse.Namespace, recipe: dict[str, Any], rate: float, costs: dict[int, dict[str, Any]], complete: bool
) -> dict[str, Any]:
    decode_s = sum((TRAIN_IMAGES + n) / rate for n in VTAB1K_TEST_SIZES.values())
    estimates = {}
    for k, c in costs.items():
        with_limit = {**recipe, "cache_max_gb": cache_limit_gb(recipe["cache_max_gb"], args.device, k)}
        jobs = {task: task_seconds(c, n, with_limit, args.epochs, rate) for task, n in VTAB1K_TEST_SIZES.items()}
        estimates[k] = {"per_task_s": jobs, "sweep_s": c["launcher_s"] + sum(jobs.values()) / k + decode_s}
    return {
        "kind": "peftlab-bench-sweep",
        "command": " ".join(["experiments/bench_sweep.py", *sys.argv[1:]]),
        "settings": {**vars(args), "out_dir": str(args.out_dir)},
        "complete": complete,
        "recipe": recipe,
        "decode_images_per_s": rate,
        "decode_first_jobs_s": decode_s,
        "costs_by_k": costs,
        "estimates_by_k": estimates,
    }


def markdown(report: dict[str, Any]) -> str:
    s, r = report["settings"], report["recipe"]
    lines = [
        f"# VTAB-1k sweep estimate: {s['method']}, {s['backbone']}, {s['device']}",
        *([] if report.get("complete", True) else ["", "**Incomplete: stopped before every k was measured.**"]),
        "",
        f"- {s['epochs']} epochs × {TRAIN_IMAGES} images at batch {r['batch_size']}, evaluation every "
        f"{r['check_val_every_n_epoch']} epoch(s) at batch {r['eval_batch_size']}, 19 tasks at their real test sizes",
        f"- probes: B={s['train_batches']} train batches, M={s['more_epochs']} more epochs, V={s['eval_batches']} "
        "test batches; generated task: "
        f"{s['test_size']} test JPEGs of {s['source_px']} px; cache build {report['decode_images_per_s']:.0f} img/s "
        f"({report['decode_first_jobs_s'] / 60:.1f} min for all tasks, first job of each task only)",
        "",
        "| jobs per device | launcher s/sweep | fixed s/job | s/train batch | s/eval batch | sweep h |",
        "|---|---|---|---|---|---|",
    ]
    for k, c in report["costs_by_k"].items():
        sweep = report["estimates_by_k"][k]["sweep_s"]
        costs = f"{c['fixed_s']:.1f} | {c['train_batch_s']:.3f} | {c['eval_batch_s']:.3f}"
        lines.append(f"| {k} | {c['launcher_s']:.1f} | {costs} | {sweep / 3600:.2f} |")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    stem = f"sweep-{args.device}-{args.backbone}-{args.method}" + (f"-{args.tag}" if args.tag else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report["markdown"] = markdown(report)
    (args.out_dir / f"{stem}.md").write_text(report["markdown"])
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(report["markdown"])
    return report


if __name__ == "__main__":
    run(parse_args())
