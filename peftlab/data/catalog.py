"""What peftlab knows about each benchmark task: class count, group and the folder names other repos use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark task.

    Attributes:
        name: Canonical peftlab name (also the config file name).
        num_classes: Number of classes.
        group: VTAB group (natural / specialized / structured), ``fgvc`` or ``demo``.
        folders: Folder names accepted on disk, most common first.
    """

    name: str
    num_classes: int
    group: str
    folders: tuple[str, ...]


def _vtab(name: str, num_classes: int, group: str, *aliases: str) -> TaskSpec:
    return TaskSpec(name, num_classes, group, (name, *aliases))


# Folder names: NOAH's generator (cifar, oxford_iiit_pet, ...), NOAH scripts (cifar100, oxford_pet),
# SSF (flowers102, pets) and Adapter+ (camelyon, retinopathy, clevr_distance, dsprites_position, ...).
VTAB_TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _vtab("cifar100", 100, "natural", "cifar", "cifar-100", "cifar_100"),
        _vtab("caltech101", 102, "natural", "caltech", "caltech-101"),
        _vtab("dtd", 47, "natural"),
        _vtab("oxford_flowers102", 102, "natural", "flowers102", "flowers", "oxford_flowers"),
        _vtab("oxford_iiit_pet", 37, "natural", "oxford_pet", "pets", "pet", "oxford_pets"),
        _vtab("svhn", 10, "natural", "svhn_cropped"),
        _vtab("sun397", 397, "natural", "sun"),
        _vtab("patch_camelyon", 2, "specialized", "camelyon", "pcam"),
        _vtab("eurosat", 10, "specialized"),
        _vtab("resisc45", 45, "specialized", "resisc"),
        _vtab("diabetic_retinopathy", 5, "specialized", "retinopathy", "diabetic_retinopathy_detection"),
        _vtab("clevr_count", 8, "structured", "clevr_count_all"),
        _vtab("clevr_dist", 6, "structured", "clevr_distance", "clevr_closest_object_distance"),
        _vtab("dmlab", 6, "structured"),
        _vtab("kitti", 4, "structured", "kitti_distance", "kitti_closest_vehicle_distance"),
        _vtab("dsprites_loc", 16, "structured", "dsprites_position", "dsprites_location", "dsprites_xpos"),
        _vtab("dsprites_ori", 16, "structured", "dsprites_orientation"),
        _vtab("smallnorb_azi", 18, "structured", "smallnorb_azimuth"),
        _vtab("smallnorb_ele", 9, "structured", "smallnorb_elevation"),
    )
}

DEMO_TASK = TaskSpec("demo", 4, "demo", ("demo",))


@dataclass(frozen=True)
class FGVCSpec(TaskSpec):
    """An FGVC dataset in the VPT json layout.

    Attributes:
        image_dirs: Image folders relative to the dataset folder, tried in order ("" is the folder itself).
    """

    image_dirs: tuple[str, ...] = ("",)


FGVC_TASKS: dict[str, FGVCSpec] = {
    spec.name: spec
    for spec in (
        FGVCSpec("cub", 200, "fgvc", ("CUB_200_2011", "CUB", "cub", "cub200", "CUB-200-2011"), ("images",)),
        FGVCSpec("nabirds", 555, "fgvc", ("nabirds", "NABirds", "NABirds_v1"), ("images",)),
        FGVCSpec(
            "flowers", 102, "fgvc", ("OxfordFlower", "OxfordFlowers", "oxfordflower", "oxfordflowers", "flowers"), ("",)
        ),
        FGVCSpec(
            "dogs",
            120,
            "fgvc",
            ("Stanford-dogs", "StanfordDogs", "stanforddogs", "stanford_dogs", "dogs"),
            ("Images", ""),
        ),
        FGVCSpec(
            "cars", 196, "fgvc", ("Stanford-cars", "StanfordCars", "stanfordcars", "stanford_cars", "cars"), ("",)
        ),
    )
}


def find_spec(task: str, catalog: dict[str, TaskSpec]) -> TaskSpec | None:
    """Returns the task whose canonical name or folder alias is ``task`` (case-insensitive), else None."""
    wanted = task.lower()
    for spec in catalog.values():
        if wanted == spec.name.lower() or wanted in (folder.lower() for folder in spec.folders):
            return spec
    return None
