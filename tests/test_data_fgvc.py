"""FGVC in the VPT json layout: folder and image-dir variants, id remapping, protocol files, transforms, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from peftlab.data import DataError, FGVCDataModule
from peftlab.data.catalog import FGVC_TASKS
from tests.data_fixtures import write_fgvc_dataset


def fgvc(root: Path, task: str, num_classes: int, **kwargs) -> FGVCDataModule:
    return FGVCDataModule(root, task, num_classes, num_workers=0, image_size=16, resize_size=20, **kwargs)


@pytest.fixture(scope="module")
def dogs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fgvc")
    write_fgvc_dataset(root / "Stanford-dogs", 120, image_dir="Images", first_id=1)
    return root


def test_catalog_class_counts():
    expected = {"cub": 200, "nabirds": 555, "flowers": 102, "dogs": 120, "cars": 196}
    assert {name: spec.num_classes for name, spec in FGVC_TASKS.items()} == expected


@pytest.mark.parametrize(
    ("task", "classes", "folder", "image_dir"),
    [
        ("cub", 200, "CUB_200_2011", "images"),
        ("nabirds", 555, "nabirds", "images"),
        ("flowers", 102, "OxfordFlower", ""),
        ("dogs", 120, "Stanford-dogs", "Images"),
        ("dogs", 120, "StanfordDogs", ""),  # RLRR keeps the dog images in the dataset folder itself
        ("cars", 196, "Stanford-cars", ""),
        ("cars", 196, "stanfordcars", ""),
    ],
)
def test_dataset_folders_and_image_dirs(tmp_path, task, classes, folder, image_dir):
    write_fgvc_dataset(tmp_path / folder, classes, image_dir=image_dir, eval_per_split=2)
    data = fgvc(tmp_path, task, classes)
    data.setup()
    assert data.folder_found == folder
    first_image = data.train_data.paths[0]
    assert first_image.is_file() and first_image.parent.parent == tmp_path / folder / image_dir


def test_ids_are_remapped_to_contiguous_sorted_order(dogs_root):
    data = fgvc(dogs_root, "dogs", 120, split="search")
    data.setup()
    assert data.train_data.labels == list(range(120))  # json ids 1..120 -> 0..119
    assert data.eval_data.labels == list(range(6))
    _, labels = next(iter(data.train_dataloader()))
    assert labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("split", "train_files", "eval_files", "sizes"),
    [
        ("search", ["train.json"], ["val.json"], (120, 6)),
        ("final", ["train.json", "val.json"], ["test.json"], (126, 6)),
    ],
)
def test_protocol_selects_json_files(dogs_root, split, train_files, eval_files, sizes):
    data = fgvc(dogs_root, "dogs", 120, split=split)
    data.setup()
    info = data.describe()
    assert info["train_files"] == [str(dogs_root / "Stanford-dogs" / f) for f in train_files]
    assert info["eval_files"] == [str(dogs_root / "Stanford-dogs" / f) for f in eval_files]
    assert (info["num_train"], info["num_eval"]) == sizes
    assert info["dataset"] == "fgvc" and info["cache"] == "none"


def test_train_and_eval_transforms_follow_the_protocol(dogs_root):
    data = fgvc(dogs_root, "dogs", 120)
    train, evaluate = data.train_transform(), data.eval_transform()
    assert [type(t) for t in train.transforms] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert [type(t) for t in evaluate.transforms] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    image = Image.effect_mandelbrot((40, 30), (-2, -1, 1, 1), 50).convert("RGB")
    assert train(image).shape == evaluate(image).shape == (3, 16, 16)
    resized = image.resize((26, 20), Image.Resampling.BICUBIC)  # short side 30 -> 20, long side int(40*20/30)
    expected = T.functional.to_tensor(T.functional.center_crop(resized, [16, 16]))
    expected = T.functional.normalize(expected, [0.5] * 3, [0.5] * 3)
    torch.testing.assert_close(evaluate(image), expected, atol=1e-6, rtol=0)


def test_class_count_mismatch(tmp_path):
    write_fgvc_dataset(tmp_path / "CUB_200_2011", 199)
    with pytest.raises(DataError, match=r"train.json: has 199 classes but data.num_classes=200"):
        fgvc(tmp_path, "cub", 200).setup()


def test_eval_id_not_in_train(tmp_path):
    dataset = write_fgvc_dataset(tmp_path / "OxfordFlower", 102, image_dir="")
    test = json.loads((dataset / "test.json").read_text())
    key = next(iter(test))
    test[key] = 999
    (dataset / "test.json").write_text(json.dumps(test))
    with pytest.raises(DataError, match=rf"test.json\['{key}'\]: class id 999 does not occur in train.json"):
        fgvc(tmp_path, "flowers", 102).setup()


def test_missing_json_and_missing_images(tmp_path):
    dataset = write_fgvc_dataset(tmp_path / "Stanford-cars", 196, image_dir="")
    (dataset / "val.json").unlink()
    with pytest.raises(DataError, match=r"Stanford-cars/val.json: split file is missing\n    fix: put VPT's json"):
        fgvc(tmp_path, "cars", 196, split="search").setup()
    write_fgvc_dataset(tmp_path / "other" / "nabirds", 555)
    for image in (tmp_path / "other" / "nabirds" / "images").rglob("*.jpg"):
        image.unlink()
    with pytest.raises(DataError, match="cannot find the images listed in train.json"):
        fgvc(tmp_path / "other", "nabirds", 555).setup()


def test_unknown_dataset_and_wrong_count(tmp_path):
    with pytest.raises(ValueError, match="data.task='aircraft' is not a task of FGVC"):
        fgvc(tmp_path, "aircraft", 100)
    with pytest.raises(ValueError, match="num_classes=100 but FGVC cub has 200"):
        fgvc(tmp_path, "cub", 100)


def train_batches(root: Path, epoch: int, workers: int, seed: int = 7) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = FGVCDataModule(root, "dogs", 120, num_workers=workers, image_size=16, batch_size=16, seed=seed)
    data.setup()
    loader = data.train_dataloader()
    loader.set_epoch(epoch)
    return list(loader)


def assert_same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for (x, y), (x_expected, y_expected) in zip(got, expected, strict=True):
        assert torch.equal(y, y_expected) and torch.equal(x, x_expected)


def test_training_batches_do_not_depend_on_the_worker_count(dogs_root):
    """Random crops and flips are drawn per sample from (seed, epoch, index): two workers give the pixels one gives."""
    alone = train_batches(dogs_root, epoch=1, workers=0)
    assert_same_batches(train_batches(dogs_root, epoch=1, workers=2), alone)
    other_epoch = train_batches(dogs_root, epoch=2, workers=0)
    assert not torch.equal(torch.cat([y for _, y in alone]), torch.cat([y for _, y in other_epoch]))
    first = {int(y): x for xs, ys in alone for x, y in zip(xs, ys, strict=True)}
    again = {int(y): x for xs, ys in other_epoch for x, y in zip(xs, ys, strict=True)}
    assert sum(torch.equal(first[k], again[k]) for k in first) < len(first) / 4, "each epoch draws new augmentations"


def test_a_training_pass_stopped_mid_epoch_resumes_with_the_batches_it_had_left(dogs_root):
    """The loader's state counts the batches training consumed (not those its workers prefetched); a new loader given
    that state yields exactly the rest of the pass: same samples, same crops and flips."""
    uninterrupted = train_batches(dogs_root, epoch=1, workers=2)
    data = FGVCDataModule(dogs_root, "dogs", 120, num_workers=2, image_size=16, batch_size=16, seed=7)
    data.setup()
    loader = data.train_dataloader()
    loader.set_epoch(1)
    passing = iter(loader)
    for _ in range(3):
        next(passing)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 3}
    resumed = FGVCDataModule(dogs_root, "dogs", 120, num_workers=0, image_size=16, batch_size=16, seed=7)
    resumed.setup()
    resumed_loader = resumed.train_dataloader()
    resumed_loader.load_state_dict(state)
    assert_same_batches(list(resumed_loader), uninterrupted[3:])
    assert len(list(resumed_loader)) == len(uninterrupted), "only the resumed pass skips"


def test_training_loader_shards_disjointly_across_ranks(dogs_root, monkeypatch):
    """Under DDP each rank takes its share of the same seeded permutation, as ``DistributedSampler`` does."""
    from peftlab.data import sampling

    data = fgvc(dogs_root, "dogs", 120)
    data.setup()
    seen = []
    for rank in range(3):
        monkeypatch.setattr(sampling, "rank_and_world", lambda rank=rank: (rank, 3))
        labels = torch.cat([y for _, y in train_batches(dogs_root, epoch=0, workers=0)]).tolist()
        assert len(labels) == len(data.train_data) // 3  # 126 = train + val (split=final): no padding needed
        seen += labels
    assert sorted(seen) == sorted(data.train_data.labels)
