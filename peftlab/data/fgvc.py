"""FGVC in the VPT layout: ``{train,val,test}.json`` ({relative image path: class id}) next to each image folder."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftlab.data.base import ImageClassificationDataModule
from peftlab.data.catalog import FGVCSpec, benchmark_task
from peftlab.data.errors import DataError, Problem
from peftlab.data.splits import FGVC_PROTOCOL, FGVC_SOURCE_FIX, LabeledImages, find_task_dir, read_json_split
from peftlab.data.transforms import fgvc_eval_transform, fgvc_train_transform
from peftlab.data.validate import count_problems, missing_file_problems, raise_if_any

log = logging.getLogger(__name__)


def fgvc_task_spec(task: str, num_classes: int) -> FGVCSpec:
    """Returns the catalog entry of an FGVC dataset; an explicit class count must agree with it."""
    spec = benchmark_task("fgvc", task)
    if num_classes != spec.num_classes:
        raise ValueError(f"data.num_classes={num_classes} but FGVC {spec.name} has {spec.num_classes} classes")
    return spec


def find_image_dir(dataset_dir: Path, spec: FGVCSpec, sample_key: str) -> Path:
    """Returns the first of the dataset's image folders that holds ``sample_key`` (a path from train.json)."""
    for candidate in spec.image_dirs:
        if (dataset_dir / candidate / sample_key).is_file():
            return dataset_dir / candidate
    tried = [str(dataset_dir / c / sample_key) for c in spec.image_dirs]
    raise DataError(
        Problem(
            str(dataset_dir),
            f"cannot find the images listed in train.json; tried {tried}",
            f"put the {spec.name} images under {dataset_dir / spec.image_dirs[0]} with the paths train.json uses",
        )
    )


def read_fgvc_splits(dataset_dir: Path, spec: FGVCSpec, splits: Sequence[str], num_classes: int) -> LabeledImages:
    """Reads and concatenates json splits, remapping class ids to 0..C-1 via sorted(set(train.json ids)).

    Raises:
        DataError: For missing or malformed files, class ids absent from train.json, a class count different from
            ``num_classes``, or missing images.
    """
    train, problems = read_json_split(dataset_dir, "train")
    class_ids = sorted(set(train.values()))
    if train and len(class_ids) != num_classes:
        problems.append(
            Problem(
                str(dataset_dir / "train.json"),
                f"has {len(class_ids)} classes but data.num_classes={num_classes}",
                "use the VPT json splits of this dataset, or set data.num_classes",
            )
        )
    entries = {name: read_json_split(dataset_dir, name) for name in splits}
    for _, split_problems in entries.values():
        problems += split_problems
    raise_if_any(problems)
    image_dir = find_image_dir(dataset_dir, spec, next(iter(train)))
    remap = {class_id: index for index, class_id in enumerate(class_ids)}
    merged = LabeledImages("+".join(splits))
    for name, (split_entries, _) in entries.items():
        merged.extend(_labeled(dataset_dir / f"{name}.json", split_entries, image_dir, remap, problems))
    raise_if_any(problems + count_problems(merged, None, FGVC_SOURCE_FIX) + missing_file_problems(merged))
    return merged


def _labeled(
    source: Path, entries: dict[str, int], image_dir: Path, remap: dict[int, int], problems: list[Problem]
) -> LabeledImages:
    images = LabeledImages(source.stem, [source])
    for key, class_id in entries.items():
        if class_id not in remap:
            problems.append(
                Problem(
                    f"{source}[{key!r}]",
                    f"class id {class_id} does not occur in train.json",
                    "use train/val/test json files from the same VPT split",
                )
            )
            continue
        images.paths.append(image_dir / key)
        images.labels.append(remap[class_id])
        images.origins.append(f"{source}[{key!r}]")
    return images


class FGVCDataModule(ImageClassificationDataModule):
    """One FGVC dataset with VPT's json splits, served through the PIL DataLoader path.

    Train: RandomResizedCrop(``image_size``, ``crop_scale``) + horizontal flip. Eval: resize the short side to
    ``resize_size`` + center crop ``image_size``. ``split="search"``: train.json -> val.json; ``split="final"``:
    train.json + val.json -> test.json.

    Args:
        resize_size: Short side before the eval center crop.
        crop_scale: Area range of RandomResizedCrop.
        **kwargs: See :class:`~peftlab.data.base.ImageClassificationDataModule`.
    """

    SPLITS = ("train", "val", "test")
    PROTOCOL = FGVC_PROTOCOL
    MISSING_CLASS_ADVICE = "use the VPT json splits of this dataset, or check data.num_classes"

    def __init__(
        self,
        root: str | Path,
        task: str,
        num_classes: int,
        group: str = "fgvc",
        dataset: str = "fgvc",
        *,
        resize_size: int = 256,
        crop_scale: Sequence[float] = (0.08, 1.0),
        **kwargs: Any,
    ):
        super().__init__(root, task, num_classes, group, dataset, **kwargs)
        self.spec = fgvc_task_spec(task, num_classes)
        self.resize_size = resize_size
        self.crop_scale = tuple(float(s) for s in crop_scale)

    def locate(self) -> tuple[Path, str]:
        return find_task_dir(self.root, self.spec, FGVC_SOURCE_FIX)

    def read_split(self, split: str) -> tuple[LabeledImages, list[Problem]]:
        try:
            return read_fgvc_splits(self.task_dir, self.spec, [split], self.num_classes), []
        except DataError as error:
            return LabeledImages(split, [self.task_dir / f"{split}.json"]), error.problems

    def train_transform(self):
        return fgvc_train_transform(self.image_size, self.interpolation, self.mean, self.std, self.crop_scale)

    def eval_transform(self):
        return fgvc_eval_transform(self.image_size, self.resize_size, self.interpolation, self.mean, self.std)

    def train_dataloader(self):
        self._require_setup()
        return self._image_loader(self.train_data, self.train_transform(), self.batch_size, train=True)

    def val_dataloader(self):
        self._require_setup()
        return self._image_loader(self.eval_data, self.eval_transform(), self.eval_batch_size, train=False)

    def test_dataloader(self):
        return self.val_dataloader()

    def eval_crop(self) -> dict:
        """Short side to ``resize_size``, then a center crop."""
        return {"crop_pct": self.image_size / self.resize_size, "crop_mode": "center"}

    def describe(self) -> dict:
        return {
            **super().describe(),
            "train_transform": f"RandomResizedCrop({self.image_size}, scale={self.crop_scale}) + HFlip",
            "eval_transform": f"Resize({self.resize_size}) + CenterCrop({self.image_size})",
            "hflip": True,
            "cache": "none",
        }
