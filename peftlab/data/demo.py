"""A small, learnable, deterministic dataset written in the real VTAB-1k (NOAH) layout."""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from peftlab.data.errors import DataError, Problem

DEMO_COUNTS = {"train800": 800, "val200": 200, "test": 400}
DEMO_INFO_FILE = "DEMO_INFO.json"


def make_demo_dataset(root: Path | str, num_classes: int = 4, image_size: int = 32, seed: int = 0) -> Path:
    """Writes the demo dataset to ``root`` unless a complete copy with the same settings is already there.

    Layout (as NOAH's VTAB-1k generator writes it): ``images/{train800,val200,train800val200,test}/NNNNNN.jpg``
    plus ``train800.txt``, ``val200.txt``, ``train800val200.txt`` (copies of the train800 and val200 images under
    their own folder) and ``test.txt``, with lines ``images/<split>/NNNNNN.jpg <label>``.
    Class ``k`` is a colour (hue ``k/C``) with stripes at angle ``k·180°/C``, plus random phase, jitter and noise.
    The data is generated in a temporary folder next to ``root`` and renamed into place, so an interrupted run
    never leaves a partial dataset.

    Args:
        root: Folder to create; its parent must be writable.
        num_classes: Number of classes.
        image_size: Side of the square JPEG images.
        seed: Seed of the generator; the same arguments always give the same files.

    Returns:
        ``root`` as a Path.

    Raises:
        DataError: If ``root`` exists but is not a complete demo with these settings.
    """
    root = Path(root)
    info = {"num_classes": num_classes, "image_size": image_size, "seed": seed, "counts": DEMO_COUNTS}
    if root.exists():
        _check_existing(root, info)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_demo(staging, info)
        os.rename(staging, root)
    except OSError:
        if not root.exists():  # lost a race only if someone else finished first
            raise
        _check_existing(root, info)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _check_existing(root: Path, info: dict) -> None:
    info_file = root / DEMO_INFO_FILE
    found = json.loads(info_file.read_text()) if info_file.is_file() else None
    if found != info:
        raise DataError(
            Problem(
                str(root),
                f"exists but is not a complete demo dataset with settings {info} (found {found})",
                "delete this folder (it is regenerated automatically) or point data.root at another folder",
            )
        )


def _write_demo(folder: Path, info: dict) -> None:
    rng = np.random.default_rng(info["seed"])
    labels = {split: rng.integers(0, info["num_classes"], size=n) for split, n in DEMO_COUNTS.items()}
    images = {split: [_demo_image(int(y), info, rng) for y in ys] for split, ys in labels.items()}
    images["train800val200"] = images["train800"] + images["val200"]
    labels["train800val200"] = np.concatenate([labels["train800"], labels["val200"]])
    for split in ("train800", "val200", "train800val200", "test"):
        _write_split(folder, split, images[split], labels[split])
    (folder / DEMO_INFO_FILE).write_text(json.dumps(info))  # written last: marks the copy complete


def _write_split(folder: Path, split: str, images: list[Image.Image], labels: np.ndarray) -> None:
    (folder / "images" / split).mkdir(parents=True)
    lines = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        relative = f"images/{split}/{index:06d}.jpg"
        image.save(folder / relative)  # PIL's default JPEG quality, like the real generator
        lines.append(f"{relative} {label}\n")
    (folder / f"{split}.txt").write_text("".join(lines))


def _demo_image(label: int, info: dict, rng: np.random.Generator) -> Image.Image:
    size, num_classes = info["image_size"], info["num_classes"]
    angle = np.pi * label / num_classes + rng.normal(0, 0.05)
    y, x = np.mgrid[0:size, 0:size] / size
    stripes = np.sin(2 * np.pi * 4 * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    colour = np.array(colorsys.hsv_to_rgb(label / num_classes + rng.normal(0, 0.02), 0.8, 0.9))
    pixels = 0.5 + 0.3 * stripes[..., None] * colour + 0.2 * (colour - 0.5) + rng.normal(0, 0.08, (size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
