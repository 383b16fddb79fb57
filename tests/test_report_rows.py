"""Report rows are configurations: runs that differ in any semantic key are separate rows (with the differing keys
as columns), seeds aggregate only within one identity, and only the same identity with the same seed is a
duplicate. Records written through ``RunRecord``, as the trainer writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftlab import report
from peftlab.identity import identity_hash
from peftlab.results import Experiment, Identity, Reported, RunRecord

TIMM = "vit_base_patch16_224.orig_in21k"


def write_run(root: Path, task: str, seed: int, acc: float, split: str = "final", wandb: dict | None = None,
              per_task: tuple[str, ...] = (), **config) -> Path:  # fmt: skip
    """A trainer-like record whose identity holds ``config`` (dotted keys) on top of method/backbone/data/seed."""
    full = {"method.name": "full", "backbone.name": TIMM, "backbone.weights": "pretrained", "data.dataset": "vtab1k",
            "data.task": task, "data.split": split, "optim.lr": 1e-3, "optim.weight_decay": 1e-4, "seed": seed,
            **config}  # fmt: skip
    record = RunRecord(
        status="complete",
        experiment=Experiment(
            method=full["method.name"],
            backbone=TIMM,
            backbone_config="vit_b16_in21k",
            dataset="vtab1k",
            task=task,
            split=split,
            seed=seed,
        ),  # fmt: skip
        identity=Identity(config=full, per_task=list(per_task), hash=identity_hash(full)),
        reported=Reported("val/acc" if split == "search" else "test/acc", acc),
        params={"trainable_without_head": 1000, "head": 769 * 47},
        run_info={"finished_at": "2026-11-29T10:00:00", "wandb": wandb},
    )
    return record.save(root / f"{task}-{split}-{identity_hash(full)}")


def run_rows(tables) -> list:
    return [row for row in tables[0].rows if row.kind == "run"]


def test_two_grid_points_are_two_rows_not_a_duplicate_seed(tmp_path):
    """Today's bug: lr 1e-2 (69.5) and lr 1e-3 (54.0) at seed 42 became 'duplicate seed 42, kept newest'."""
    write_run(tmp_path, "dtd", 42, 0.695, **{"optim.lr": 1e-2})
    write_run(tmp_path, "dtd", 42, 0.540, **{"optim.lr": 1e-3})
    markdown, tables, issues, _ = report.report([tmp_path], mode="none")
    rows = run_rows(tables)
    assert sorted((row.config["optim.lr"], row.cells["dtd"].value) for row in rows) == [
        (1e-3, pytest.approx(54.0)), (1e-2, pytest.approx(69.5)),
    ]  # fmt: skip
    assert not issues.warnings and tables[0].config_keys == ["optim.lr"]
    assert "| Row | lr | Seeds |" in markdown
    assert "| full · vit_b16_in21k | 0.001 | 1 |" in markdown and "| full · vit_b16_in21k | 0.01 | 1 |" in markdown


def test_random_init_and_pretrained_are_separate_rows(tmp_path):
    write_run(tmp_path, "dtd", 1, 0.30, **{"method.name": "linear", "backbone.weights": "random-init"})
    write_run(tmp_path, "dtd", 1, 0.60, **{"method.name": "linear"})
    _, tables, issues, _ = report.report([tmp_path], mode="none")
    weights = {row.config["backbone.weights"]: row.cells["dtd"].value for row in run_rows(tables)}
    assert weights == {"random-init": pytest.approx(30.0), "pretrained": pytest.approx(60.0)}
    assert tables[0].config_keys == ["backbone.weights"] and not issues.warnings


def test_seeds_aggregate_within_one_identity_and_only_true_duplicates_warn(tmp_path):
    for seed, acc in ((1, 0.50), (2, 0.52)):
        write_run(tmp_path / "a", "dtd", seed, acc)
    write_run(tmp_path / "b", "dtd", 1, 0.90)  # same identity, same seed: a true duplicate
    _, tables, issues, _ = report.report([tmp_path], mode="none")
    (row,) = run_rows(tables)
    assert row.cells["dtd"].n == 2 and len(issues.warnings) == 1 and "duplicate seed 1" in issues.warnings[0]


def test_three_learning_rates_of_full_are_three_rows_unless_grouped(tmp_path):
    for lr, acc in ((1e-2, 0.4), (1e-3, 0.5), (1e-4, 0.6)):
        write_run(tmp_path, "dtd", 42, acc, **{"optim.lr": lr})
    _, tables, _, _ = report.report([tmp_path], mode="none")
    assert len(run_rows(tables)) == 3
    _, grouped, _, _ = report.report([tmp_path], mode="none", group_by=["method.name"])
    (row,) = run_rows(grouped)
    assert row.cells["dtd"].n == 3 and row.cells["dtd"].value == pytest.approx(50.0)


def test_select_on_val_takes_per_task_the_configuration_best_on_the_search_split(tmp_path):
    # search: lr 1e-2 best on dtd, lr 1e-3 best on svhn; final (test) numbers deliberately disagree with val
    for task, lr, val, test in (("dtd", 1e-2, 0.7, 0.60), ("dtd", 1e-3, 0.6, 0.65),
                                ("svhn", 1e-2, 0.4, 0.90), ("svhn", 1e-3, 0.5, 0.80)):  # fmt: skip
        write_run(tmp_path, task, 1, val, split="search", **{"optim.lr": lr})
        write_run(tmp_path, task, 1, test, **{"optim.lr": lr})
    markdown, tables, _, _ = report.report([tmp_path], mode="none", select_on_val=True)
    (selected,) = [row for row in tables[0].rows if row.kind == "selected"]
    assert selected.cells["dtd"].value == pytest.approx(60.0) and selected.cells["svhn"].value == pytest.approx(80.0)
    assert "dtd: optim.lr=0.01" in selected.source and "svhn: optim.lr=0.001" in selected.source
    assert "[selected on val]" in markdown


def test_cli_columns_and_csv_carry_the_differing_keys(tmp_path, capsys):
    write_run(tmp_path / "runs", "dtd", 42, 0.695, **{"optim.lr": 1e-2, "optim.weight_decay": 0.0})
    write_run(tmp_path / "runs", "dtd", 42, 0.540, **{"optim.lr": 1e-3})
    assert report.main([str(tmp_path / "runs"), "--published", "none", "--out", str(tmp_path / "out"),
                        "--no-plots"]) == 0  # fmt: skip
    assert "| Row | lr | weight_decay | Seeds |" in capsys.readouterr().out
    header = (tmp_path / "out" / "vtab1k.csv").read_text().splitlines()[0].split(",")
    assert header[6:8] == ["optim.lr", "optim.weight_decay"]


def test_wandb_table_rows_link_their_runs(tmp_path):
    from peftlab.report.wandb import run_links

    for seed in (1, 2):
        url = f"https://wandb.ai/me/peftlab/runs/id{seed}"
        write_run(tmp_path, "dtd", seed, 0.5, wandb={"project": "peftlab", "id": f"id{seed}", "url": url})
    _, tables, _, _ = report.report([tmp_path], mode="none")
    (row,) = run_rows(tables)
    assert run_links(row) == "https://wandb.ai/me/peftlab/runs/id1 https://wandb.ai/me/peftlab/runs/id2"


def test_a_recipe_with_per_task_values_is_one_row_across_tasks(tmp_path):
    recipe = {"method_data.name": "rlrr_vtab1k", "per_task": ("optim.lr",)}
    write_run(tmp_path, "dtd", 1, 0.7, **{"optim.lr": 2e-3}, **recipe)
    write_run(tmp_path, "svhn", 1, 0.9, **{"optim.lr": 5e-3}, **recipe)
    write_run(tmp_path, "dtd", 1, 0.5, **{"optim.lr": 1e-2})  # not the recipe: its own row
    _, tables, _, _ = report.report([tmp_path], mode="none")
    rows = {row.config.get("method_data.name"): row for row in run_rows(tables)}
    assert set(rows["rlrr_vtab1k"].cells) >= {"dtd", "svhn"} and rows["rlrr_vtab1k"].config["optim.lr"] == "(per task)"
    assert set(rows[None].cells) >= {"dtd"} and "svhn" not in rows[None].cells
