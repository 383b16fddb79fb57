"""Your own images in the plain class-per-folder layout: ``<root>/{train,val,test}/<class name>/<image>``.

Classes are the sub-folders of ``train/``, sorted by name (as torchvision's ``ImageFolder``); ``val/`` and ``test/``
may not hold a class that ``train/`` lacks. ``split="search"`` trains on train and evaluates val; ``split="final"``
trains on train + val and evaluates test. Preprocessing and the uint8 cache are those of the VTAB-1k module (resize
to a square, no crop, optional hflip).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab.data.catalog import CUSTOM_GROUP
from peftlab.data.errors import DataError, Problem
from peftlab.data.splits import LabeledImages
from peftlab.data.validate import count_problems, label_problems
from peftlab.data.vtab import VTABDataModule

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FOLDER_SPLITS = ("train", "val", "test")
FOLDER_PROTOCOL = {"search": (("train",), ("val",)), "final": (("train", "val"), ("test",))}
FOLDER_FIX = "arrange the images as <data.root>/{train,val,test}/<class name>/<image> (one folder per class)"


def class_names(root: Path | str) -> list[str]:
    """The sorted class folders of ``<root>/train`` (the label of class ``k`` is its index here).

    Raises:
        DataError: If ``<root>/train`` does not exist or holds no class folder.
    """
    train = Path(root).expanduser() / "train"
    names = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not names:
        found = "does not exist" if not train.is_dir() else "holds no class folder"
        raise DataError(Problem(str(train), found, FOLDER_FIX))
    return names


def count_class_folders(root: str) -> int:
    """``data.num_classes`` of the ``image_folder`` config: the number of class folders in ``<root>/train``."""
    return len(class_names(root))


class ImageFolderDataModule(VTABDataModule):
    """One task of your own in the class-per-folder layout (see the module docstring).

    Args:
        root: The folder holding ``train/``, ``val/`` and ``test/``.
        task: Its name in results and reports.
        num_classes: Must equal the number of class folders in ``train/`` (the config counts them).
        group: Report group (default ``custom``).
        dataset: Report table (default ``custom``).
        **kwargs: See :class:`~peftlab.data.vtab.VTABDataModule` (``cache``, ``hflip``, ...).
    """

    SPLITS = FOLDER_SPLITS
    PROTOCOL = FOLDER_PROTOCOL
    MISSING_CLASS_ADVICE = "every class folder of train/ should hold images"

    def __init__(
        self,
        root: str | Path,
        task: str,
        num_classes: int,
        group: str | None = CUSTOM_GROUP,
        dataset: str = "custom",
        **kwargs: Any,
    ):
        super().__init__(root, task, num_classes, group, dataset, **kwargs)
        self.classes: list[str] = []

    def locate(self) -> tuple[Path, str]:
        self.classes = class_names(self.root)
        if len(self.classes) != self.num_classes:
            raise DataError(
                Problem(
                    str(self.root / "train"),
                    f"has {len(self.classes)} class folders but data.num_classes={self.num_classes}",
                    "leave data.num_classes unset (it counts the class folders) or fix the folders",
                )
            )
        return self.root, self.root.name

    def read_split(self, split: str) -> tuple[LabeledImages, list[Problem]]:
        folder = self.root / split
        images = LabeledImages(split, [folder])
        if not folder.is_dir():
            return images, [Problem(str(folder), "split folder is missing", FOLDER_FIX)]
        problems = []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if class_dir.name not in self.classes:
                problems.append(Problem(str(class_dir), "class folder not in train/", "add it to train/ or remove it"))
                continue
            for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                images.paths.append(path)
                images.labels.append(self.classes.index(class_dir.name))
                images.origins.append(str(path))
        problems += count_problems(images, None, FOLDER_FIX) + label_problems(images, self.num_classes)
        return images, problems

    def describe(self) -> dict:
        return {**super().describe(), "classes": list(self.classes)}
