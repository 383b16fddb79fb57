"""From runs to table rows. A row is one configuration (the run identity without task, task-chosen values and
seed): seeds are averaged only within it, and runs that differ in any semantic key are separate rows whose
differing keys the table shows as columns. Only the same identity with the same seed is a duplicate."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peftlab import published
from peftlab.protocol import FINAL, SEARCH
from peftlab.report.load import PER_TASK, Layout, Run, layout_for

PARAMS_HEAD, PARAMS_NO_HEAD = "params_m", "params_m_no_head"
#: keys a row label already says (method · backbone [split]); never repeated as config columns
LABEL_KEYS = frozenset({"method.name", "method._target_", "backbone.name", "data.dataset", "data.split"})


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
    """One table row: a configuration's runs, a published row, or the difference between the two."""

    label: str
    kind: str  # run | published | delta | selected
    cells: dict[str, Stat]
    params: dict[str, float] = field(default_factory=dict)
    seeds: str = ""
    source: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)


@dataclass
class Table:
    layout: Layout
    rows: list[Row]
    config_keys: list[str] = field(default_factory=list)  # the keys that differ between run rows, shown as columns


@dataclass
class Issues:
    """Everything the report could not count, to be printed next to the tables."""

    missing: list[str] = field(default_factory=list)
    failed: list[Run] = field(default_factory=list)
    incomplete: list[Run] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------- grouping


def row_key(run: Run, group_by: Sequence[str] | None = None) -> tuple:
    """(dataset, split, configuration): the runs of one row. ``group_by`` keeps only those configuration keys."""
    config = run.configuration
    if group_by:
        config = {k: v for k, v in config.items() if k in group_by or k in ("method.name", "backbone.name")}
    frozen = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in config.items()))
    return run.dataset, run.split, frozen


def deduplicate(runs: list[Run], issues: Issues) -> list[Run]:
    """Keep one counted run per identity, task and seed (the newest ``finished_at``); warn about the others."""
    by_seed: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_seed[(row_key(run), run.task, run.seed)].append(run)
    kept = []
    for same in by_seed.values():
        same.sort(key=lambda r: (r.finished_at, str(r.path)))
        kept.append(same[-1])
        for dropped in same[:-1]:
            issues.warnings.append(
                f"duplicate seed {dropped.seed} (same configuration) for {dropped.method}/{dropped.backbone}/"
                f"{dropped.dataset}/{dropped.task}: kept {same[-1].path} (finished {same[-1].finished_at or '?'}), "
                f"ignored {dropped.path} (finished {dropped.finished_at or '?'})"
            )
    return kept


def differing_keys(rows: Sequence[Row]) -> list[str]:
    """Config keys whose value differs between run rows of the same method (other methods' options are not
    compared with each other), plus non-method keys that differ anywhere; label keys excluded."""
    keys = set()
    candidates = {k for row in rows for k in row.config} - LABEL_KEYS
    for key in candidates:
        if key.startswith("method."):
            by_method: dict[Any, set[str]] = defaultdict(set)
            for row in rows:
                by_method[row.meta.get("method")].add(json.dumps(row.config.get(key), default=str))
            if any(len(values) > 1 for values in by_method.values()):
                keys.add(key)
        elif len({json.dumps(row.config.get(key), default=str) for row in rows}) > 1:
            keys.add(key)
    return sorted(keys)


# ------------------------------------------------------------------------------------------------- rows


def _seed_range(counts: Iterable[int]) -> str:
    counts = sorted(set(counts))
    return "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def average_head(layout: Layout, runs: Sequence[Run]) -> float | None:
    """The benchmark's task-averaged head, (D + 1)·C averaged over its tasks, with D read off a run's head size."""
    heads = [(r.record.params.get("head"), r.task) for r in runs]
    dims = [h / layout.num_classes[t] - 1 for h, t in heads if h and t in layout.num_classes]
    if dims:
        dim = round(statistics.fmean(dims))
        return statistics.fmean((dim + 1) * layout.num_classes[t] for t in layout.tasks)
    sizes = [h for h, _ in heads if h]
    return statistics.fmean(sizes) if sizes and not layout.fixed else None


def run_row(runs: list[Run], layout: Layout) -> Row:
    """Aggregate the kept complete runs of one configuration into a row."""
    per_task: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        per_task[run.task].append(run.value)
    cells = {t: seed_stat(v) for t, v in per_task.items()}
    cells.update(summarize(cells, layout))
    params = {}
    counts = [r.record.params.get("trainable_without_head") for r in runs]
    counts = [c for c in counts if c is not None]
    head = average_head(layout, runs)
    if counts:
        params[PARAMS_NO_HEAD] = statistics.fmean(counts) / 1e6
        if head is not None:
            params[PARAMS_HEAD] = (statistics.fmean(counts) + head) / 1e6
    first = runs[0]
    label = f"{first.method} · {first.backbone}" + ("" if first.split == FINAL else f" [{first.split}]")
    meta = {"method": first.method, "backbone": first.backbone, "timm_name": first.timm_name, "split": first.split}
    seeds = _seed_range(map(len, per_task.values()))
    return Row(label, "run", cells, params, seeds, "peftlab runs", meta, shown_config(runs), list(runs))


def shown_config(runs: Sequence[Run]) -> dict[str, Any]:
    """The row's configuration with a per-task value shown as the value itself where all its runs share it."""
    config = dict(runs[0].configuration)
    for key, value in config.items():
        if value == PER_TASK:
            values = {
                json.dumps(run.settings.get(key), sort_keys=True, default=str): run.settings.get(key) for run in runs
            }
            config[key] = next(iter(values.values())) if len(values) == 1 else PER_TASK
    return config


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


def selected_on_val(rows: Sequence[Row], layout: Layout) -> list[Row]:
    """Per method and backbone, per task: the final-split row whose configuration had the best search-split (val)
    accuracy on that task. Test accuracy selects nothing; configurations without a search run are not candidates."""
    search = {_without_split(r.config): r for r in rows if r.meta.get("split") == SEARCH}
    finals: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if row.meta.get("split") == FINAL and _without_split(row.config) in search:
            finals[(row.meta["method"], row.meta["backbone"])].append(row)
    selected = []
    for (method, backbone), candidates in sorted(finals.items()):
        cells, chosen = {}, {}
        for task in layout.tasks:
            scored = [(search[_without_split(r.config)].cells[task].value, r) for r in candidates
                      if task in r.cells and task in search[_without_split(r.config)].cells]  # fmt: skip
            if scored:
                best = max(scored, key=lambda item: item[0])[1]
                cells[task], chosen[task] = best.cells[task], best
        cells.update(summarize(cells, layout))
        choice = "; ".join(f"{t}: {_config_text(r.config, candidates)}" for t, r in chosen.items())
        meta = {"method": method, "backbone": backbone, "split": FINAL}
        selected.append(Row(f"{method} · {backbone} [selected on val]", "selected", cells, {}, "", choice, meta))
    return selected


def _without_split(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "data.split"}, sort_keys=True, default=str)


def _config_text(config: dict[str, Any], among: Sequence[Row]) -> str:
    keys = differing_keys(among) or sorted(config)
    return ", ".join(f"{k}={config.get(k)}" for k in keys)


# ------------------------------------------------------------------------------------------------- tables


def build_table(layout: Layout, groups: dict[tuple, list[Run]], mode: str, select_on_val: bool = False) -> Table:
    """Rows: each configuration, its method's published rows and the delta to the reference row; then, with
    ``mode == "all"``, every other published main row of the benchmark; with ``select_on_val`` the per-task
    selections."""
    ours = sorted((run_row(runs, layout) for runs in groups.values()), key=_row_order)
    rows, shown = [], set()
    for row in ours:
        rows.append(row)
        if mode == "none":
            continue
        method, timm_name = row.meta["method"], row.meta["timm_name"]
        reference = published.reference_row(layout.dataset, method, timm_name)
        reference = reference if row.meta["split"] == FINAL else None  # val accuracies are not comparable to test
        for paper in published.rows_for(layout.dataset, method):
            if timm_name and not published.same_architecture(paper.timm_name, timm_name):
                continue  # e.g. a ViT-L run next to ViT-B numbers
            if paper.key not in shown:  # a method run in several configurations shows its paper rows once
                rows.append(published_row(paper, layout))
                shown.add(paper.key)
        if reference is not None:
            rows.append(delta_row(row, published_row(reference, layout)))
    if select_on_val:
        rows.extend(selected_on_val(ours, layout))
    if mode == "all":
        rows.extend(published_row(p, layout) for p in published.rows_for(layout.dataset) if p.key not in shown)
    return Table(layout, rows, differing_keys(ours))


def _row_order(row: Row) -> tuple:
    config = json.dumps(row.config, sort_keys=True, default=str)
    return row.meta["method"], row.meta["backbone"], row.meta["split"] != FINAL, config


def aggregate(
    runs: list[Run], mode: str = "same", group_by: Sequence[str] | None = None, select_on_val: bool = False
) -> tuple[list[Table], Issues]:
    """Tables per dataset plus everything that was not counted."""
    issues = Issues()
    issues.failed = [r for r in runs if r.failed]
    issues.incomplete = [r for r in runs if not r.failed and not r.counted]
    observed: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        observed[run.dataset].add(run.task)
    layouts = {d: layout_for(d, tasks) for d, tasks in sorted(observed.items())}
    for run in runs:
        if layouts[run.dataset].fixed and run.task not in layouts[run.dataset].tasks:
            issues.warnings.append(f"unknown {run.dataset} task {run.task!r}, not counted: {run.path}")
    counted = [r for r in runs if r.counted and r.task in layouts[r.dataset].tasks]
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in deduplicate(counted, issues):
        groups[row_key(run, group_by)].append(run)
    issues.missing = missing_tasks(runs, groups, layouts, group_by)
    tables = []
    for dataset, layout in layouts.items():
        mine = {k: v for k, v in groups.items() if k[0] == dataset}
        if mine:
            tables.append(build_table(layout, mine, mode, select_on_val))
    return tables, issues


def missing_tasks(
    runs: Sequence[Run], groups: dict[tuple, list[Run]], layouts: dict[str, Layout], group_by: Sequence[str] | None
) -> list[str]:
    """One line per configuration (including those with no complete run at all) lacking a complete run for some
    task."""
    names: dict[tuple, Run] = {}
    for run in runs:
        names.setdefault(row_key(run, group_by), run)
    lines = []
    for key, run in sorted(names.items(), key=lambda item: _name(item[1])):
        done = {r.task for r in groups.get(key, [])}
        tasks = layouts[run.dataset].tasks
        lacking = [t for t in tasks if t not in done]
        if lacking:
            lines.append(f"{_name(run)}: {len(tasks) - len(lacking)}/{len(tasks)} tasks complete; "
                         f"no complete run for {', '.join(lacking)}")  # fmt: skip
    return lines


def _name(run: Run) -> str:
    return f"{run.method}/{run.backbone}/{run.dataset}/{run.split}"
