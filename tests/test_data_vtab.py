"""VTAB-1k reading: demo layout, aliases, protocol file selection, cheap checks and their error messages."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from peftlab.data import DataError, Problem, VTABDataModule, make_demo_dataset
from peftlab.data.catalog import VTAB_TASKS
from peftlab.data.splits import find_task_dir
from peftlab.data.transforms import VTABTransform
from tests.data_fixtures import write_vtab_task

# Class counts and groups as given in the protocol doc (§0.1), written out independently of the catalog.
DOC_CLASSES = {
    "cifar100": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}
NATURAL = {"cifar100", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397"}
SPECIALIZED = {"patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"}


@pytest.fixture(scope="module")
def pristine_task(tmp_path_factory) -> Path:
    return write_vtab_task(tmp_path_factory.mktemp("pristine") / "dtd")


@pytest.fixture
def vtab_root(tmp_path, pristine_task) -> Path:
    """A fresh, writable copy of a VTAB-1k root holding ``dtd`` (3 of its 47 classes used)."""
    shutil.copytree(pristine_task, tmp_path / "vtab-1k" / "dtd")
    return tmp_path / "vtab-1k"


def dtd(root: Path, **kwargs) -> VTABDataModule:
    return VTABDataModule(root, "dtd", 47, "natural", num_workers=0, image_size=8, **kwargs)


def digest_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_catalog_matches_the_protocol_doc():
    assert {name: spec.num_classes for name, spec in VTAB_TASKS.items()} == DOC_CLASSES
    for name, spec in VTAB_TASKS.items():
        expected = "natural" if name in NATURAL else "specialized" if name in SPECIALIZED else "structured"
        assert spec.group == expected, name


def test_demo_layout_is_the_noah_layout(tmp_path):
    root = make_demo_dataset(tmp_path / "demo")
    counts = {"train800": 800, "val200": 200, "train800val200": 1000, "test": 400}
    for split, count in counts.items():
        lines = (root / f"{split}.txt").read_text().splitlines()
        assert len(lines) == count
        assert lines[0] == f"images/{split}/000000.jpg {lines[0].split()[1]}"
        assert all(0 <= int(line.split()[1]) < 4 for line in lines)
        assert len(list((root / "images" / split).glob("*.jpg"))) == count
    with Image.open(root / "images/test/000399.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (32, 32))
    first_val = (root / "images/val200/000000.jpg").read_bytes()
    assert (root / "images/train800val200/000800.jpg").read_bytes() == first_val  # copies, as NOAH writes them
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left behind


def test_demo_is_deterministic_and_skipped_when_complete(tmp_path):
    first = make_demo_dataset(tmp_path / "a", image_size=8, seed=3)
    second = make_demo_dataset(tmp_path / "b", image_size=8, seed=3)
    assert digest_tree(first) == digest_tree(second)
    stamp = (first / "test.txt").stat().st_mtime_ns
    make_demo_dataset(first, image_size=8, seed=3)
    assert (first / "test.txt").stat().st_mtime_ns == stamp
    assert digest_tree(make_demo_dataset(tmp_path / "c", image_size=8, seed=4)) != digest_tree(first)


def test_demo_refuses_a_folder_with_other_settings(tmp_path):
    make_demo_dataset(tmp_path / "demo", num_classes=4, image_size=8)
    with pytest.raises(DataError, match=r"(?s)not a complete demo dataset.*fix: delete this folder"):
        make_demo_dataset(tmp_path / "demo", num_classes=5, image_size=8)


def test_demo_datamodule_generates_and_serves_batches(tmp_path):
    data = VTABDataModule(tmp_path / "demo", "demo", 4, "demo", "demo", num_workers=0, image_size=8, generate_demo=True)
    data.setup()
    images, labels = next(iter(data.train_dataloader()))
    assert (tmp_path / "demo" / "DEMO_INFO.json").is_file()
    assert images.shape == (32, 3, 8, 8) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert (data.num_classes, data.dataset, data.task, data.group, data.split) == (4, "demo", "demo", "demo", "final")


@pytest.mark.parametrize(
    ("task", "folder"),
    [
        ("cifar100", "cifar"),
        ("cifar100", "cifar100"),
        ("oxford_iiit_pet", "oxford_pet"),
        ("oxford_iiit_pet", "pets"),
        ("oxford_flowers102", "flowers102"),
        ("patch_camelyon", "camelyon"),
        ("diabetic_retinopathy", "retinopathy"),
        ("clevr_dist", "clevr_distance"),
        ("dsprites_loc", "dsprites_position"),
        ("dsprites_ori", "dsprites_orientation"),
        ("smallnorb_azi", "smallnorb_azimuth"),
        ("smallnorb_ele", "smallnorb_elevation"),
    ],
)
def test_task_folder_aliases(tmp_path, task, folder):
    (tmp_path / folder).mkdir()
    assert find_task_dir(tmp_path, VTAB_TASKS[task], "") == (tmp_path / folder, folder)


def test_alias_folder_is_used_and_reported(tmp_path, pristine_task):
    shutil.copytree(pristine_task, tmp_path / "cifar")
    data = VTABDataModule(tmp_path, "cifar100", 100, "natural", num_workers=0, image_size=8, cache="none")
    data.setup()
    assert data.describe()["folder_found"] == "cifar"
    assert data.describe()["task_dir"] == str(tmp_path / "cifar")


@pytest.mark.parametrize(
    ("split", "train_file", "eval_file", "sizes"),
    [
        ("search", "train800.txt", "val200.txt", (800, 200)),
        ("final", "train800val200.txt", "test.txt", (1000, 24)),
    ],
)
def test_protocol_selects_split_files(vtab_root, split, train_file, eval_file, sizes):
    data = dtd(vtab_root, split=split, cache="none")
    data.setup()
    info = data.describe()
    assert info["train_files"] == [str(vtab_root / "dtd" / train_file)]
    assert info["eval_files"] == [str(vtab_root / "dtd" / eval_file)]
    assert (info["num_train"], info["num_eval"]) == sizes
    assert len(data.val_dataloader().dataset) == len(data.test_dataloader().dataset) == sizes[1]


def test_describe_records_the_preprocessing(vtab_root):
    data = dtd(vtab_root, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), hflip=True, interpolation="bilinear")
    data.setup()
    info = data.describe()
    assert info["mean"] == pytest.approx([0.1, 0.2, 0.3]) and info["std"] == pytest.approx([0.4, 0.5, 0.6])
    assert (info["image_size"], info["interpolation"], info["hflip"], info["cache"]) == (8, "bilinear", True, "memory")
    assert info["cache_sources"] == {"train": "memory", "eval": "memory"}


def test_constructor_rejects_inconsistent_config(tmp_path):
    with pytest.raises(ValueError, match="num_classes=10 but VTAB-1k dtd has 47"):
        VTABDataModule(tmp_path, "dtd", 10)
    with pytest.raises(ValueError, match="data.split='val'"):
        VTABDataModule(tmp_path, "dtd", 47, split="val")
    with pytest.raises(ValueError, match="data.cache='gpu'"):
        VTABDataModule(tmp_path, "dtd", 47, cache="gpu")
    with pytest.raises(ValueError, match="data.task='imagenet' is not a task of VTAB-1k: .* data=vtab_layout"):
        VTABDataModule(tmp_path, "imagenet", 1000)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"vtab-1k: data root does not exist\n    fix: set paths.data_dir="):
        dtd(tmp_path / "vtab-1k").setup()


def test_missing_task_lists_the_names_tried(vtab_root):
    data = VTABDataModule(vtab_root, "oxford_iiit_pet", 37, num_workers=0)
    with pytest.raises(DataError, match=r"no folder for task 'oxford_iiit_pet'.*'oxford_pet', 'pets'.*found \['dtd'\]"):
        data.setup()


def test_missing_split_file(vtab_root):
    (vtab_root / "dtd" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"dtd/test.txt: split file is missing\n    fix: generate VTAB-1k"):
        dtd(vtab_root).setup()


def test_wrong_count(vtab_root):
    path = vtab_root / "dtd" / "train800.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:799]))
    with pytest.raises(DataError, match="train800.txt: 799 samples, VTAB-1k's train800 has exactly 800"):
        dtd(vtab_root, split="search").setup()


def test_malformed_line_names_file_and_line(vtab_root):
    path = vtab_root / "dtd" / "test.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = "images/test/000004.jpg\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"test.txt:5: malformed line 'images/test/000004.jpg'; expected"):
        dtd(vtab_root).setup()


def test_label_out_of_range_names_file_and_line(vtab_root):
    path = vtab_root / "dtd" / "val200.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[9] = "images/val200/000009.jpg 47\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"val200.txt:10: label 47 is outside \[0, 46\] \(num_classes=47\)"):
        dtd(vtab_root, split="search").setup()


def test_missing_image_names_the_line(vtab_root):
    (vtab_root / "dtd" / "images/train800val200/000002.jpg").unlink()
    with pytest.raises(DataError, match=r"train800val200.txt:3: image .*000002.jpg does not exist"):
        dtd(vtab_root).setup()


def test_corrupt_image_fails_when_caching(vtab_root):
    (vtab_root / "dtd" / "images/test/000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"test/000003.jpg: image cannot be decoded .*\n    fix: re-download"):
        dtd(vtab_root).setup()


def test_corrupt_image_fails_on_the_pil_path(vtab_root):
    (vtab_root / "dtd" / "images/test/000000.jpg").write_bytes(b"\xff\xd8\xff truncated")
    data = dtd(vtab_root, cache="none")
    data.setup()
    with pytest.raises(DataError, match="000000.jpg: image cannot be decoded"):
        next(iter(data.test_dataloader()))


def test_vtab_transform_squashes_without_crop():
    image = Image.new("RGB", (40, 10), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 4, 10))  # a red band on the left edge must survive (no crop)
    transform = VTABTransform(16, "bicubic", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    tensor = transform(image)
    assert tensor.shape == (3, 16, 16)
    assert tensor[0, :, 0].min() > 0.9 and tensor[2, :, -1].min() > 0.9
    expected = torch.from_numpy(np.array(image.resize((16, 16), Image.Resampling.BICUBIC)))
    assert torch.equal(tensor, expected.permute(2, 0, 1).float() / 255)


def test_data_error_survives_pickling_and_worker_reraise(vtab_root):
    import pickle

    error = DataError([Problem("a.txt:3", "bad", "fix it")])
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    (vtab_root / "dtd" / "images/test/000001.jpg").write_bytes(b"junk")
    data = VTABDataModule(vtab_root, "dtd", 47, num_workers=1, image_size=8, cache="none", eval_batch_size=4)
    data.setup()
    with pytest.raises(DataError, match="000001.jpg: image cannot be decoded"):
        next(iter(data.test_dataloader()))


def test_group_defaults_to_the_catalog_and_must_agree(tmp_path):
    assert VTABDataModule(tmp_path, "svhn", 10).group == "natural"
    assert VTABDataModule(tmp_path, "kitti", 4).group == "structured"
    with pytest.raises(ValueError, match="data.group='natural' but VTAB-1k kitti is in group 'structured'"):
        VTABDataModule(tmp_path, "kitti", 4, group="natural")
