"""Aggregate ``results.json`` files into the papers' VTAB-1k and FGVC tables (Markdown, CSV, LaTeX, PNG, W&B).

CLI::

    python -m peftlab.report outputs/ multirun/ [--out reports/] [--format md,csv,tex] [--published same|all|none]
                             [--no-plots] [--wandb] [--wandb-project NAME]

Complete runs are grouped by (method, backbone, dataset, split). Per task the table shows the mean ± sample std
(ddof=1) over seeds of ``reported.value`` (final-epoch accuracy). VTAB-1k rows show the three group means, the
19-task mean (the RLRR/HTA papers' "Mean") and the mean of the group means (VPT/Adapter+'s convention), each named;
stds propagate as sqrt(Σσ²)/n, as in Adapter+. A mean over tasks is only given when every one of its tasks has a
complete run. Params are ``params.trainable_without_head`` and that plus the benchmark's average head (768·C + C
averaged over the tasks: 38,045 on VTAB-1k, 180,407 on FGVC), the papers' convention. Failed, running and
incomplete runs are listed, never counted; a duplicated seed keeps the run with the newest ``finished_at``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from peftlab import published
from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS, find_spec

SHORT_NAMES = {
    "cifar100": "Cifar100", "caltech101": "Caltech101", "dtd": "DTD", "oxford_flowers102": "Flowers102",
    "oxford_iiit_pet": "Pets", "svhn": "SVHN", "sun397": "Sun397", "patch_camelyon": "Camelyon", "eurosat": "EuroSAT",
    "resisc45": "Resisc45", "diabetic_retinopathy": "Retinopathy", "clevr_count": "Clevr-Count",
    "clevr_dist": "Clevr-Dist", "dmlab": "DMLab", "kitti": "KITTI-Dist", "dsprites_loc": "dSpr-Loc",
    "dsprites_ori": "dSpr-Ori", "smallnorb_azi": "sNORB-Azim", "smallnorb_ele": "sNORB-Ele",
    "cub": "CUB", "nabirds": "NABirds", "flowers": "Flowers", "dogs": "Dogs", "cars": "Cars",
}  # fmt: skip
PARAMS_HEAD, PARAMS_NO_HEAD = "params_m", "params_m_no_head"


# ------------------------------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """The fields of one ``results.json`` the report uses (accuracy in percent)."""

    path: Path
    status: str
    error: str | None
    method: str
    backbone: str
    timm_name: str | None
    dataset: str
    task: str
    split: str
    seed: int | None
    value: float | None
    trainable_without_head: int | None
    head: int | None
    finished_at: str

    @property
    def group(self) -> tuple[str, str, str, str]:
        return self.method, self.backbone, self.dataset, self.split

    @property
    def counted(self) -> bool:
        return self.status == "complete" and self.value is not None and math.isfinite(self.value)

    def describe(self) -> str:
        return f"{self.method} / {self.backbone} / {self.dataset}/{self.task} / seed {self.seed} ({self.path})"


def find_results(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """All ``results.json`` files under ``paths`` (files are taken as given) and the paths that do not exist."""
    found, absent = [], []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results.json")))
        else:
            absent.append(str(path))
    return sorted(set(found)), absent


def load_run(path: Path) -> Run:
    """Parse one results file; raises ValueError with the reason when it is not a peftlab result."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable: {error}") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("experiment"), dict):
        raise ValueError("no 'experiment' section")
    experiment, params = payload["experiment"], payload.get("params") or {}
    value = (payload.get("reported") or {}).get("value")
    return Run(
        path=path,
        status=str(payload.get("status", "unknown")),
        error=payload.get("error"),
        method=str(experiment.get("method", "?")),
        backbone=str(experiment.get("backbone", "?")),
        timm_name=experiment.get("timm_name"),
        dataset=str(experiment.get("dataset", "?")),
        task=_canonical_task(str(experiment.get("dataset", "")), str(experiment.get("task", "?"))),
        split=str(experiment.get("split", "final")),
        seed=experiment.get("seed"),
        value=100.0 * float(value) if isinstance(value, int | float) else None,
        trainable_without_head=params.get("trainable_without_head"),
        head=params.get("head"),
        finished_at=str((payload.get("run_info") or {}).get("finished_at") or ""),
    )


def _canonical_task(dataset: str, task: str) -> str:
    catalog = {"vtab1k": VTAB_TASKS, "fgvc": FGVC_TASKS}.get(dataset)
    spec = find_spec(task, catalog) if catalog else None
    return spec.name if spec else task


# ---------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Columns of one benchmark table: task groups in the papers' order and the summary columns."""

    dataset: str
    title: str
    groups: dict[str, tuple[str, ...]]
    num_classes: dict[str, int]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task for tasks in self.groups.values() for task in tasks)

    @property
    def summaries(self) -> dict[str, str]:
        """Summary column ids and their headers."""
        columns = {g: g.capitalize() for g in self.groups} if len(self.groups) > 1 else {}
        columns["mean"] = f"Mean ({len(self.tasks)} task{'s' if len(self.tasks) != 1 else ''})"
        if len(self.groups) > 1:
            columns["mean_groups"] = f"Mean ({len(self.groups)} groups)"
        return columns


def layout_for(dataset: str, observed_tasks: Iterable[str] = ()) -> Layout:
    """The papers' layout for ``vtab1k`` and ``fgvc``; any other dataset gets its observed tasks, sorted."""
    if dataset == "vtab1k":
        groups = {g: tuple(t for t, s in VTAB_TASKS.items() if s.group == g) for g in published.VTAB_GROUPS}
        return Layout(dataset, "VTAB-1k", groups, {t: s.num_classes for t, s in VTAB_TASKS.items()})
    if dataset == "fgvc":
        return Layout(dataset, "FGVC", {"fgvc": tuple(FGVC_TASKS)}, {t: s.num_classes for t, s in FGVC_TASKS.items()})
    return Layout(dataset, dataset, {dataset: tuple(sorted(set(observed_tasks)))}, {})


# ---------------------------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stat:
    """A table cell: value in percent, its std (None for one seed or when not propagated) and its seed count."""

    value: float
    std: float | None = None
    n: int = 1


def seed_stat(values: Sequence[float]) -> Stat:
    """Mean and sample std (ddof=1) over seeds."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values))


def mean_stat(stats: Sequence[Stat]) -> Stat:
    """Mean of cells; std sqrt(Σσ²)/n (independent errors), given only when every cell has a std."""
    stds = [s.std for s in stats]
    std = math.sqrt(sum(s * s for s in stds)) / len(stats) if all(s is not None for s in stds) else None
    return Stat(statistics.fmean(s.value for s in stats), std, min(s.n for s in stats))


def summarize(cells: dict[str, Stat], layout: Layout) -> dict[str, Stat]:
    """Group means, the all-task mean and the mean of group means; a mean needs every one of its tasks."""
    out: dict[str, Stat] = {}
    groups = {g: [cells.get(t) for t in tasks] for g, tasks in layout.groups.items()}
    if len(layout.groups) > 1:
        out.update({g: mean_stat(stats) for g, stats in groups.items() if stats and None not in stats})
    if all(t in cells for t in layout.tasks) and layout.tasks:
        out["mean"] = mean_stat([cells[t] for t in layout.tasks])
        if len(layout.groups) > 1:
            out["mean_groups"] = mean_stat([out[g] for g in layout.groups])
    return out


@dataclass
class Row:
    """One table row: a group of runs, a published row, or the difference between the two."""

    label: str
    kind: str  # run | published | delta
    cells: dict[str, Stat]
    params: dict[str, float] = field(default_factory=dict)
    seeds: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class Table:
    layout: Layout
    rows: list[Row]


@dataclass
class Issues:
    """Everything the report could not count, to be printed next to the tables."""

    missing: list[str] = field(default_factory=list)
    failed: list[Run] = field(default_factory=list)
    incomplete: list[Run] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def deduplicate(runs: list[Run], issues: Issues) -> list[Run]:
    """Keep one counted run per (group, task, seed): the newest ``finished_at``; warn about the others."""
    by_seed: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_seed[(*run.group, run.task, run.seed)].append(run)
    kept = []
    for same in by_seed.values():
        same.sort(key=lambda r: (r.finished_at, str(r.path)))
        kept.append(same[-1])
        for dropped in same[:-1]:
            issues.warnings.append(
                f"duplicate seed {dropped.seed} for {'/'.join(dropped.group)}/{dropped.task}: "
                f"kept {same[-1].path} (finished {same[-1].finished_at or '?'}), "
                f"ignored {dropped.path} (finished {dropped.finished_at or '?'})"
            )
    return kept


def _seed_range(counts: Iterable[int]) -> str:
    counts = sorted(set(counts))
    return "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def average_head(layout: Layout, runs: Sequence[Run]) -> float | None:
    """The benchmark's task-averaged head, (D + 1)·C averaged over its tasks, with D read off a run's head size."""
    dims = [r.head / layout.num_classes[r.task] - 1 for r in runs if r.head and r.task in layout.num_classes]
    if dims:
        dim = round(statistics.fmean(dims))
        return statistics.fmean((dim + 1) * layout.num_classes[t] for t in layout.tasks)
    heads = [r.head for r in runs if r.head]
    return statistics.fmean(heads) if heads and not layout.num_classes else None


def run_row(runs: list[Run], layout: Layout) -> Row:
    """Aggregate the kept complete runs of one group into a row."""
    per_task: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        per_task[run.task].append(run.value)
    cells = {t: seed_stat(v) for t, v in per_task.items()}
    cells.update(summarize(cells, layout))
    params = {}
    counts = [r.trainable_without_head for r in runs if r.trainable_without_head is not None]
    head = average_head(layout, runs)
    if counts:
        params[PARAMS_NO_HEAD] = statistics.fmean(counts) / 1e6
        if head is not None:
            params[PARAMS_HEAD] = (statistics.fmean(counts) + head) / 1e6
    method, backbone, dataset, split = runs[0].group
    label = f"{method} · {backbone}" + ("" if split == "final" else f" [{split}]")
    meta = {"method": method, "backbone": backbone, "timm_name": runs[0].timm_name or "", "split": split}
    return Row(label, "run", cells, params, _seed_range(map(len, per_task.values())), "peftlab runs", meta)


def published_row(row: published.PublishedRow, layout: Layout) -> Row:
    """A paper's row: printed means where published, the mean of group means derived (from tasks when printed)."""
    cells = {t: Stat(v) for t, v in row.tasks.items()}
    derived = summarize(cells, layout) if row.tasks else {}
    cells.update(derived)
    cells.update({k: Stat(v) for k, v in row.means.items()})
    if "mean_groups" not in derived and all(g in row.means for g in layout.groups) and len(layout.groups) > 1:
        cells["mean_groups"] = mean_stat([Stat(row.means[g]) for g in layout.groups])
    params = {PARAMS_HEAD: row.params_m} if row.params_m is not None else {}
    source = f"{row.source} [{row.tag}]" + (f"; {row.note}" if row.note else "")
    meta = {"method": row.method, "timm_name": row.timm_name, "key": row.key}
    return Row(f"{row.label} [paper]", "published", cells, params, "", source, meta)


def delta_row(ours: Row, reference: Row) -> Row:
    """ours − reference wherever both have a value (stds are not carried)."""
    cells = {k: Stat(s.value - reference.cells[k].value) for k, s in ours.cells.items() if k in reference.cells}
    params = {k: v - reference.params[k] for k, v in ours.params.items() if k in reference.params}
    return Row(f"Δ vs {reference.label}", "delta", cells, params, "", f"{ours.label} minus {reference.label}")


def build_table(layout: Layout, groups: dict[tuple, list[Run]], mode: str) -> Table:
    """Rows: each run group, its method's published rows and the delta to the reference row; then, with
    ``mode == "all"``, every other published main row of the benchmark."""
    rows, shown = [], set()
    for key in sorted(groups):
        ours = run_row(groups[key], layout)
        rows.append(ours)
        if mode == "none":
            continue
        timm_name = groups[key][0].timm_name
        reference = published.reference_row(layout.dataset, key[0], timm_name)
        reference = reference if key[3] == "final" else None  # val200 accuracies are not comparable to test
        for paper in published.rows_for(layout.dataset, key[0]):
            if timm_name and not published.same_architecture(paper.timm_name, timm_name):
                continue  # e.g. a ViT-L run next to ViT-B numbers
            if paper.key not in shown:  # a method run on two backbones shows its paper rows once
                rows.append(published_row(paper, layout))
                shown.add(paper.key)
        if reference is not None:
            rows.append(delta_row(ours, published_row(reference, layout)))
    if mode == "all":
        rows.extend(published_row(p, layout) for p in published.rows_for(layout.dataset) if p.key not in shown)
    return Table(layout, rows)


def aggregate(runs: list[Run], mode: str = "same") -> tuple[list[Table], Issues]:
    """Tables per dataset plus everything that was not counted."""
    issues = Issues()
    issues.failed = [r for r in runs if r.status == "failed"]
    issues.incomplete = [r for r in runs if r.status != "failed" and not r.counted]
    for run in runs:
        if run.dataset in ("vtab1k", "fgvc") and run.task not in layout_for(run.dataset).tasks:
            issues.warnings.append(f"unknown {run.dataset} task {run.task!r}, not counted: {run.path}")
    observed: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        observed[run.dataset].add(run.task)
    layouts = {d: layout_for(d, tasks) for d, tasks in sorted(observed.items())}
    counted = [r for r in runs if r.counted and r.task in layouts[r.dataset].tasks]
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in deduplicate(counted, issues):
        groups[run.group].append(run)
    issues.missing = missing_tasks({r.group for r in runs}, groups, layouts)
    tables = []
    for dataset, layout in layouts.items():
        mine = {k: v for k, v in groups.items() if k[2] == dataset}
        if mine:
            tables.append(build_table(layout, mine, mode))
    return tables, issues


def missing_tasks(keys: Iterable[tuple], groups: dict[tuple, list[Run]], layouts: dict[str, Layout]) -> list[str]:
    """One line per group (including groups with no complete run at all) that lacks a complete run for some task."""
    lines = []
    for key in sorted(keys):
        done = {r.task for r in groups.get(key, [])}
        tasks = layouts[key[2]].tasks
        lacking = [t for t in tasks if t not in done]
        if lacking:
            lines.append(f"{'/'.join(key)}: {len(tasks) - len(lacking)}/{len(tasks)} tasks complete; "
                         f"no complete run for {', '.join(lacking)}")  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------------------- rendering


def fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    """Round half up on the decimal value (so 74.65 → 74.7 whatever its binary representation)."""
    if value is None:
        return "–"
    rounded = Decimal(f"{value:.9f}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)
    return f"{rounded:+}" if signed else str(rounded)


def _columns(layout: Layout) -> list[tuple[str, str]]:
    tasks = [(t, SHORT_NAMES.get(t, t)) for t in layout.tasks]
    return [*tasks, *layout.summaries.items()]


def _cell(row: Row, key: str, pm: str = " ± ") -> str:
    stat = row.cells.get(key)
    if stat is None:
        return "–"
    text = fmt(stat.value, signed=row.kind == "delta")
    return text + (f"{pm}{fmt(stat.std)}" if stat.std is not None else "")


def _params(row: Row, key: str) -> str:
    value = row.params.get(key)
    return "–" if value is None else fmt(value, 2, signed=row.kind == "delta")


def to_markdown(table: Table) -> str:
    """A Markdown table in the papers' column order, followed by the sources of the published rows."""
    columns = _columns(table.layout)
    header = ["Row", "Seeds", *(name for _, name in columns), "Params (M) + avg head", "Params (M) no head"]
    lines = [f"### {table.layout.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [row.label, row.seeds, *(_cell(row, k) for k, _ in columns)]
        cells += [_params(row, PARAMS_HEAD), _params(row, PARAMS_NO_HEAD)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.label}: {r.source}" for r in table.rows if r.kind == "published"]
    lines += ["", *_legend(table.layout), *notes]
    return "\n".join(lines)


def _legend(layout: Layout) -> list[str]:
    text = [
        "Accuracy in %, final epoch, mean ± sample std over seeds. Params (M) + avg head adds the task-averaged "
        "classification head (the papers' convention); published baseline params use mixed conventions."
    ]
    if len(layout.groups) > 1:
        text.append(
            f"{layout.summaries['mean']} is the mean over all tasks (the RLRR/HTA papers' 'Mean'); "
            f"{layout.summaries['mean_groups']} is the mean of the group means (VPT/Adapter+ convention); "
            "for [paper] rows it is derived here, the papers print only the former."
        )
    return text


def _why_not_counted(run: Run) -> str:
    reason = f"status {run.status}" + (", no reported value" if run.value is None else "")
    return reason + (f" ({run.error})" if run.error else "")


def issues_markdown(issues: Issues) -> str:
    """What was not counted and why."""
    sections = [
        ("Tasks with no complete run", issues.missing),
        ("Failed runs (not counted)", [f"{r.describe()}: {r.error or 'no error message'}" for r in issues.failed]),
        (
            "Running or incomplete runs (not counted)",
            [f"{r.describe()}: {_why_not_counted(r)}" for r in issues.incomplete],
        ),
        ("Unreadable results files", issues.unreadable),
        ("Warnings", issues.warnings),
    ]
    lines = ["## What is missing"]
    for title, items in sections:
        if items:
            lines += ["", f"**{title}**", *(f"- {item}" for item in items)]
    if len(lines) == 1:
        lines.append("\nNothing: every run is complete and every task has a result.")
    return "\n".join(lines)


def write_csv(table: Table, path: Path) -> Path:
    """One line per row: identification, then value and std of every column, params with and without head."""
    columns = [key for key, _ in _columns(table.layout)]
    header = ["row", "kind", "method", "backbone", "timm_name", "split", "seeds", "source"]
    header += [f"{c}{suffix}" for c in columns for suffix in ("", "_std")] + [PARAMS_HEAD, PARAMS_NO_HEAD]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table.rows:
            meta = [row.meta.get(k, "") for k in ("method", "backbone", "timm_name", "split")]
            values = []
            for column in columns:
                stat = row.cells.get(column)
                values += [_round(stat.value if stat else None), _round(stat.std if stat else None)]
            params = [_round(row.params.get(PARAMS_HEAD), 6), _round(row.params.get(PARAMS_NO_HEAD), 6)]
            writer.writerow([row.label, row.kind, *meta, row.seeds, row.source, *values, *params])
    return path


def _round(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


_TEX_SYMBOLS = {"Δ": "$\\Delta$", "·": "$\\cdot$", "≤": "$\\leq$", "†": "$\\dagger$", "–": "--", "±": "$\\pm$"}


def _tex(text: str) -> str:
    text = "".join("\\" + c if c in "_&%#$" else c for c in text)
    for symbol, command in _TEX_SYMBOLS.items():
        text = text.replace(symbol, command)
    return text


def write_latex(table: Table, path: Path) -> Path:
    """A booktabs tabular with group headers; needs ``\\usepackage{booktabs,graphicx}``."""
    layout, columns = table.layout, _columns(table.layout)
    spans = [f"\\multicolumn{{{len(t)}}}{{c}}{{{g.capitalize()}}}" for g, t in layout.groups.items()]
    span_row = " & ".join(["", *spans, *[""] * (len(columns) - len(layout.tasks) + 2)]) + " \\\\"
    head = ["Row", *(f"\\rotatebox{{90}}{{{_tex(name)}}}" for _, name in columns), "Params (M)", "no head"]
    lines = [
        "% generated by python -m peftlab.report; needs \\usepackage{booktabs,graphicx}",
        f"\\begin{{tabular}}{{l{'c' * (len(columns) + 2)}}}",
        "\\toprule",
        *([span_row] if len(layout.groups) > 1 else []),
        " & ".join(head) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = [_cell(row, k, pm="{\\scriptsize$\\pm$") + ("}" if _has_std(row, k) else "") for k, _ in columns]
        cells += [_params(row, PARAMS_HEAD), _params(row, PARAMS_NO_HEAD)]
        lines.append(" & ".join([_tex(row.label), *(c.replace("–", "--") for c in cells)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    path.write_text("\n".join(lines))
    return path


def _has_std(row: Row, key: str) -> bool:
    return key in row.cells and row.cells[key].std is not None


def write_runs_csv(runs: Sequence[Run], path: Path) -> Path:
    """Every results file found, counted or not: the audit trail behind the tables."""
    fields = ["path", "status", "method", "backbone", "dataset", "task", "split", "seed", "value", "error"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        for run in runs:
            writer.writerow([getattr(run, f) if f != "value" else _round(run.value) for f in fields])
    return path


def save_plots(table: Table, out: Path) -> list[Path]:
    """One grouped bar chart per task group (tasks plus the group mean) and one of the summary columns."""
    from peftlab.plots import bar_chart

    rows = [r for r in table.rows if r.kind != "delta"]
    layout, written = table.layout, []
    charts = {g: [*tasks, g if len(layout.groups) > 1 else "mean"] for g, tasks in layout.groups.items()}
    if len(layout.groups) > 1:
        charts["means"] = list(layout.summaries)
    names = dict(_columns(layout))
    for name, keys in charts.items():
        series = {r.label: [r.cells[k].value if k in r.cells else None for k in keys] for r in rows}
        errors = {r.label: [r.cells[k].std if k in r.cells else None for k in keys] for r in rows}
        stem = layout.dataset if name == layout.dataset else f"{layout.dataset}_{name}"
        title = f"{layout.title}: {name}" if name != layout.dataset else layout.title
        written.append(
            bar_chart(
                [names[k] for k in keys],
                series,
                out / f"{stem}.png",
                title=title,
                ylabel="top-1 accuracy (%)",
                errors=errors,
                ylim=(0.0, 100.0),
            )  # fmt: skip
        )
    return written


def wandb_payload(tables: Sequence[Table]) -> dict:
    """``{"<dataset>/table": wandb.Table, "<dataset>/<summary column>": bar plot}`` for every table."""
    import wandb

    payload = {}
    for table in tables:
        columns = _columns(table.layout)
        header = ["row", "kind", "seeds", *(n for _, n in columns), PARAMS_HEAD, PARAMS_NO_HEAD]
        data = [
            [r.label, r.kind, r.seeds, *(r.cells[k].value if k in r.cells else None for k, _ in columns),
             r.params.get(PARAMS_HEAD), r.params.get(PARAMS_NO_HEAD)]
            for r in table.rows
        ]  # fmt: skip
        payload[f"{table.layout.dataset}/table"] = wandb.Table(columns=header, data=data)
        for key, title in table.layout.summaries.items():
            points = [[r.label, r.cells[key].value] for r in table.rows if r.kind != "delta" and key in r.cells]
            bars = wandb.Table(columns=["row", "accuracy"], data=points)
            payload[f"{table.layout.dataset}/{key}"] = wandb.plot.bar(
                bars, "row", "accuracy", title=f"{table.layout.title}: {title}"
            )
    return payload


def log_wandb(tables: Sequence[Table], project: str, name: str | None = None) -> None:
    """Log the tables and bar plots in one step of a ``job_type="report"`` run; ``WANDB_MODE`` is honoured."""
    import wandb

    run = wandb.init(project=project, name=name, job_type="report")
    try:
        run.log(wandb_payload(tables))
    finally:
        run.finish()


# ------------------------------------------------------------------------------------------------------- CLI


def load_runs(paths: Sequence[str | Path]) -> tuple[list[Run], list[str], list[str]]:
    """Runs from every results file under ``paths``, the files that could not be read, and absent paths."""
    files, absent = find_results(paths)
    runs, unreadable = [], []
    for path in files:
        try:
            runs.append(load_run(path))
        except ValueError as error:
            unreadable.append(f"{path}: {error}")
    return runs, unreadable, absent


def report(paths: Sequence[str | Path], mode: str = "same") -> tuple[str, list[Table], Issues, list[Run]]:
    """Markdown report, tables, issues and runs for the results under ``paths``.

    Raises:
        FileNotFoundError: No ``results.json`` was found under any of the paths.
    """
    runs, unreadable, absent = load_runs(paths)
    if not runs and not unreadable:
        where = ", ".join(map(str, paths)) + (f" (do not exist: {', '.join(absent)})" if absent else "")
        raise FileNotFoundError(f"no results.json found under {where}")
    tables, issues = aggregate(runs, mode)
    issues.unreadable = unreadable
    issues.warnings += [f"path does not exist: {path}" for path in absent]
    parts = ["# peftlab results", *(to_markdown(t) for t in tables), issues_markdown(issues)]
    if not tables:
        parts.insert(1, "No complete run: no table.")
    return "\n\n".join(parts) + "\n", tables, issues, runs


def write_outputs(markdown: str, tables: Sequence[Table], runs: Sequence[Run], out: Path, formats: set[str],
                  plots: bool = True) -> list[Path]:  # fmt: skip
    """Write the requested formats (md, csv, tex) and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "md" in formats:
        (out / "report.md").write_text(markdown)
        written.append(out / "report.md")
    if "csv" in formats:
        written.append(write_runs_csv(runs, out / "runs.csv"))
    for table in tables:
        if "csv" in formats:
            written.append(write_csv(table, out / f"{table.layout.dataset}.csv"))
        if "tex" in formats:
            written.append(write_latex(table, out / f"{table.layout.dataset}.tex"))
        if plots:
            written += save_plots(table, out)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.report", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", help="results.json files or folders searched recursively")
    parser.add_argument("--out", type=Path, help="folder for report.md, <dataset>.csv/.tex, runs.csv and PNG plots")
    parser.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    parser.add_argument("--published", choices=("same", "all", "none"), default="same",
                        help="published rows: of the methods run (default), all main rows, or none")  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG bar plots")
    parser.add_argument("--wandb", action="store_true", help="also log tables and bar plots to W&B")
    parser.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "peftlab"))
    args = parser.parse_args(argv)
    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if formats - {"md", "csv", "tex"}:
        parser.error(f"unknown format(s) {sorted(formats - {'md', 'csv', 'tex'})}; choose from md,csv,tex")
    try:
        markdown, tables, issues, runs = report(args.paths, args.published)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(markdown)
    for warning in issues.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.out:
        for path in write_outputs(markdown, tables, runs, args.out, formats, not args.no_plots):
            print(f"wrote {path}", file=sys.stderr)
    if args.wandb and tables:
        log_wandb(tables, args.wandb_project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
