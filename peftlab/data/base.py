"""Shared parts of the VTAB-1k and FGVC data modules: protocol attributes, loaders, ``describe()``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from peftlab.data.datasets import ImageListDataset
from peftlab.data.images import interpolation_mode
from peftlab.data.splits import LabeledImages, check_split_name

log = logging.getLogger(__name__)

INCEPTION_MEAN_STD = (0.5, 0.5, 0.5)


def resolve_num_workers(num_workers: int | str) -> int:
    """``"auto"`` means min(8, CPU count); an int is used as given."""
    if num_workers == "auto":
        return min(8, os.cpu_count() or 1)
    return int(num_workers)


def resolve_pin_memory(pin_memory: bool | str) -> bool:
    """``"auto"`` pins host memory when CUDA is available."""
    return torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)


class ImageClassificationDataModule(L.LightningDataModule):
    """Common constructor arguments and loaders of peftlab's image-classification data modules.

    Args:
        root: Folder holding the benchmark's task folders.
        task: Task name (canonical or any known folder alias).
        num_classes: Number of classes of the task.
        group: Group the task is reported in (VTAB: natural / specialized / structured).
        dataset: Benchmark family used in results (``vtab1k``, ``fgvc``, ``demo``).
        split: ``search`` (train -> val) or ``final`` (train+val -> test).
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size.
        num_workers: DataLoader workers for the PIL path (int, or ``"auto"``).
        image_size: Side of the square network input.
        interpolation: Resize interpolation (``bicubic``, ``bilinear``, ...).
        mean: Per-channel normalisation mean (pass the backbone's).
        std: Per-channel normalisation std (pass the backbone's).
        pin_memory: Pin host memory (bool, or ``"auto"`` = when CUDA is available).
    """

    def __init__(
        self,
        root: str | Path,
        task: str,
        num_classes: int,
        group: str,
        dataset: str,
        split: str = "final",
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int | str = "auto",
        image_size: int = 224,
        interpolation: str = "bicubic",
        mean: Sequence[float] = INCEPTION_MEAN_STD,
        std: Sequence[float] = INCEPTION_MEAN_STD,
        pin_memory: bool | str = "auto",
    ):
        super().__init__()
        check_split_name(split)
        interpolation_mode(interpolation)
        self.root = Path(root).expanduser()
        self.task, self.num_classes, self.group, self.dataset, self.split = task, num_classes, group, dataset, split
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.image_size, self.interpolation = image_size, interpolation
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.pin_memory = resolve_pin_memory(pin_memory)
        self.task_dir: Path | None = None
        self.folder_found: str | None = None
        self.train_data: LabeledImages | None = None
        self.eval_data: LabeledImages | None = None

    def _image_loader(self, images: LabeledImages, transform: Callable, batch_size: int, train: bool) -> DataLoader:
        return DataLoader(
            ImageListDataset(images, transform),
            batch_size=batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _require_setup(self) -> None:
        if self.train_data is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for dataloaders")

    def describe(self) -> dict:
        """The data and preprocessing choices of this run, for results.json."""
        return {
            "dataset": self.dataset,
            "task": self.task,
            "group": self.group,
            "num_classes": self.num_classes,
            "split": self.split,
            "root": str(self.root),
            "task_dir": str(self.task_dir) if self.task_dir else None,
            "folder_found": self.folder_found,
            "train_files": [str(p) for p in self.train_data.sources] if self.train_data else None,
            "eval_files": [str(p) for p in self.eval_data.sources] if self.eval_data else None,
            "num_train": len(self.train_data) if self.train_data else None,
            "num_eval": len(self.eval_data) if self.eval_data else None,
            "image_size": self.image_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
        }
