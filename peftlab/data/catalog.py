"""What peftlab knows about each benchmark task: class count, group, display name and the folder names other repos
use. This is the one source of these facts: the data configs and sweeps read them through the ``catalog.*``
OmegaConf resolvers (see :func:`register_resolvers`), the report and the published tables through this module.

Your own tasks are not added here: they are configured (``data=vtab_layout`` / ``data=image_folder``) and reported
under their own ``data.dataset`` name."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task.

    Attributes:
        name: Canonical peftlab name (also the config file name).
        num_classes: Number of classes.
        group: VTAB group (natural / specialized / structured), ``fgvc`` or ``demo``.
        folders: Folder names accepted on disk, most common first.
        title: Column header in reports (the papers' short name).
    """

    name: str
    num_classes: int
    group: str
    folders: tuple[str, ...]
    title: str = ""


def _vtab(name: str, num_classes: int, group: str, title: str, *aliases: str) -> TaskSpec:
    return TaskSpec(name, num_classes, group, (name, *aliases), title)


# Folder names: NOAH's generator (cifar, oxford_iiit_pet, ...), NOAH scripts (cifar100, oxford_pet),
# SSF (flowers102, pets) and Adapter+ (camelyon, retinopathy, clevr_distance, dsprites_position, ...).
VTAB_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _vtab("cifar100", 100, "natural", "Cifar100", "cifar", "cifar-100", "cifar_100"),
        _vtab("caltech101", 102, "natural", "Caltech101", "caltech", "caltech-101"),
        _vtab("dtd", 47, "natural", "DTD"),
        _vtab("oxford_flowers102", 102, "natural", "Flowers102", "flowers102", "flowers", "oxford_flowers"),
        _vtab("oxford_iiit_pet", 37, "natural", "Pets", "oxford_pet", "pets", "pet", "oxford_pets"),
        _vtab("svhn", 10, "natural", "SVHN", "svhn_cropped"),
        _vtab("sun397", 397, "natural", "Sun397", "sun"),
        _vtab("patch_camelyon", 2, "specialized", "Camelyon", "camelyon", "pcam"),
        _vtab("eurosat", 10, "specialized", "EuroSAT"),
        _vtab("resisc45", 45, "specialized", "Resisc45", "resisc"),
        _vtab("diabetic_retinopathy", 5, "specialized", "Retinopathy", "retinopathy", "diabetic_retinopathy_detection"),
        _vtab("clevr_count", 8, "structured", "Clevr-Count", "clevr_count_all"),
        _vtab("clevr_dist", 6, "structured", "Clevr-Dist", "clevr_distance", "clevr_closest_object_distance"),
        _vtab("dmlab", 6, "structured", "DMLab"),
        _vtab("kitti", 4, "structured", "KITTI-Dist", "kitti_distance", "kitti_closest_vehicle_distance"),
        _vtab("dsprites_loc", 16, "structured", "dSpr-Loc", "dsprites_position", "dsprites_location", "dsprites_xpos"),
        _vtab("dsprites_ori", 16, "structured", "dSpr-Ori", "dsprites_orientation"),
        _vtab("smallnorb_azi", 18, "structured", "sNORB-Azim", "smallnorb_azimuth"),
        _vtab("smallnorb_ele", 9, "structured", "sNORB-Ele", "smallnorb_elevation"),
    )
}

DEMO_TASK = TaskSpec("demo", 4, "demo", ("demo",), "Demo")


@dataclass(frozen=True)
class FGVCSpec(TaskSpec):
    """An FGVC dataset in the VPT json layout.

    Attributes:
        image_dirs: Image folders relative to the dataset folder, tried in order ("" is the folder itself).
    """

    image_dirs: tuple[str, ...] = field(default=("",), kw_only=True)


def _fgvc(name: str, num_classes: int, title: str, folders: tuple[str, ...], image_dirs=("",)) -> FGVCSpec:
    return FGVCSpec(name, num_classes, "fgvc", folders, title, image_dirs=image_dirs)


FGVC_TASKS: dict[str, FGVCSpec] = {
    spec.name: spec
    for spec in (
        _fgvc("cub", 200, "CUB", ("CUB_200_2011", "CUB", "cub", "cub200", "CUB-200-2011"), ("images",)),
        _fgvc("nabirds", 555, "NABirds", ("nabirds", "NABirds", "NABirds_v1"), ("images",)),
        _fgvc("flowers", 102, "Flowers", ("OxfordFlower", "OxfordFlowers", "oxfordflower", "oxfordflowers", "flowers")),
        _fgvc("dogs", 120, "Dogs", ("Stanford-dogs", "StanfordDogs", "stanforddogs", "stanford_dogs", "dogs"),
              ("Images", "")),
        _fgvc("cars", 196, "Cars", ("Stanford-cars", "StanfordCars", "stanfordcars", "stanford_cars", "cars")),
    )
}  # fmt: skip

#: the built-in benchmarks by ``data.dataset`` name, with their report titles
BENCHMARKS: dict[str, dict[str, TaskSpec]] = {"vtab1k": VTAB_TASKS, "fgvc": FGVC_TASKS, "demo": {"demo": DEMO_TASK}}
BENCHMARK_TITLES = {"vtab1k": "VTAB-1k", "fgvc": "FGVC", "demo": "Demo"}
#: the report group of your own tasks when none is given
CUSTOM_GROUP = "custom"
#: how to train on a task that is not one of the built-in benchmarks
CUSTOM_TASK_FIX = (
    "for your own task use data=vtab_layout (NOAH txt splits) or data=image_folder (train/val/test class folders) "
    "with data.root=<folder> data.task=<name>, see README 'Your own data'"
)


def find_spec(task: str, catalog: dict[str, TaskSpec]) -> TaskSpec | None:
    """Returns the task whose canonical name or folder alias is ``task`` (case-insensitive), else None."""
    wanted = task.lower()
    for spec in catalog.values():
        if wanted == spec.name.lower() or wanted in (folder.lower() for folder in spec.folders):
            return spec
    return None


def benchmark_task(dataset: str, task: str) -> TaskSpec:
    """The catalog entry of ``task`` (canonical name or folder alias) in the built-in benchmark ``dataset``.

    Raises:
        ValueError: For an unknown benchmark or task, naming close matches and how to use your own task.
    """
    if dataset not in BENCHMARKS:
        raise ValueError(
            f"data.dataset={dataset!r} is not a built-in benchmark {sorted(BENCHMARKS)}; {CUSTOM_TASK_FIX}"
        )
    spec = find_spec(task, BENCHMARKS[dataset])
    if spec is None:
        close = difflib.get_close_matches(task, list(BENCHMARKS[dataset]), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else f"known: {', '.join(BENCHMARKS[dataset])}; "
        raise ValueError(f"data.task={task!r} is not a task of {BENCHMARK_TITLES[dataset]}: {hint}{CUSTOM_TASK_FIX}")
    return spec


def data_options(dataset: str) -> str:
    """The benchmark's tasks as a comma-separated ``data=`` sweep value, in the catalog's (the papers') order."""
    prefix = "" if dataset == "demo" else f"{dataset}/"
    return ",".join(f"{prefix}{name}" for name in BENCHMARKS[dataset])
