"""``python -m peftlab.search select`` on synthetic sweep dirs: the hand-computed per-task choice (mean over seeds,
ties to the smaller lr), the written config composing into the final runs, and the refusal of test-split results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from peftlab.search import SearchError, main, select_from_sweep
from tests.conftest import CONF

#: (task, lr, wd, seed, final-epoch val acc); None = a failed run. Hand-computed expectations:
#: dtd:  (1e-3, 0) mean .72 beats (1e-2, 0) mean .70 although that one has the best single run (.80), and
#:       (1e-3, 1e-4) mean .71; the failed (5e-3, 0) run would have won and is ignored.
#: svhn: (1e-2, 0) and (1e-3, 1e-4) tie at mean .50 -> the smaller lr 1e-3 wins; (1e-3, 0) has .45.
RUNS = [
    ("dtd", 1e-3, 0.0, 1, 0.70), ("dtd", 1e-3, 0.0, 2, 0.74),
    ("dtd", 1e-2, 0.0, 1, 0.80), ("dtd", 1e-2, 0.0, 2, 0.60),
    ("dtd", 1e-3, 1e-4, 1, 0.71), ("dtd", 1e-3, 1e-4, 2, 0.71),
    ("dtd", 5e-3, 0.0, 1, None),
    ("svhn", 1e-2, 0.0, 1, 0.40), ("svhn", 1e-2, 0.0, 2, 0.60),
    ("svhn", 1e-3, 1e-4, 1, 0.50), ("svhn", 1e-3, 1e-4, 2, 0.50),
    ("svhn", 1e-3, 0.0, 1, 0.45), ("svhn", 1e-3, 0.0, 2, 0.45),
]  # fmt: skip
EXPECTED = {"dtd": {"lr": 1e-3, "weight_decay": 0.0}, "svhn": {"lr": 1e-3, "weight_decay": 1e-4}}


def write_run(root: Path, task: str, lr: float, wd: float, seed: int, acc: float | None, **experiment) -> Path:
    """A job dir as a sweep leaves it: ``results.json`` and Hydra's ``.hydra/overrides.yaml``."""
    split = experiment.pop("split", "search")
    job = root / task / f"optim.lr={lr},optim.weight_decay={wd},seed={seed},split={split}"
    (job / ".hydra").mkdir(parents=True)
    overrides = ["experiment=hta_vtab1k", f"data=vtab1k/{task}", f"optim.lr={lr}", f"optim.weight_decay={wd}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}", "debug=limit"]))
    result = {
        "status": "complete" if acc is not None else "failed",
        "experiment": {"name": "hta_vtab1k", "method": "hta", "backbone": "vit_b16_in21k", "dataset": "vtab1k",
                       "task": task, "split": split, "seed": seed, **experiment},
        "reported": {"metric": "val/acc" if split == "search" else "test/acc", "value": acc},
        "run_info": {"config": {"seed": seed, "optim": {"lr": lr, "weight_decay": wd}, "data": {"task": task}}},
    }  # fmt: skip
    (job / "results.json").write_text(json.dumps(result))
    return job


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    root = tmp_path / "sweeps" / "hta_grid" / "hta_vtab1k"
    for run in RUNS:
        write_run(root, *run)
    return root


def test_selects_best_mean_over_seeds_with_ties_to_the_smaller_lr(sweep_dir):
    choices, warnings = select_from_sweep(sweep_dir)
    assert {task: dict(choice.values) for task, choice in choices.items()} == {
        task: {f"optim.{k}": v for k, v in row.items()} for task, row in EXPECTED.items()
    }
    assert choices["dtd"].val_acc == pytest.approx(0.72) and choices["dtd"].seeds == 2
    assert choices["dtd"].candidates == 3 and choices["svhn"].candidates == 3
    assert any("not complete" in w and "lr=0.005" in w for w in warnings)


def test_written_config_drives_the_final_runs(sweep_dir, tmp_path, capsys):
    out = tmp_path / "conf_extra" / "method_data" / "hta_vtab1k_searched.yaml"
    assert main(["select", str(sweep_dir), "--out", str(out)]) == 0
    assert "method_data=hta_vtab1k_searched" in capsys.readouterr().err
    table = OmegaConf.load(out).method_data
    assert table.name == "hta_vtab1k_searched"
    assert {task: dict(row) for task, row in table.tasks.items()} == EXPECTED
    assert table.evidence.dtd.val_acc == pytest.approx(0.72) and table.evidence.svhn.seeds == 2

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        search_path = f"hydra.searchpath=[file://{out.parent.parent}]"
        for task, row in EXPECTED.items():
            overrides = ["experiment=hta_vtab1k", f"data=vtab1k/{task}", "method_data=hta_vtab1k_searched"]
            cfg = compose("train", overrides=[*overrides, search_path])
            assert (cfg.optim.lr, cfg.optim.weight_decay) == (row["lr"], row["weight_decay"])
            assert cfg.data.split == "final" and cfg.method_data.selected.lr == row["lr"]
    GlobalHydra.instance().clear()


def test_refuses_test_split_results(sweep_dir, capsys):
    write_run(sweep_dir, "dtd", 1e-1, 0.0, 1, 0.99, split="final")
    with pytest.raises(SearchError, match="Test accuracy never selects hyperparameters"):
        select_from_sweep(sweep_dir)
    assert main(["select", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "split=final" in err and "never selects" in err and "data.split=search" in err


def test_refuses_mixed_experiments_group_keys_and_silent_overwrites(sweep_dir, tmp_path):
    with pytest.raises(SearchError, match="config group"):
        select_from_sweep(sweep_dir, keys=["optim"])
    out = tmp_path / "selected.yaml"
    out.write_text("keep me")
    assert main(["select", str(sweep_dir), "--out", str(out)]) == 2 and out.read_text() == "keep me"
    assert main(["select", str(sweep_dir), "--out", str(out), "--force"]) == 0
    write_run(sweep_dir, "dtd", 1e-3, 0.0, 3, 0.9, method="lora")
    with pytest.raises(SearchError, match="mix experiments"):
        select_from_sweep(sweep_dir)


def test_explicit_keys_and_nothing_swept(tmp_path):
    root = tmp_path / "one_config"
    for seed, acc in ((1, 0.6), (2, 0.8)):
        write_run(root, "dtd", 1e-3, 0.0, seed, acc)
    with pytest.raises(SearchError, match="no hyperparameter varies"):
        select_from_sweep(root)
    choices, _ = select_from_sweep(root, keys=["optim.lr"])
    assert dict(choices["dtd"].values) == {"optim.lr": 1e-3} and choices["dtd"].val_acc == pytest.approx(0.7)
