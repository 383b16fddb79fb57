"""``python -m peftlab.search select`` on synthetic search dirs written as the trainer writes them: the
hand-computed per-task choice (mean over seeds, ties to the smaller lr), the complete configuration handed over
(not only the keys that varied), the selection written beside the search (never in the package) and composing into
the final runs, and the refusal of test-split results."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from peftlab.identity import identity_hash, semantic_identity
from peftlab.results import Experiment, Identity, Reported, RunRecord
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
#: fixed by the grid for every job and different from the recipe's default: must reach the final runs too
FIXED = {"module.label_smoothing": 0.1, "method.rank": 2}
_IDENTITIES: dict[str, dict] = {}


def grid_identity(task: str) -> dict:
    """The real identity of ``experiment=hta_vtab1k data=vtab1k/<task> data.split=search`` plus the grid's fixed
    keys (composed once per task)."""
    if task not in _IDENTITIES:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            overrides = ["experiment=hta_vtab1k", f"data=vtab1k/{task}", "data.split=search"]
            cfg = compose("train", overrides=[*overrides, *(f"{k}={v}" for k, v in FIXED.items())])
        GlobalHydra.instance().clear()
        _IDENTITIES[task] = semantic_identity(cfg, "hta")
    return _IDENTITIES[task]


def write_run(root: Path, task: str, lr: float, wd: float, seed: int, acc: float | None, split: str = "search",
              method: str = "hta") -> Path:  # fmt: skip
    """A job dir as a sweep leaves it: the trainer's record with the run's identity."""
    identity = grid_identity(task)
    config = {**identity["config"], "optim.lr": lr, "optim.weight_decay": wd, "seed": seed, "data.split": split}
    job = root / task / f"lr={lr},weight_decay={wd},seed={seed},split={split}"
    RunRecord(
        status="complete" if acc is not None else "failed",
        experiment=Experiment(name="hta_vtab1k", method=method, backbone=config["backbone.name"], dataset="vtab1k",
                              task=task, split=split, seed=seed),  # fmt: skip
        identity=Identity(config=config, per_task=identity["per_task"], hash=identity_hash(config)),
        reported=Reported("val/acc" if split == "search" else "test/acc", acc),
        run_info={"output_dir": str(job), "choices": {"experiment": "hta_vtab1k", "data": f"vtab1k/{task}",
                                                      "method_data": None}},
    ).save(job)  # fmt: skip
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


def test_selection_hands_over_the_complete_configuration_and_the_printed_command(sweep_dir, capsys):
    """Today's bug: only the varied keys were handed over (label smoothing 0.1 and rank 2 fixed by the grid were
    lost, the final runs used the defaults), the file went into the package's conf/, and the printed
    `method_data=<name>` needed a recipe to work."""
    assert main(["select", str(sweep_dir)]) == 0
    out = sweep_dir / "selection" / "method_data" / f"{sweep_dir.name}_selected.yaml"
    assert out.is_file()  # beside the search's outputs
    command = capsys.readouterr().out.strip().splitlines()[-1]
    assert command.startswith("python -m peftlab.train -m --config-dir ")
    assert f"--config-dir {out.parent.parent.resolve()}" in command and "data.split=final" in command
    table = OmegaConf.load(out).method_data
    assert list(table.varied) == ["optim.lr", "optim.weight_decay"] and table.evidence.dtd.val_acc == pytest.approx(
        0.72
    )

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        args = command.split("--config-dir ", 1)[1].split()[1:]
        search_path = f"hydra.searchpath=[file://{out.parent.parent}]"
        for task, row in EXPECTED.items():
            task_args = [a if not a.startswith("data=") else f"data=vtab1k/{task}" for a in args]
            cfg = compose("train", overrides=[*task_args, search_path])
            assert (cfg.optim.lr, cfg.optim.weight_decay) == (row["lr"], row["weight_decay"])
            assert (
                cfg.module.label_smoothing == FIXED["module.label_smoothing"]
                and cfg.method.rank == FIXED["method.rank"]
            )
            assert cfg.data.split == "final" and cfg.data.task == task
            final = semantic_identity(cfg, "hta")["config"]
            chosen = grid_identity(task)["config"]
            differ = {k for k in chosen if final.get(k) != chosen[k]}
            assert differ <= {"data.split", "optim.lr", "optim.weight_decay", "seed"}
    GlobalHydra.instance().clear()


def test_a_selection_is_never_written_into_the_package(sweep_dir):
    from peftlab.conf import CONFIG_DIR

    assert main(["select", str(sweep_dir), "--out", str(CONFIG_DIR)]) == 2
    assert not (CONFIG_DIR / "method_data" / f"{sweep_dir.name}_selected.yaml").exists()


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
    out = tmp_path / "selection"
    assert main(["select", str(sweep_dir), "--out", str(out)]) == 0
    written = out / "method_data" / f"{sweep_dir.name}_selected.yaml"
    written.write_text("keep me")
    assert main(["select", str(sweep_dir), "--out", str(out)]) == 2 and written.read_text() == "keep me"
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
