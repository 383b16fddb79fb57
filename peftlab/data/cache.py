"""The fast path for small datasets: decode once into a uint8 tensor cache and serve batches from it."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from peftlab.conf import JOBS_PER_DEVICE_ENV
from peftlab.data.images import decode_resized_uint8, normalize_uint8
from peftlab.data.sampling import ResumablePass, loader_seed, rank_and_world
from peftlab.data.splits import LabeledImages

log = logging.getLogger(__name__)

CACHE_MODES = ("none", "memory", "disk")
CACHE_FORMAT_VERSION = "peftlab-uint8-cache-v1"
CACHE_DIR_NAME = ".peftlab_cache"


#: ``cache_max_gb: auto`` on the CPU, and the share of a GPU's memory, and of the host's (where a cache is decoded or
#: loaded before it moves to the GPU), that it gives the caches of the jobs on one device
CPU_CACHE_MAX_GB = 4.0
GPU_CACHE_SHARE = 0.5
HOST_CACHE_SHARE = 0.5


def host_memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_cache_max_gb(value: float | str, device: torch.device, jobs: int | None = None) -> float:
    """``data.cache_max_gb``: a number of GB, or ``auto``: on a GPU, half its memory divided among the ``jobs`` that
    share it (default: the number ``hydra/launcher=parallel`` gives each job, else 1), and at most half the host's
    memory divided likewise (a cache is built in host memory first), so that the large VTAB-1k test splits
    (dSprites: 11 GB) are cached on an H100/H200 instead of decoded at every evaluation; on the CPU, 4 GB."""
    if value != "auto":
        return float(value)
    if device.type != "cuda":
        return CPU_CACHE_MAX_GB
    if jobs is None:
        jobs = int(os.environ.get(JOBS_PER_DEVICE_ENV) or 1)
    gpu = torch.cuda.get_device_properties(device).total_memory * GPU_CACHE_SHARE
    return min(gpu, host_memory_bytes() * HOST_CACHE_SHARE) / max(1, jobs) / 1e9


def check_cache_max_gb(value: float | str) -> float | str:
    """One clear error for a value that is neither ``auto`` nor a number of GB >= 0."""
    if value == "auto":
        return value
    try:
        if float(value) >= 0 and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"data.cache_max_gb={value!r} is invalid: expected auto or a number of GB >= 0 (0: no cache)")


def cache_nbytes(num_images: int, image_size: int) -> int:
    """Bytes a uint8 cache of ``num_images`` RGB images of ``image_size``² takes."""
    return num_images * 3 * image_size * image_size


def cache_key(images: LabeledImages, image_size: int, interpolation: str) -> str:
    """Content hash of the split files, each image's size and mtime, and the resize settings."""
    digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{image_size}|{interpolation}".encode())
    for source in images.sources:
        digest.update(source.read_bytes())
    for path in images.paths:
        stat = path.stat()
        digest.update(f"|{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def decode_all(
    images: LabeledImages, image_size: int, interpolation: str, workers: int = 4, progress: bool = True
) -> torch.Tensor:
    """Decodes and resizes every image (threads; PIL releases the GIL) into one (N, 3, S, S) uint8 tensor."""
    from tqdm.auto import tqdm

    cache = torch.empty((len(images), 3, image_size, image_size), dtype=torch.uint8)

    def fill(index: int) -> None:
        cache[index] = decode_resized_uint8(images.paths[index], image_size, interpolation)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        done = pool.map(fill, range(len(images)))
        if progress:
            done = tqdm(
                done, total=len(images), desc=f"caching {images.name} ({image_size}px)", leave=False, disable=None
            )
        for _ in done:
            pass
    return cache


def load_or_build_cache(
    images: LabeledImages,
    image_size: int,
    interpolation: str,
    mode: str,
    cache_dir: Path | None = None,
    workers: int = 4,
    progress: bool = True,
) -> tuple[torch.Tensor, str]:
    """Returns the uint8 cache of a split and where it came from (``memory`` or the ``.pt`` file path).

    With ``mode="disk"`` the cache is read from (or written to) ``cache_dir`` as a ``.pt`` file named by
    :func:`cache_key`, so any change to the split file, an image or the resize settings builds a new one. Jobs of the
    same task share it: the first decodes under an exclusive lock and publishes the file by an atomic rename; jobs that
    start meanwhile wait for the lock and load the file (only the first job of a task decodes).
    """
    if mode == "memory" or cache_dir is None:
        return decode_all(images, image_size, interpolation, workers, progress), "memory"
    key = cache_key(images, image_size, interpolation)
    path = cache_dir / f"{images.name}-{image_size}px-{interpolation}-{key[:16]}.pt"
    expected = (len(images), 3, image_size, image_size)
    stored = _load_if_valid(path, expected)
    if stored is not None:
        return stored, str(path)
    try:
        with _exclusive(path.with_name(f".{path.name}.lock")):
            stored = _load_if_valid(path, expected)  # built by a concurrent job while this one waited
            if stored is not None:
                return stored, str(path)
            cache = decode_all(images, image_size, interpolation, workers, progress)
            _save_atomically(cache, path)
    except OSError as error:
        log.warning("could not write the data cache %s (%s); keeping it in memory only", path, error)
        return decode_all(images, image_size, interpolation, workers, progress), "memory"
    return cache, str(path)


def _load_if_valid(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    stored = torch.load(path, mmap=True, weights_only=True)
    if stored.shape == shape and stored.dtype == torch.uint8:
        return stored
    log.warning("ignoring cache %s: unexpected shape %s", path, tuple(stored.shape))
    return None


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (``flock``): concurrent jobs of one task decode a split once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_atomically(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(tensor, partial)
    os.replace(partial, path)


class CachedBatchLoader(ResumablePass):
    """Iterates (images, labels) batches from a uint8 cache, like a DataLoader over it.

    Batches are gathered by index, optionally flipped per sample, converted to float and normalised on the cache's
    device, so a cache on the GPU yields GPU batches. Under ``torch.distributed`` each rank takes a padded,
    disjoint share of the same permutation, as ``DistributedSampler`` does.

    Args:
        images: uint8 tensor (N, 3, H, W), on any device.
        labels: int64 tensor (N,).
        batch_size: Samples per batch.
        mean: Per-channel mean (3 values).
        std: Per-channel std (3 values).
        shuffle: Draw a new permutation every epoch.
        drop_last: Drop the last incomplete batch.
        hflip: Flip each sample horizontally with probability 0.5.
        seed: Seed of the loader's generator; by default drawn from torch's global RNG (set by ``seed_everything``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean,
        std,
        shuffle: bool = False,
        drop_last: bool = False,
        hflip: bool = False,
        seed: int | None = None,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (N,3,H,W) and N labels, got {images.shape} {labels.shape}")
        self.images = images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
        self.shuffle, self.drop_last, self.hflip = shuffle, drop_last, hflip
        self.seed = loader_seed(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Reseeds from (seed, epoch), so epoch N draws the same order and flips whether or not a run was resumed.

        ``ClassificationModule`` calls this at the start of every training epoch (like ``DistributedSampler``'s).
        """
        self.epoch = epoch
        self.generator = torch.Generator().manual_seed(self.seed + 1_000_003 * epoch)

    def __len__(self) -> int:
        samples = self._samples_per_rank()
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def __iter__(self):
        order = self._rank_order()
        skip = self._start_pass()
        for number, start in enumerate(range(0, len(order), self.batch_size), 1):
            index = order[start : start + self.batch_size]
            if self.drop_last and len(index) < self.batch_size:
                return
            if number <= skip:
                self._flips(len(index))  # drawn as the uninterrupted pass did, so the later batches' flips match
                continue
            self.batches_done += 1
            yield self._batch(index)

    def _flips(self, count: int) -> torch.Tensor | None:
        return (torch.rand(count, generator=self.generator) < 0.5) if self.hflip else None

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = index.to(self.images.device)
        images = self.images[index]
        flip = self._flips(len(index))
        if flip is not None:
            flip = flip.to(images.device)
            images[flip] = images[flip].flip(-1)
        return normalize_uint8(images, self.mean, self.std), self.labels[index]

    def _rank_order(self) -> torch.Tensor:
        count = len(self.images)
        order = torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        rank, world = rank_and_world()
        if world == 1:
            return order
        padded = self._samples_per_rank() * world
        order = torch.cat([order, order[: padded - count]])
        return order[rank::world]

    def _samples_per_rank(self) -> int:
        _, world = rank_and_world()
        return math.ceil(len(self.images) / world)
