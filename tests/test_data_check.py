"""Data configs compose and instantiate; ``python -m peftlab.data.check`` reports problems with their fixes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from peftlab.conf import CONFIG_DIR
from peftlab.data import FGVCDataModule, VTABDataModule
from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS
from peftlab.data.check import compose_data_config, data_config_names, main
from tests.data_fixtures import write_fgvc_dataset, write_vtab_task
from tests.test_data_vtab import DOC_CLASSES

FGVC_CLASSES = {"cub": 200, "nabirds": 555, "flowers": 102, "dogs": 120, "cars": 196}


def test_group_selections_expand_to_every_task():
    assert data_config_names("vtab1k") == [f"vtab1k/{task}" for task in DOC_CLASSES]
    assert data_config_names("fgvc") == [f"fgvc/{name}" for name in FGVC_CLASSES]
    assert data_config_names("vtab1k/dtd") == ["vtab1k/dtd"] and data_config_names("demo") == ["demo"]


def test_task_configs_are_the_catalog():
    """The per-task yaml files exist for exactly the catalog's tasks (they hold only the name; the catalog the rest)."""
    for benchmark, tasks in (("vtab1k", VTAB_TASKS), ("fgvc", FGVC_TASKS)):
        files = {p.stem for p in (CONFIG_DIR / "data" / benchmark).glob("*.yaml") if not p.stem.startswith("_")}
        assert files == set(tasks)


@pytest.mark.parametrize("task", list(DOC_CLASSES))
def test_vtab_configs(task):
    cfg = compose_data_config(f"vtab1k/{task}", ["paths.data_dir=/data"]).data
    assert (cfg.task, cfg.num_classes, cfg.dataset, cfg.root) == (task, DOC_CLASSES[task], "vtab1k", "/data/vtab-1k")
    assert (cfg.image_size, cfg.interpolation, cfg.hflip, cfg.batch_size, cfg.split) == (
        224,
        "bicubic",
        False,
        32,
        "final",
    )
    data = instantiate(cfg, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert isinstance(data, VTABDataModule) and data.group in ("natural", "specialized", "structured")
    assert data.mean == pytest.approx((0.1, 0.2, 0.3)) and data.std == pytest.approx((0.4, 0.5, 0.6))


@pytest.mark.parametrize("name", list(FGVC_CLASSES))
def test_fgvc_configs(name):
    cfg = compose_data_config(f"fgvc/{name}", ["paths.data_dir=/data", "data.split=search"]).data
    assert (cfg.num_classes, cfg.dataset, cfg.root, cfg.split) == (FGVC_CLASSES[name], "fgvc", "/data/fgvc", "search")
    assert isinstance(instantiate(cfg, mean=(0.5,) * 3, std=(0.5,) * 3), FGVCDataModule)


def test_demo_config_matches_the_trainer_interface():
    cfg = compose_data_config("demo", ["paths.data_dir=/data"]).data
    assert (cfg.root, cfg.task, cfg.num_classes, cfg.dataset, cfg.image_size) == ("/data/demo", "demo", 4, "demo", 32)
    assert cfg.generate_demo is True and cfg.cache == "memory"


@pytest.fixture(scope="module")
def pristine_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_vtab_task(root / "vtab-1k" / "dtd")
    write_fgvc_dataset(root / "fgvc" / "CUB_200_2011", 200, eval_per_split=3)
    return root


@pytest.fixture
def data_dir(tmp_path, pristine_root) -> Path:
    shutil.copytree(pristine_root, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_check_passes_on_good_data(data_dir, capsys):
    assert main(["data=vtab1k/dtd", f"paths.data_dir={data_dir}"]) == 0
    assert main(["data=fgvc/cub", f"paths.data_dir={data_dir}", "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "dtd   natural  dtd     800       200     1000            24    ok (2 warning(s))" in out
    assert "cub   fgvc   CUB_200_2011  200    3    3     ok" in out
    assert "44 of 47 classes have no sample" in out


def test_check_reports_every_problem_with_its_fix(data_dir, capsys):
    task = data_dir / "vtab-1k" / "dtd"
    (task / "images/val200/000007.jpg").write_bytes(b"broken")
    lines = (task / "test.txt").read_text().splitlines(keepends=True)
    (task / "test.txt").write_text("".join(lines[:3] + ["images/test/000003.jpg 99\n"] + lines[4:]))
    assert main(["data=vtab1k/dtd", f"paths.data_dir={data_dir}"]) == 1
    out = capsys.readouterr().out
    assert "FAIL (2 problem(s))" in out
    assert f"[dtd] ERROR {task}/val200.txt:8: {task}/images/val200/000007.jpg: image cannot be decoded" in out
    assert f"[dtd] ERROR {task}/test.txt:4: label 99 is outside [0, 46] (num_classes=47)" in out
    assert "fix: set data.num_classes to the task's class count" in out and "fix: re-download" in out


def test_check_covers_missing_tasks_of_a_group(data_dir, capsys):
    assert main(["data=vtab1k", f"paths.data_dir={data_dir}", "--no-decode"]) == 1
    out = capsys.readouterr().out
    assert "1/19 task(s) ok" in out
    assert "no folder for task 'oxford_iiit_pet'; looked for ['oxford_iiit_pet', 'oxford_pet', 'pets'" in out


def test_paths_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA", "/env/data")
    assert compose_data_config("vtab1k/dtd", []).data.root == "/env/data/vtab-1k"
    cfg = compose_data_config("fgvc/dogs", ["paths.data_dir=/x", "data.batch_size=8"]).data
    assert (cfg.root, cfg.batch_size) == ("/x/fgvc", 8)


def test_check_reports_config_mistakes(data_dir, capsys):
    assert main(["data=vtab1k/dtd", f"paths.data_dir={data_dir}", "data.num_classes=40", "--no-decode"]) == 1
    assert "data config: data.num_classes=40 but VTAB-1k dtd has 47 classes" in capsys.readouterr().out


def test_config_dir_brings_the_users_own_data_configs(tmp_path, monkeypatch, capsys):
    from peftlab.conf import USER_CONFIG_ENV

    example = Path(__file__).resolve().parent.parent / "examples" / "user_project" / "conf"
    monkeypatch.setenv(USER_CONFIG_ENV, "")  # restored after the test: --config-dir sets it for the process
    with pytest.raises(SystemExit, match="data=my_flowers is neither a data config nor a group"):
        main(["data=my_flowers", "--no-decode", f"paths.data_dir={tmp_path}"])
    assert main(["--config-dir", str(example), "data=my_flowers", "--no-decode", f"paths.data_dir={tmp_path}"]) == 1
    assert "my_flowers" in capsys.readouterr().out  # composed from the user's config; its folder is missing here


def test_a_moved_key_names_its_new_key():
    with pytest.raises(SystemExit, match="error: optim.label_smoothing has moved to module.label_smoothing"):
        main(["data=demo", "optim.label_smoothing=0.1"])
