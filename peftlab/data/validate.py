"""Checks on split contents: counts, label range, class coverage, files present and decodable."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from peftlab.data.errors import DataError, Problem
from peftlab.data.images import load_rgb
from peftlab.data.splits import VTAB_SOURCE_FIX, LabeledImages


def count_problems(images: LabeledImages, expected: int | None, fix: str = VTAB_SOURCE_FIX) -> list[Problem]:
    """Checks the number of samples (exactly ``expected``, or at least one when None); ``fix`` is the layout's
    advice for an empty split."""
    source = str(images.sources[0])
    if expected is None and len(images) == 0:
        return [Problem(source, "split is empty", fix)]
    if expected is not None and len(images) != expected:
        return [
            Problem(
                source,
                f"{len(images)} samples, VTAB-1k's {images.name} has exactly {expected}",
                f"the file is truncated or from another benchmark; {VTAB_SOURCE_FIX}",
            )
        ]
    return []


def label_problems(images: LabeledImages, num_classes: int) -> list[Problem]:
    """Checks every label lies in [0, num_classes)."""
    return [
        Problem(
            origin,
            f"label {label} is outside [0, {num_classes - 1}] (num_classes={num_classes})",
            "set data.num_classes to the task's class count, or fix the label (labels must be 0-based)",
        )
        for origin, label in zip(images.origins, images.labels, strict=True)
        if not 0 <= label < num_classes
    ]


def missing_file_problems(images: LabeledImages) -> list[Problem]:
    """Checks every listed image exists (a stat per file, no decoding)."""
    return [
        Problem(
            origin,
            f"image {path} does not exist",
            "copy the images/ folder completely or regenerate the split (paths are relative to the split file)",
        )
        for origin, path in zip(images.origins, images.paths, strict=True)
        if not path.is_file()
    ]


def missing_classes(images: LabeledImages, num_classes: int) -> list[int]:
    """Returns the classes in [0, num_classes) with no sample in ``images``."""
    present = Counter(images.labels)
    return [c for c in range(num_classes) if present[c] == 0]


def decode_problems(images: LabeledImages, workers: int = 4, progress: bool = False) -> list[Problem]:
    """Fully decodes every image (in threads) and reports the ones that fail."""
    from tqdm.auto import tqdm

    def try_decode(index: int) -> Problem | None:
        try:
            load_rgb(images.paths[index])
        except DataError as error:
            problem = error.problems[0]
            return Problem(images.origins[index], f"{problem.where}: {problem.message}", problem.fix)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(try_decode, range(len(images)))
        if progress:
            results = tqdm(results, total=len(images), desc=f"decode {images.name}", leave=False, disable=None)
        return [problem for problem in results if problem is not None]


def cheap_problems(images: LabeledImages, num_classes: int, expected_count: int | None) -> list[Problem]:
    """The checks that cost no decoding: count, label range and file existence."""
    return count_problems(images, expected_count) + label_problems(images, num_classes) + missing_file_problems(images)


def raise_if_any(problems: list[Problem]) -> None:
    """Raises one DataError listing all problems, if there are any."""
    if problems:
        raise DataError(problems)
