"""Shared parts of peftlab's data modules: protocol attributes, the split reading and checking that ``data.check``
and training share (:meth:`ImageClassificationDataModule.check`), loaders, ``describe()``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from peftlab.data.datasets import ImageListDataset, ResumableImageLoader
from peftlab.data.errors import DataError, Problem
from peftlab.data.images import interpolation_mode
from peftlab.data.splits import LabeledImages, check_split_name
from peftlab.data.validate import decode_problems, missing_classes, raise_if_any

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


@dataclass
class CheckReport:
    """What :meth:`ImageClassificationDataModule.check` found for one task: samples per split, the folder used,
    problems (each with its fix) and warnings."""

    name: str
    group: str
    counts: dict[str, int | str]
    folder: str = "-"
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class ImageClassificationDataModule(L.LightningDataModule):
    """Common constructor arguments, split reading, checks and loaders of peftlab's image-classification data modules.

    A subclass describes its on-disk layout: ``SPLITS`` (every split of the layout, in order), ``PROTOCOL``
    (``{"search" | "final": (train splits, eval splits)}``), :meth:`locate` (the task's folder) and
    :meth:`read_split` (one split's images and the problems found without decoding).

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
        seed: Seed of the training order and augmentations (default: drawn from torch's global RNG, so
            ``seed_everything`` makes it reproducible).
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
        seed: int | None = None,
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
        self.seed = seed
        self.task_dir: Path | None = None
        self.folder_found: str | None = None
        self.train_data: LabeledImages | None = None
        self.eval_data: LabeledImages | None = None

    SPLITS: tuple[str, ...] = ()
    PROTOCOL: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    #: what a train split without samples of some class means for this layout
    MISSING_CLASS_ADVICE = "check data.num_classes"

    def locate(self) -> tuple[Path, str]:
        """The task's folder and the folder name that matched (raises DataError)."""
        raise NotImplementedError

    def read_split(self, split: str) -> tuple[LabeledImages, list[Problem]]:
        """One split's images and labels, plus every problem found without decoding."""
        raise NotImplementedError

    def check(self, decode: bool = True, workers: int = 4, splits: Sequence[str] | None = None) -> CheckReport:
        """Checks the task on disk without raising: ``splits`` (default: every split of the layout) are read, their
        counts, labels and files checked and, with ``decode``, every image decoded. ``data.check`` runs it on every
        split; training runs it (without decoding) on the splits of its protocol before any weights are loaded."""
        splits = tuple(splits or self.SPLITS)
        report = CheckReport(self.task, self.group, dict.fromkeys(splits, "-"))
        try:
            self.prepare_data()
            self.task_dir, self.folder_found = self.locate()
        except DataError as error:
            report.problems += error.problems
            return report
        report.folder = self.folder_found
        for split in splits:
            images, problems = self.read_split(split)
            report.counts[split] = len(images)
            report.problems += problems
            if decode and images.paths:
                report.problems += decode_problems(images, workers, progress=True)
            if split.startswith("train") and images.paths:
                report.warnings += self._missing_class_warnings(images)
        return report

    def check_protocol(self) -> None:
        """The cheap checks of the splits this run reads (no decoding); raises one DataError listing every problem."""
        train_splits, eval_splits = self.PROTOCOL[self.split]
        raise_if_any(list(dict.fromkeys(self.check(decode=False, splits=(*train_splits, *eval_splits)).problems)))

    def read_splits(self, splits: Sequence[str]) -> LabeledImages:
        """The concatenation of ``splits`` (raises DataError listing every problem)."""
        merged, problems = LabeledImages("+".join(splits)), []
        for split in splits:
            images, split_problems = self.read_split(split)
            merged.extend(images)
            problems += split_problems
        raise_if_any(list(dict.fromkeys(problems)))  # a file read for several splits reports its problems once
        return merged

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        self.prepare_data()
        self.task_dir, self.folder_found = self.locate()
        log.info("%s %s: using folder %s", self.dataset, self.task, self.task_dir)
        train_splits, eval_splits = self.PROTOCOL[self.split]
        self.train_data = self.read_splits(train_splits)
        self.eval_data = self.read_splits(eval_splits)

    def use_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise with the backbone's statistics (known once the model is built)."""
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def _missing_class_warnings(self, images: LabeledImages) -> list[str]:
        missing = missing_classes(images, self.num_classes)
        if not missing:
            return []
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        return [
            f"{images.sources[0]}: {len(missing)} of {self.num_classes} classes have no sample ({shown}); "
            f"{self.MISSING_CLASS_ADVICE}"
        ]

    def _image_loader(
        self, images: LabeledImages, transform: Callable, batch_size: int, train: bool
    ) -> DataLoader | ResumableImageLoader:
        """The PIL path; the training loader shuffles with seeded per-sample augmentations and resumes mid-epoch."""
        dataset = ImageListDataset(images, transform)
        workers = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }
        if train:
            return ResumableImageLoader(dataset, batch_size, seed=self.seed, shuffle=self.shuffles(), **workers)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **workers)

    def shuffles(self) -> bool:
        """Whether training draws a new order every epoch: not when overfitting (``trainer.overfit_batches``), which
        must see the same batches every epoch (Lightning cannot turn off shuffling in peftlab's loaders)."""
        trainer = getattr(self, "trainer", None)
        return not (trainer is not None and trainer.overfit_batches)

    def _require_setup(self) -> None:
        if self.train_data is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for dataloaders")

    def timm_data_config(self) -> dict:
        """The evaluation transform in timm's pretrained-config terms (``eval_crop`` says how the image is cropped)."""
        return {
            "input_size": (3, self.image_size, self.image_size),
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            **self.eval_crop(),
        }

    def eval_crop(self) -> dict:
        """``crop_pct`` and ``crop_mode`` of the evaluation transform, in timm's terms."""
        raise NotImplementedError

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
