"""VTAB-1k in the NOAH layout: ``<root>/<task>/{train800,val200,train800val200,test}.txt`` + ``images/``."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from peftlab.data.base import ImageClassificationDataModule
from peftlab.data.cache import (
    CACHE_DIR_NAME,
    CACHE_MODES,
    CachedBatchLoader,
    cache_nbytes,
    check_cache_max_gb,
    load_or_build_cache,
    resolve_cache_max_gb,
)
from peftlab.data.catalog import BENCHMARK_TITLES, BENCHMARKS, CUSTOM_GROUP, DEMO_TASK, TaskSpec, benchmark_task
from peftlab.data.demo import make_demo_dataset
from peftlab.data.errors import Problem
from peftlab.data.splits import (
    VTAB_EXPECTED_COUNTS,
    VTAB_PROTOCOL,
    VTAB_SOURCE_FIX,
    LabeledImages,
    find_task_dir,
    read_txt_split,
)
from peftlab.data.transforms import VTABTransform
from peftlab.data.validate import cheap_problems

log = logging.getLogger(__name__)

VTAB_MISSING_CLASS_ADVICE = (
    "expected for VTAB-1k tasks with many classes (train800 is not class-stratified), otherwise check data.num_classes"
)


def task_spec(dataset: str, task: str, num_classes: int, group: str | None) -> TaskSpec:
    """The catalog entry of a built-in benchmark task (an explicit class count or group must agree with it), or the
    spec of your own task: its name as its folder, ``group`` defaulting to ``custom``. The demo takes any class
    count (it is generated with it)."""
    if dataset not in BENCHMARKS:
        return TaskSpec(task, num_classes, group or CUSTOM_GROUP, (task,), task)
    spec = benchmark_task(dataset, task)
    title = BENCHMARK_TITLES[dataset]
    if dataset == "demo":
        spec = replace(spec, num_classes=num_classes)
    if num_classes != spec.num_classes:
        raise ValueError(f"data.num_classes={num_classes} but {title} {spec.name} has {spec.num_classes} classes")
    if group is not None and group != spec.group:
        raise ValueError(f"data.group={group!r} but {title} {spec.name} is in group {spec.group!r}")
    return spec


class VTABDataModule(ImageClassificationDataModule):
    """One task in the VTAB-1k (NOAH) layout: a built-in VTAB-1k task, the generated demo or your own task
    (``dataset`` other than ``vtab1k``/``demo``), with the papers' preprocessing and a uint8 tensor fast path.

    Preprocessing: resize to ``image_size`` x ``image_size`` (no crop), optional random hflip, normalise with the
    backbone's ``mean``/``std``. ``split="search"`` trains on train800 and evaluates val200; ``split="final"``
    trains on train800val200 and evaluates test. ``val_dataloader`` and ``test_dataloader`` both serve the eval split.

    With ``cache`` = ``memory`` or ``disk``, each split is decoded once into a uint8 (N, 3, S, S) tensor (kept on the
    training device when ``cache_device="auto"`` and training runs on CUDA) and batches are normalised on the fly;
    splits larger than ``cache_max_gb`` use the PIL DataLoader path instead. ``disk`` also stores the tensor as
    ``<task_dir>/.peftlab_cache/*.pt``, keyed by a content hash.

    Args:
        cache: ``none``, ``memory`` or ``disk``.
        hflip: Random horizontal flip of training images (off in the VTAB-1k protocol).
        generate_demo: Generate the demo dataset at ``root`` (``task`` must be ``demo``) before reading it.
        cache_device: ``auto`` (the trainer's device) or an explicit device such as ``cpu``.
        cache_max_gb: Largest split (in GB of uint8 pixels) that is cached; ``auto``: half the GPU's memory shared
            by the jobs on it when the cache is on a GPU, else 4 (:func:`~peftlab.data.cache.resolve_cache_max_gb`).
        group: Defaults to the task's VTAB group (your own task: ``custom``); a different value is an error.
        dataset: ``vtab1k`` or ``demo`` (the catalog's tasks), or any other name for your own task.
        **kwargs: See :class:`~peftlab.data.base.ImageClassificationDataModule`.
    """

    SPLITS = tuple(VTAB_EXPECTED_COUNTS)
    PROTOCOL = VTAB_PROTOCOL

    def __init__(
        self,
        root: str | Path,
        task: str,
        num_classes: int,
        group: str | None = None,
        dataset: str = "vtab1k",
        *,
        cache: str = "memory",
        hflip: bool = False,
        generate_demo: bool = False,
        cache_device: str = "auto",
        cache_max_gb: float | str = "auto",
        **kwargs: Any,
    ):
        spec = task_spec(dataset, task, num_classes, group)
        super().__init__(root, task, num_classes, spec.group, dataset, **kwargs)
        if cache not in CACHE_MODES:
            raise ValueError(f"data.cache={cache!r}; use one of {list(CACHE_MODES)}")
        if generate_demo and task != DEMO_TASK.name:
            raise ValueError(f"generate_demo=true only makes sense for task 'demo', not {task!r}")
        self.spec = spec
        self.cache, self.hflip, self.generate_demo = cache, hflip, generate_demo
        self.cache_device, self.cache_max_gb = cache_device, check_cache_max_gb(cache_max_gb)
        self.cached: dict[str, torch.Tensor] = {}
        if self.dataset == "vtab1k":
            self.MISSING_CLASS_ADVICE = VTAB_MISSING_CLASS_ADVICE
        self.cache_sources: dict[str, str] = {}

    def prepare_data(self) -> None:
        if self.generate_demo:
            make_demo_dataset(self.root, self.num_classes, self.image_size)

    def locate(self) -> tuple[Path, str]:
        if self.generate_demo:
            return self.root, self.root.name
        return find_task_dir(self.root, self.spec, VTAB_SOURCE_FIX)

    def read_split(self, split: str) -> tuple[LabeledImages, list[Problem]]:
        images, problems = read_txt_split(self.task_dir, split)
        if not problems or images.paths:
            expected = VTAB_EXPECTED_COUNTS.get(split) if self.dataset in BENCHMARKS else None
            problems += cheap_problems(images, self.num_classes, expected)
        return images, problems

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        super().setup(stage)  # generates the demo first if asked (skipping an existing complete copy)
        for role, images in (("train", self.train_data), ("eval", self.eval_data)):
            self._maybe_cache(role, images)

    def _maybe_cache(self, role: str, images: LabeledImages) -> None:
        if self.cache == "none":
            return
        limit = resolve_cache_max_gb(self.cache_max_gb, self._cache_device())
        if cache_nbytes(len(images), self.image_size) > limit * 1e9:
            log.info(
                "%s split %s is larger than cache_max_gb=%s (%.1f GB); using the PIL path",
                role,
                images.name,
                self.cache_max_gb,
                limit,
            )
            return
        cache_dir = self.task_dir / CACHE_DIR_NAME if self.cache == "disk" else None
        tensor, source = load_or_build_cache(
            images, self.image_size, self.interpolation, self.cache, cache_dir, workers=max(self.num_workers, 2)
        )
        self.cached[role] = tensor
        self.cache_sources[role] = source

    def _cache_device(self) -> torch.device:
        if self.cache_device != "auto":
            return torch.device(self.cache_device)
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return device if device.type == "cuda" else torch.device("cpu")

    def _loader(self, role: str, train: bool):
        self._require_setup()
        images = self.train_data if train else self.eval_data
        batch_size = self.batch_size if train else self.eval_batch_size
        if role in self.cached:
            # moved here rather than in setup(): the trainer (and so the device) is attached by now
            self.cached[role] = self.cached[role].to(self._cache_device())
            labels = torch.tensor(images.labels, dtype=torch.int64)
            return CachedBatchLoader(
                self.cached[role],
                labels,
                batch_size,
                self.mean,
                self.std,
                shuffle=train and self.shuffles(),
                hflip=train and self.hflip,
                seed=self.seed,
            )
        transform = VTABTransform(self.image_size, self.interpolation, self.mean, self.std, hflip=train and self.hflip)
        return self._image_loader(images, transform, batch_size, train)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("eval", train=False)

    def test_dataloader(self):
        return self._loader("eval", train=False)

    def eval_crop(self) -> dict:
        """A square resize, no crop."""
        return {"crop_pct": 1.0, "crop_mode": "squash"}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "resize": f"({self.image_size}, {self.image_size}) {self.interpolation}, no crop",
            "hflip": self.hflip,
            "cache": self.cache,
            "cache_device": self.cache_device,
            "cache_sources": dict(self.cache_sources),
        }
