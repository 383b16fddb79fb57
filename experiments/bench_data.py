"""Throughput of the VTAB-1k data paths: uint8 tensor cache vs the plain PIL DataLoader.

Generates demo tasks in the real NOAH layout (JPEG files + txt splits) at several source image sizes, then measures
images/s for one training epoch over train800val200 (1000 images) resized to 224x224:

* ``pil``: DataLoader over JPEG files (decode + resize + normalise per sample), for each ``--workers`` value;
* ``cache build``: the one-time decode into the uint8 cache (threads);
* ``cache load``: reading the ``.pt`` disk cache back (memory-mapped);
* ``cached``: batches served from the uint8 cache (gather + float conversion + normalise), optionally with hflip;
  with CUDA available also from a cache kept on the GPU.

Usage: ``python experiments/bench_data.py [--sizes 32 128 384] [--workers 0 2] [--epochs 3] [--threads N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from peftlab.data import VTABDataModule, make_demo_dataset


def images_per_second(loader, epochs: int) -> float:
    """Iterates ``epochs`` full epochs; returns the median per-epoch rate (robust to a busy machine)."""
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += len(images)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def datamodule(root: Path, cache: str, workers: int, hflip: bool = False, device: str = "cpu") -> VTABDataModule:
    data = VTABDataModule(
        root,
        "demo",
        4,
        "demo",
        "demo",
        split="final",
        batch_size=32,
        num_workers=workers,
        image_size=224,
        cache=cache,
        hflip=hflip,
        cache_device=device,
        pin_memory=False,
    )
    data.setup()
    return data


def timed_setup(root: Path, cache: str, workers: int) -> tuple[VTABDataModule, float]:
    start = time.perf_counter()
    data = datamodule(root, cache, workers)
    return data, len(data.train_data) / (time.perf_counter() - start)


def bench_size(folder: Path, source_size: int, workers: list[int], epochs: int) -> list[tuple[str, float]]:
    """Measures every path on one generated task; returns (path label, images/s) rows."""
    root = make_demo_dataset(folder / f"{source_size}px" / "demo", image_size=source_size)
    rows = []
    for count in workers:
        plain = datamodule(root, "none", count)
        rows.append((f"pil, {count} workers", images_per_second(plain.train_dataloader(), epochs)))
    build_workers = max(workers)
    _, build_rate = timed_setup(root, "disk", build_workers)  # writes the .pt cache (train and eval splits)
    rows.append((f"cache build ({max(build_workers, 2)} threads)", build_rate))
    cached, load_rate = timed_setup(root, "disk", build_workers)
    rows.append(("cache load (.pt, mmap)", load_rate))
    rows.append(("cached", images_per_second(cached.train_dataloader(), epochs)))
    flipped = datamodule(root, "disk", build_workers, hflip=True)
    rows.append(("cached + hflip", images_per_second(flipped.train_dataloader(), epochs)))
    if torch.cuda.is_available():
        on_gpu = datamodule(root, "disk", build_workers, hflip=True, device="cuda")
        rows.append(("cached on GPU + hflip", images_per_second(on_gpu.train_dataloader(), epochs)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 384], help="source JPEG sizes (px)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers (PIL path)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per measurement (median reported)")
    parser.add_argument("--dir", type=Path, default=None, help="where to generate the data (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the main process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        results = {size: bench_size(folder, size, args.workers, args.epochs) for size in args.sizes}
    labels = [label for label, _ in next(iter(results.values()))]
    header = ["path (images/s, 224x224, batch 32)", *[f"src {s}px" for s in args.sizes]]
    print(" | ".join(header))
    print(" | ".join("-" * len(h) for h in header))
    for index, label in enumerate(labels):
        print(" | ".join([label.ljust(len(header[0])), *[f"{results[s][index][1]:>9.0f}" for s in args.sizes]]))
    print(f"\ntorch threads: {torch.get_num_threads()}; median of {args.epochs} epochs of 1000 train images")


if __name__ == "__main__":
    main()
