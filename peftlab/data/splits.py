"""Locating task folders and reading split files: VTAB-1k txt (NOAH layout) and FGVC json (VPT layout)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.data.catalog import TaskSpec
from peftlab.data.errors import DataError, Problem, where
from peftlab.protocol import FGVC_PROTOCOL, SPLITS, VTAB_PROTOCOL, check_split_name  # noqa: F401 (owned there)

log = logging.getLogger(__name__)

VTAB_EXPECTED_COUNTS = {"train800": 800, "val200": 200, "train800val200": 1000, "test": None}

VTAB_SOURCE_FIX = (
    "generate VTAB-1k in the NOAH layout (NOAH's data/vtab-source/get_vtab1k.py, or an already processed copy "
    "such as V-PETL's) so that it has train800.txt, val200.txt, train800val200.txt, test.txt and images/"
)
FGVC_SOURCE_FIX = "put VPT's json splits (train.json, val.json, test.json) next to the dataset's images"


@dataclass
class LabeledImages:
    """The images and labels listed by one or more split files.

    Attributes:
        name: Split name (``train800``, ``train+val``, ...).
        sources: The split files read.
        paths: Absolute image paths.
        labels: Integer labels, as in the file (VTAB) or remapped to 0..C-1 (FGVC).
        origins: Where each sample was listed (``file:line`` or ``file[key]``), for error messages.
    """

    name: str
    sources: list[Path] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def extend(self, other: LabeledImages) -> None:
        """Appends another split (used for train+val)."""
        self.sources += other.sources
        self.paths += other.paths
        self.labels += other.labels
        self.origins += other.origins


def find_task_dir(root: Path, spec: TaskSpec, generator_hint: str) -> tuple[Path, str]:
    """Finds a task's folder under ``root``, accepting every known alias of its name.

    ``root`` itself is accepted when its own name is one of the aliases (for example a root that points at the demo).

    Returns:
        The folder and the folder name that matched.

    Raises:
        DataError: If ``root`` or the task folder does not exist.
    """
    if not root.is_dir():
        raise DataError(
            Problem(
                str(root),
                "data root does not exist",
                f"set paths.data_dir=<folder holding your datasets> (or data.root=...); then {generator_hint}",
            )
        )
    for folder in spec.folders:
        if (root / folder).is_dir():
            return root / folder, folder
    if root.name.lower() in (f.lower() for f in spec.folders):
        return root, root.name
    present = sorted(p.name for p in root.iterdir() if p.is_dir())[:30]
    raise DataError(
        Problem(
            str(root),
            f"no folder for task {spec.name!r}; looked for {list(spec.folders)}; found {present}",
            f"rename or symlink the task folder to {spec.folders[0]!r} under {root}, or {generator_hint}",
        )
    )


def read_txt_split(task_dir: Path, split: str) -> tuple[LabeledImages, list[Problem]]:
    """Reads ``<task_dir>/<split>.txt`` (lines ``<relative path> <int label>``), collecting format problems."""
    path = task_dir / f"{split}.txt"
    images = LabeledImages(split, [path])
    if not path.is_file():
        return images, [Problem(str(path), "split file is missing", VTAB_SOURCE_FIX)]
    problems, first_line = [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not _is_int(fields[1]):
            problems.append(
                Problem(
                    where(path, number),
                    f"malformed line {line!r}; expected '<relative image path> <integer label>'",
                    "fix or regenerate this line (paths may not contain spaces)",
                )
            )
            continue
        if fields[0] in first_line:
            problems.append(
                Problem(
                    where(path, number),
                    f"duplicate entry {fields[0]!r} (first listed on line {first_line[fields[0]]})",
                    "list every image once: remove the repeated line or regenerate the split",
                )
            )
            continue
        first_line[fields[0]] = number
        images.paths.append(task_dir / fields[0])
        images.labels.append(int(fields[1]))
        images.origins.append(where(path, number))
    return images, problems


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def read_json_split(dataset_dir: Path, split: str) -> tuple[dict[str, int], list[Problem]]:
    """Reads ``<dataset_dir>/<split>.json`` ({relative image path: class id}), collecting format problems."""
    path = dataset_dir / f"{split}.json"
    if not path.is_file():
        return {}, [Problem(str(path), "split file is missing", FGVC_SOURCE_FIX)]
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return {}, [Problem(where(path, error.lineno), f"invalid json ({error.msg})", "re-download the json splits")]
    if not isinstance(content, dict):
        return {}, [Problem(str(path), "expected one object {image path: class id}", FGVC_SOURCE_FIX)]
    entries, problems = {}, []
    for key, value in content.items():
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(f"{path}[{key!r}]", f"class id {value!r} is not an integer", FGVC_SOURCE_FIX))
        else:
            entries[key] = value
    return entries, problems
