"""Tiny datasets in the real on-disk formats (NOAH VTAB-1k txt layout, VPT FGVC json layout), with real JPEGs.

Written independently of ``peftlab.data`` so the tests check the readers against the formats, not against
themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

VTAB_COUNTS = {"train800": 800, "val200": 200, "test": 24}


def random_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (11, 7), mode: str = "RGB") -> None:
    """Writes a random JPEG of ``size`` = (width, height); ``mode="L"`` writes a grayscale one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    Image.fromarray(pixels, mode=None).convert(mode).save(path, format="JPEG")


def write_vtab_task(task_dir: Path, num_classes: int = 3, seed: int = 0, counts: dict | None = None) -> Path:
    """Writes one VTAB-1k task as NOAH's generator does: 800/200/1000 (copies)/24 test, small non-square JPEGs
    (``counts`` = {"train800": n, "val200": n, "test": n} for a task of your own with other sizes).

    Image 0 of every split is grayscale, to exercise the RGB conversion. Labels cycle through all classes.
    """
    rng = np.random.default_rng(seed)
    labels = {split: [i % num_classes for i in range(n)] for split, n in (counts or VTAB_COUNTS).items()}
    labels["train800val200"] = labels["train800"] + labels["val200"]
    for split in ("train800", "val200", "train800val200", "test"):
        lines = []
        for index, label in enumerate(labels[split]):
            relative = f"images/{split}/{index:06d}.jpg"
            random_jpeg(task_dir / relative, rng, mode="L" if index == 0 else "RGB")
            lines.append(f"{relative} {label}\n")
        (task_dir / f"{split}.txt").write_text("".join(lines))
    return task_dir


def write_fgvc_dataset(
    dataset_dir: Path,
    num_classes: int,
    image_dir: str = "images",
    first_id: int = 1,
    eval_per_split: int = 6,
    seed: int = 0,
) -> Path:
    """Writes a VPT-style FGVC dataset: {train,val,test}.json mapping ``<class folder>/<file>.jpg`` to class ids.

    Class ids start at ``first_id`` (VPT files are not necessarily 0-based); train has one image per class,
    val and test ``eval_per_split`` images each.
    """
    rng = np.random.default_rng(seed)
    ids = list(range(first_id, first_id + num_classes))
    splits = {
        "train": ids,
        "val": [ids[i % num_classes] for i in range(eval_per_split)],
        "test": [ids[-1 - i % num_classes] for i in range(eval_per_split)],
    }
    for split, class_ids in splits.items():
        entries = {}
        for index, class_id in enumerate(class_ids):
            key = f"{class_id:03d}.class/{split}_{index:04d}.jpg"
            random_jpeg(dataset_dir / image_dir / key, rng, size=(40, 30))
            entries[key] = class_id
        (dataset_dir / f"{split}.json").write_text(json.dumps(entries))
    return dataset_dir
