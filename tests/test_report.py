"""Results aggregation: synthetic results.json trees with hand-computed expectations, and the published rows."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from PIL import Image

from peftlab import published, report
from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS

ORIG, AUGREG = published.ORIG_IN21K, published.AUGREG_IN21K


def write_result(root: Path, task: str, seed: int, value: float | None, **fields) -> Path:
    """Write one results.json in the trainer's schema under ``root`` and return its path."""
    dataset = fields.get("dataset", "vtab1k")
    classes = {**VTAB_TASKS, **FGVC_TASKS}[task].num_classes if task in {**VTAB_TASKS, **FGVC_TASKS} else 4
    finished = fields.get("finished_at", "2026-11-22T20:13:32")
    run_name = f"{fields.get('split', 'final')}_seed{seed}_{finished.replace(':', '')}"
    folder = root / fields.get("method", "rlrr") / dataset / task / run_name
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "status": fields.get("status", "complete"),
        "error": fields.get("error"),
        "experiment": {
            "name": "synthetic",
            "method": fields.get("method", "rlrr"),
            "backbone": fields.get("backbone", "vit_b16_in21k"),
            "timm_name": fields.get("timm_name", ORIG),
            "dataset": dataset,
            "task": task,
            "group": "natural",
            "split": fields.get("split", "final"),
            "seed": seed,
        },
        "reported": {"metric": "test/acc", "value": value},
        "metrics": {"test/acc": value},
        "diagnostics": {"best_epoch_eval_acc": 0.99, "best_epoch": 3},  # must never reach a table
        "params": {
            "trainable": 1,
            "total": 86_000_000,
            "head": 769 * classes,
            "trainable_without_head": fields.get("trainable_without_head", 288_768),
        },
        "run_info": {"finished_at": finished},
    }
    (folder / "results.json").write_text(json.dumps(payload))
    return folder / "results.json"


def write_published(root: Path, key: str, **fields) -> None:
    """One seed-42 run per task, reporting the published per-task accuracy of row ``key`` as a fraction."""
    row = published.ROWS[key]
    for task, accuracy in row.tasks.items():
        write_result(root, task, 42, accuracy / 100, method=row.method, dataset=row.benchmark, **fields)


def only_run_row(tables: list[report.Table], dataset: str) -> report.Row:
    (table,) = [t for t in tables if t.layout.dataset == dataset]
    (row,) = [r for r in table.rows if r.kind == "run"]
    return row


def shown(row: report.Row, column: str) -> str:
    return report.fmt(row.cells[column].value) if column in row.cells else "–"


# ----------------------------------------------------------------------------- the papers' means, reproduced


def test_rlrr_published_tasks_reproduce_the_papers_vtab_means(tmp_path):
    write_published(tmp_path, "vtab1k/rlrr")
    _, tables, issues, _ = report.report([tmp_path])
    row = only_run_row(tables, "vtab1k")
    # docs/methods.md §1.6 recomputed: Nat 82.64 (printed 82.7), Spec 85.80, Struct 61.81, mean 74.54, groups 76.75
    assert row.cells["mean"].value == pytest.approx(74.5368, abs=1e-4)
    assert [shown(row, c) for c in ("natural", "specialized", "structured", "mean", "mean_groups")] == [
        "82.6", "85.8", "61.8", "74.5", "76.8",
    ]  # fmt: skip
    assert row.cells["mean_groups"].value == pytest.approx(76.752, abs=1e-3)
    assert not issues.missing and not issues.failed and not issues.incomplete


def test_hta_published_tasks_reproduce_the_papers_vtab_means(tmp_path):
    write_published(tmp_path, "vtab1k/hta", trainable_without_head=184_320)
    _, tables, _, _ = report.report([tmp_path])
    row = only_run_row(tables, "vtab1k")
    # docs/methods.md §2.5: 19-task mean 74.68 (printed 74.7), group mean 76.89; printed N/S/St 82.4 / 86.0 / 62.3
    assert row.cells["mean"].value == pytest.approx(74.684, abs=1e-3)
    assert row.cells["mean_groups"].value == pytest.approx(76.891, abs=1e-3)
    assert [shown(row, c) for c in ("natural", "specialized", "structured", "mean", "mean_groups")] == [
        "82.4", "86.0", "62.3", "74.7", "76.9",
    ]  # fmt: skip
    # HTA-P Table 1 prints 0.22 M: 184,320 + the average VTAB head 38,045
    assert row.params[report.PARAMS_HEAD] == pytest.approx(0.222365, abs=1e-6)
    assert report.fmt(row.params[report.PARAMS_HEAD], 2) == "0.22"


def test_fgvc_published_tasks_reproduce_hta_and_expose_the_rlrr_rounding(tmp_path):
    write_published(tmp_path / "hta", "fgvc/hta", trainable_without_head=184_320)
    write_published(tmp_path / "rlrr", "fgvc/rlrr")
    _, hta_tables, _, _ = report.report([tmp_path / "hta"])
    _, rlrr_tables, _, _ = report.report([tmp_path / "rlrr"])
    hta, rlrr = only_run_row(hta_tables, "fgvc"), only_run_row(rlrr_tables, "fgvc")
    assert hta.cells["mean"].value == pytest.approx(90.56) and shown(hta, "mean") == "90.6"  # printed 90.6
    assert report.fmt(hta.params[report.PARAMS_HEAD], 2) == "0.36"  # 184,320 + 180,407
    # (89.3 + 84.7 + 99.5 + 92.0 + 87.0) / 5 = 90.50 exactly, but the paper prints 90.4: flagged, not fudged
    assert rlrr.cells["mean"].value == pytest.approx(90.50) and shown(rlrr, "mean") == "90.5"
    assert published.ROWS["fgvc/rlrr"].means["mean"] == 90.4 and "90.4" in published.ROWS["fgvc/rlrr"].note
    assert report.fmt(rlrr.params[report.PARAMS_HEAD], 2) == "0.47"  # 288,768 + 180,407


def test_published_means_match_their_tasks_except_the_documented_rows():
    mismatches = set()
    for row in published.ROWS.values():
        if not row.tasks:
            continue
        layout = report.layout_for(row.benchmark)
        computed = report.summarize({t: report.Stat(v) for t, v in row.tasks.items()}, layout)
        for column, printed in row.means.items():
            if report.fmt(computed[column].value) != report.fmt(printed):
                mismatches.add((row.key, column))
                assert "printed" in row.note, f"{row.key}: undocumented mismatch in {column}"
    assert mismatches == {
        ("vtab1k/bitfit", "mean"),  # 62.05 vs 62.1
        ("vtab1k/rlrr", "natural"),  # 82.64 vs 82.7
        ("vtab1k/rlrr_augreg", "specialized"),  # 87.35 vs 87.3
        ("fgvc/vpt_shallow", "mean"),  # 84.66 vs 84.6
        ("fgvc/rlrr", "mean"),  # 90.50 vs 90.4
        ("fgvc/aoft_adapter_lambda", "mean"),  # 90.04 vs 90.1 [S]
        ("fgvc/aoft_vpt_deep", "mean"),  # 89.32 vs 89.5 [S]
    }


def test_published_rows_are_complete_and_cited():
    allowed = {"full", "linear", "bitfit", "vpt_shallow", "vpt_deep", "adapter", "lora", "adaptformer", "fact_tk",
               "arc", "ssf", "rlrr", "hta", "aoft", "aoft_adapter", "vpt_deep_aoft"}  # fmt: skip
    for row in published.ROWS.values():
        assert row.method in allowed and row.tag in {"V", "S"} and row.source.split()[0] in published.PAPERS
        assert (row.tag == "S") == ("aoft" in row.method)
        if row.tasks:
            expected = VTAB_TASKS if row.benchmark == "vtab1k" else FGVC_TASKS
            assert list(row.tasks) == list(expected)
    rows = published.ROWS
    assert rows["vtab1k/rlrr"].tasks["cifar100"] == 75.6 and rows["vtab1k/rlrr"].tasks["smallnorb_ele"] == 43.6
    assert rows["vtab1k/hta"].tasks["caltech101"] == 94.3 and rows["vtab1k/hta_augreg"].means["mean"] == 75.7
    assert (rows["vtab1k/rlrr"].params_m, rows["fgvc/rlrr"].params_m) == (0.33, 0.47)
    assert (rows["vtab1k/hta"].params_m, rows["fgvc/hta"].params_m) == (0.22, 0.36)
    assert [r.label for r in published.rows_for("vtab1k", "hta", ablations=True)][2:] == [
        "HTA (D'=0)", "HTA (D'=2)", "HTA (D'=4)",
    ]  # fmt: skip
    assert published.reference_row("fgvc", "rlrr", AUGREG).label == "RLRR*"
    assert published.reference_row("fgvc", "rlrr", "vit_large_patch16_224.orig_in21k") is None
    assert published.reference_row("fgvc", "aoft_adapter", ORIG).label == "Adapter+AOFT*"


# ------------------------------------------------------------------------ synthetic runs, hand-computed


@pytest.fixture
def messy_fgvc(tmp_path) -> Path:
    """LoRA on FGVC: 3 / 2 / 1 (+ an older duplicate) / 1 (+ a crash) seeds and a still-running task."""
    root = tmp_path / "runs"
    for seed, value in ((1, 0.80), (2, 0.82), (3, 0.84)):
        write_result(root, "cub", seed, value, method="lora", dataset="fgvc")
    write_result(root, "nabirds", 1, 0.70, method="lora", dataset="fgvc")
    write_result(root, "nabirds", 2, 0.74, method="lora", dataset="fgvc")
    write_result(root, "flowers", 1, 0.99, method="lora", dataset="fgvc", finished_at="2026-11-23T08:00:00")
    write_result(root, "flowers", 1, 0.50, method="lora", dataset="fgvc", finished_at="2026-11-20T08:00:00")
    write_result(root, "dogs", 1, 0.90, method="lora", dataset="fgvc")
    write_result(root, "dogs", 2, None, method="lora", dataset="fgvc", status="failed", error="CUDA out of memory")
    write_result(root, "cars", 1, 0.55, method="lora", dataset="fgvc", status="running")
    return root


def test_messy_runs_give_hand_computed_cells_and_say_what_is_missing(messy_fgvc):
    markdown, tables, issues, runs = report.report([messy_fgvc])
    row = only_run_row(tables, "fgvc")
    assert row.cells["cub"] == report.Stat(pytest.approx(82.0), pytest.approx(2.0), 3)
    assert row.cells["nabirds"] == report.Stat(pytest.approx(72.0), pytest.approx(math.sqrt(8)), 2)
    assert row.cells["flowers"] == report.Stat(pytest.approx(99.0), None, 1)  # newest duplicate kept, 50.0 ignored
    assert row.cells["dogs"] == report.Stat(pytest.approx(90.0), None, 1)  # the crashed seed is not counted
    assert "cars" not in row.cells and "mean" not in row.cells  # no mean over 4 of 5 tasks
    assert row.seeds == "1–3"
    assert len(runs) == 10
    assert issues.missing == ["lora/vit_b16_in21k/fgvc/final: 4/5 tasks complete; no complete run for cars"]
    assert [(r.task, r.seed, r.error) for r in issues.failed] == [("dogs", 2, "CUDA out of memory")]
    assert [(r.task, r.status) for r in issues.incomplete] == [("cars", "running")]
    assert len(issues.warnings) == 1 and "duplicate seed 1" in issues.warnings[0] and "flowers" in issues.warnings[0]
    assert "| lora · vit_b16_in21k | 1–3 | 82.0 ± 2.0 | 72.0 ± 2.8 | 99.0 | 90.0 | – | – |" in markdown
    for text in ("no complete run for cars", "CUDA out of memory", "status running", "duplicate seed 1"):
        assert text in markdown


def test_a_complete_run_without_a_reported_value_is_listed_not_counted(tmp_path):
    write_result(tmp_path, "cub", 1, None, dataset="fgvc")
    write_result(tmp_path, "dogs", 1, 0.9, dataset="fgvc")
    _, tables, issues, _ = report.report([tmp_path])
    assert [(r.task, r.status) for r in issues.incomplete] == [("cub", "complete")]
    assert "cub" not in only_run_row(tables, "fgvc").cells


def test_a_method_with_only_a_crashed_run_is_reported_missing_everywhere(tmp_path):
    write_result(tmp_path, "dtd", 1, None, method="hta", status="failed", error="ValueError: bad lr")
    markdown, tables, issues, _ = report.report([tmp_path])
    assert tables == [] and "No complete run: no table." in markdown
    assert issues.missing == [f"hta/vit_b16_in21k/vtab1k/final: 0/19 tasks complete; no complete run for "
                              f"{', '.join(VTAB_TASKS)}"]  # fmt: skip
    assert "ValueError: bad lr" in markdown


def test_vtab_group_means_both_means_and_propagated_stds(tmp_path):
    # task i (papers' order) has seeds at 49+i and 51+i percent: mean 50+i, sample std sqrt(2)
    for i, task in enumerate(VTAB_TASKS):
        for seed, offset in ((1, -1), (2, 1)):
            write_result(tmp_path, task, seed, (50 + i + offset) / 100, method="hta", trainable_without_head=184_320)
    _, tables, issues, _ = report.report([tmp_path], mode="none")
    row = only_run_row(tables, "vtab1k")
    assert row.cells["cifar100"].std == pytest.approx(math.sqrt(2))
    expected = {  # value, std = sqrt(Σσ²)/n
        "natural": (53.0, math.sqrt(14) / 7),
        "specialized": (58.5, math.sqrt(8) / 4),
        "structured": (64.5, math.sqrt(16) / 8),
        "mean": (59.0, math.sqrt(38) / 19),
        "mean_groups": ((53.0 + 58.5 + 64.5) / 3, math.sqrt(2 / 7 + 2 / 4 + 2 / 8) / 3),
    }
    for column, (value, std) in expected.items():
        assert (row.cells[column].value, row.cells[column].std) == (pytest.approx(value), pytest.approx(std)), column
    assert row.params == {
        report.PARAMS_NO_HEAD: pytest.approx(0.18432),
        report.PARAMS_HEAD: pytest.approx(0.222365, abs=1e-6),
    }
    assert [r.kind for r in tables[0].rows] == ["run"] and not issues.missing


def test_published_rows_and_deltas_follow_the_backbone(tmp_path):
    write_published(tmp_path / "base", "fgvc/rlrr_augreg", backbone="vit_b16_augreg", timm_name=AUGREG)
    write_result(tmp_path / "base", "cub", 7, 0.9, method="lora", dataset="fgvc")
    _, tables, _, _ = report.report([tmp_path / "base"])
    labels = [r.label for r in tables[0].rows]
    assert labels == [
        "lora · vit_b16_in21k", "LoRA [paper]", "Δ vs LoRA [paper]",
        "rlrr · vit_b16_augreg", "RLRR [paper]", "RLRR* [paper]", "Δ vs RLRR* [paper]",
    ]  # fmt: skip
    delta = tables[0].rows[-1]
    assert delta.cells["cub"].value == pytest.approx(0.0) and delta.cells["mean"].value == pytest.approx(91.02 - 91.0)
    assert tables[0].rows[2].cells == {"cub": report.Stat(pytest.approx(90.0 - 88.3))}
    write_result(tmp_path / "large", "cub", 1, 0.9, dataset="fgvc", timm_name="vit_large_patch16_224.orig_in21k")
    _, large, _, _ = report.report([tmp_path / "large"])
    assert [r.kind for r in large[0].rows] == ["run"]  # no ViT-B numbers next to a ViT-L run
    _, every, _, _ = report.report([tmp_path / "base"], mode="all")
    assert len(every[0].rows) == 7 + len(published.rows_for("fgvc")) - 3


def test_search_split_runs_get_their_own_row_and_no_delta_to_test_accuracies(tmp_path):
    write_result(tmp_path, "cub", 1, 0.9, dataset="fgvc", split="search")
    write_result(tmp_path, "cub", 1, 0.8, dataset="fgvc")
    _, tables, issues, _ = report.report([tmp_path])
    labels = [r.label for r in tables[0].rows]
    assert labels == ["rlrr · vit_b16_in21k", "RLRR [paper]", "RLRR* [paper]", "Δ vs RLRR [paper]",
                      "rlrr · vit_b16_in21k [search]"]  # fmt: skip
    assert tables[0].rows[-1].cells["cub"].value == pytest.approx(90.0) and not issues.warnings


def test_cli_writes_markdown_csv_latex_and_plots(messy_fgvc, tmp_path, capsys):
    write_published(messy_fgvc, "vtab1k/rlrr")
    out = tmp_path / "report"
    assert report.main([str(messy_fgvc), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "Mean (19 tasks)" in printed.out and "Mean (3 groups)" in printed.out and "| 74.5 | 76.8 |" in printed.out
    assert "duplicate seed" in printed.err
    expected = {"report.md", "runs.csv", "fgvc.csv", "fgvc.tex", "vtab1k.csv", "vtab1k.tex", "fgvc.png"}
    expected |= {f"vtab1k_{name}.png" for name in ("natural", "specialized", "structured", "means")}
    assert {p.name for p in out.iterdir()} == expected
    rows = list(csv.DictReader((out / "vtab1k.csv").open()))
    ours = next(r for r in rows if r["kind"] == "run")
    assert (ours["method"], ours["mean"], ours["mean_groups"], ours["params_m"]) == ("rlrr", "74.5368", "76.7518",
                                                                                      "0.326813")  # fmt: skip
    fgvc = next(r for r in csv.DictReader((out / "fgvc.csv").open()) if r["kind"] == "run")
    assert (fgvc["cub"], fgvc["cub_std"], fgvc["cars"], fgvc["mean"]) == ("82.0000", "2.0000", "", "")
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 10 + 19
    tex = (out / "fgvc.tex").read_text()
    assert "\\begin{tabular}" in tex and "82.0{\\scriptsize$\\pm$2.0}" in tex and "lora $\\cdot$ vit\\_b16" in tex
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
            assert len(image.getcolors(1 << 16)) > 3  # more than a blank canvas


def test_cli_without_results_fails_clearly(tmp_path, capsys):
    assert report.main([str(tmp_path), str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "no results.json found" in err and "nope" in err


def test_unreadable_results_are_listed(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"status": "runn')
    assert report.main([str(tmp_path), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "Unreadable results files" in out and "No complete run" in out


def test_wandb_offline_logs_tables(tmp_path, monkeypatch):
    write_published(tmp_path / "runs", "fgvc/hta")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert report.main([str(tmp_path / "runs"), "--wandb", "--format", "md", "--no-plots"]) == 0
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = {p.name.rsplit("_", 2)[0] for p in (run_dir / "files" / "media" / "table" / "fgvc").iterdir()}
    assert logged == {"table", "mean_table"}  # the results table and the bar plot's data
