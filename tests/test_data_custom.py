"""Your own data: a task in the VTAB-1k layout and a class-per-folder layout work from the configs, in data.check and
in training (reported in their own column); a bad or unknown task stops before any weights are loaded."""

from __future__ import annotations

import numpy as np
import pytest

import peftlab.backbones
from peftlab.build import build, build_datamodule
from peftlab.data import DataError, ImageFolderDataModule, VTABDataModule
from peftlab.data.check import main as check_main
from tests.data_fixtures import random_jpeg, write_vtab_task

CLASSES = ("cat", "dog", "fox")  # sorted: labels 0, 1, 2
SMALL_SPLITS = {"train800": 48, "val200": 16, "test": 24}  # your own task may have any split sizes


def write_image_folder(root, per_class: dict[str, int], classes=CLASSES, seed: int = 0):
    """``root/{split}/{class}/NNN.jpg`` with ``per_class[split]`` images per class."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in classes:
            for index in range(count):
                random_jpeg(root / split / name / f"{index:03d}.jpg", rng)
    return root


@pytest.fixture
def folder_root(tmp_path):
    return write_image_folder(tmp_path / "animals", {"train": 4, "val": 2, "test": 3})


def test_a_task_in_the_vtab_layout_is_its_own_task(make_cfg, tmp_path):
    write_vtab_task(tmp_path / "vtab-1k" / "fashion_mnist", num_classes=3)
    root = f"data.root={tmp_path / 'vtab-1k'}"  # make_cfg points paths.data_dir at the demo's folder
    data = build_datamodule(make_cfg("data=vtab_layout", "data.task=fashion_mnist", "data.num_classes=3", root))
    assert isinstance(data, VTABDataModule)
    assert (data.task, data.num_classes, data.group, data.dataset) == ("fashion_mnist", 3, "custom", "custom")
    data.setup()
    assert (len(data.train_data), len(data.eval_data)) == (1000, 24)
    grouped = build_datamodule(make_cfg("data=vtab_layout", "data.task=fashion_mnist", "data.num_classes=3",
                                        "data.group=mine", root))  # fmt: skip
    assert grouped.group == "mine"


def test_class_folders_give_the_classes_and_the_protocol(make_cfg, folder_root):
    cfg = make_cfg("data=image_folder", "data.task=animals", f"data.root={folder_root}", "data.cache=none")
    assert cfg.data.num_classes == len(CLASSES)  # counted from train/
    data = build_datamodule(cfg)
    assert isinstance(data, ImageFolderDataModule)
    data.setup()
    assert data.classes == list(CLASSES)
    assert len(data.train_data) == 3 * (4 + 2) and len(data.eval_data) == 3 * 3  # final: train+val -> test
    assert sorted(set(data.train_data.labels)) == [0, 1, 2]
    assert all(
        CLASSES[label] == path.parent.name
        for label, path in zip(data.eval_data.labels, data.eval_data.paths, strict=True)
    )
    search = build_datamodule(make_cfg("data=image_folder", "data.task=animals", f"data.root={folder_root}",
                                       "data.split=search"))  # fmt: skip
    search.setup()
    assert (len(search.train_data), len(search.eval_data)) == (12, 6)
    images, labels = next(iter(search.train_dataloader()))
    assert images.shape[1:] == (3, cfg.data.image_size, cfg.data.image_size) and labels.dtype.is_floating_point is False


def test_class_folder_problems_name_the_folder_and_the_fix(folder_root):
    (folder_root / "test" / "wolf").mkdir()
    report = ImageFolderDataModule(folder_root, "animals", 3, num_workers=0).check(decode=False)
    assert any("test/wolf: class folder not in train/" in str(p) for p in report.problems)
    with pytest.raises(DataError, match="has 3 class folders but data.num_classes=4"):
        ImageFolderDataModule(folder_root, "animals", 4, num_workers=0).setup()


def test_data_check_runs_each_modules_own_check(folder_root, tmp_path, capsys):
    write_vtab_task(tmp_path / "vtab-1k" / "fashion_mnist", num_classes=3)
    assert check_main(["data=image_folder", "data.task=animals", f"data.root={folder_root}"]) == 0
    assert check_main(["data=vtab_layout", "data.task=fashion_mnist", "data.num_classes=3",
                       f"paths.data_dir={tmp_path}", "--no-decode"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "animals  custom  animals  12     6    9     ok" in out
    assert "fashion_mnist  custom  fashion_mnist  800       200     1000            24    ok" in out


@pytest.fixture
def no_backbone(monkeypatch):
    """Fails the test if a backbone (and so any weights) were created."""

    def refuse(*args, **kwargs):
        raise AssertionError("a backbone was created before the data was checked")

    monkeypatch.setattr(peftlab.backbones, "create_backbone", refuse)


def test_an_unknown_task_stops_before_any_weights(make_cfg, no_backbone):
    with pytest.raises(ValueError, match="data.task='fashion_mnist' is not a task of VTAB-1k: .*data=vtab_layout"):
        build(make_cfg("data=vtab1k/dtd", "data.task=fashion_mnist"), loggers=False)
    with pytest.raises(ValueError, match="did you mean dsprites_loc"):
        build(
            make_cfg("data=vtab1k/dsprites_lc".replace("/dsprites_lc", "/dtd"), "data.task=dsprites_lc"), loggers=False
        )


def test_missing_data_stops_before_any_weights(make_cfg, tmp_path, no_backbone):
    cfg = make_cfg("data=vtab_layout", "data.task=fashion_mnist", "data.num_classes=10", f"data.root={tmp_path / 'x'}")
    with pytest.raises(DataError, match="data root does not exist"):
        build(cfg, loggers=False)


@pytest.mark.slow
def test_training_on_your_own_task_reports_it_in_its_own_column(make_cfg, tmp_path, capsys):
    from peftlab.report import main as report_main
    from peftlab.train import train

    write_vtab_task(
        tmp_path / "mine" / "fashion_mnist", num_classes=3, counts={"train800": 48, "val200": 16, "test": 24}
    )
    # trainer.check_val_every_n_epoch=1: an evaluation curve to take the best epoch from
    cfg = make_cfg("data=vtab_layout", "data.task=fashion_mnist", "data.num_classes=3",
                   f"data.root={tmp_path / 'mine'}", "data.image_size=32", "trainer.max_epochs=1",
                   "trainer.check_val_every_n_epoch=1")  # fmt: skip
    results = train(cfg)
    assert results.status == "complete"
    assert results.diagnostics["best_epoch"] == 1  # 1-based, as in the log
    assert results.experiment.backbone == cfg.backbone.name and results.experiment.weights == "random-init"
    assert report_main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "custom" in out.lower()
