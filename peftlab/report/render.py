"""Rendering tables: Markdown, CSV, LaTeX, the audit CSV of every run, and PNG bar charts. Run rows show the
configuration keys that differ between them as columns (``lr``, ``weight_decay``, ``weights`` ...)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from peftlab.report.aggregate import PARAMS_HEAD, PARAMS_NO_HEAD, Issues, Row, Table
from peftlab.report.load import Layout, Run

SHORT_NAMES = {
    "cifar100": "Cifar100", "caltech101": "Caltech101", "dtd": "DTD", "oxford_flowers102": "Flowers102",
    "oxford_iiit_pet": "Pets", "svhn": "SVHN", "sun397": "Sun397", "patch_camelyon": "Camelyon", "eurosat": "EuroSAT",
    "resisc45": "Resisc45", "diabetic_retinopathy": "Retinopathy", "clevr_count": "Clevr-Count",
    "clevr_dist": "Clevr-Dist", "dmlab": "DMLab", "kitti": "KITTI-Dist", "dsprites_loc": "dSpr-Loc",
    "dsprites_ori": "dSpr-Ori", "smallnorb_azi": "sNORB-Azim", "smallnorb_ele": "sNORB-Ele",
    "cub": "CUB", "nabirds": "NABirds", "flowers": "Flowers", "dogs": "Dogs", "cars": "Cars",
}  # fmt: skip


def config_names(keys: Sequence[str]) -> dict[str, str]:
    """Short column names for config keys: the last part (``optim.lr`` -> ``lr``) unless two keys share it."""
    last = {key: "recipe" if key == "method_data.name" else key.rsplit(".", 1)[-1] for key in keys}
    counts = list(last.values())
    return {key: name if counts.count(name) == 1 else key for key, name in last.items()}


def series_name(row: Row, keys: Sequence[str]) -> str:
    """A row's label plus its differing config values: unique names for plot legends and W&B tables."""
    settings = ", ".join(f"{name}={config_value(row, key)}" for key, name in config_names(keys).items())
    return f"{row.label} ({settings})" if settings and row.kind == "run" else row.label


def config_value(row: Row, key: str) -> str:
    if row.kind != "run" or key not in row.config:
        return ""
    value = row.config[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def fmt(value: float | None, digits: int = 1, signed: bool = False) -> str:
    """Round half up on the decimal value (so 74.65 → 74.7 whatever its binary representation)."""
    if value is None:
        return "–"
    rounded = Decimal(f"{value:.9f}").quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)
    return f"{rounded:+}" if signed else str(rounded)


def table_columns(layout: Layout) -> list[tuple[str, str]]:
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
    columns, names = table_columns(table.layout), config_names(table.config_keys)
    header = ["Row", *names.values(), "Seeds", *(name for _, name in columns)]
    header += ["Params (M) + avg head", "Params (M) no head"]
    lines = [f"### {table.layout.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        settings = [config_value(row, key) for key in names]
        cells = [row.label, *settings, row.seeds, *(_cell(row, k) for k, _ in columns)]
        cells += [_params(row, PARAMS_HEAD), _params(row, PARAMS_NO_HEAD)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r.label}: {r.source}" for r in table.rows if r.kind in ("published", "selected")]
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
    columns = [key for key, _ in table_columns(table.layout)]
    header = ["row", "kind", "method", "backbone", "timm_name", "split", *table.config_keys, "seeds", "source"]
    header += [f"{c}{suffix}" for c in columns for suffix in ("", "_std")] + [PARAMS_HEAD, PARAMS_NO_HEAD]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table.rows:
            meta = [row.meta.get(k, "") for k in ("method", "backbone", "timm_name", "split")]
            meta += [config_value(row, key) for key in table.config_keys]
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
    layout, columns, names = table.layout, table_columns(table.layout), config_names(table.config_keys)
    spans = [f"\\multicolumn{{{len(t)}}}{{c}}{{{g.capitalize()}}}" for g, t in layout.groups.items()]
    empty_before, empty_after = [""] * (1 + len(names)), [""] * (len(columns) - len(layout.tasks) + 2)
    span_row = " & ".join([*empty_before, *spans, *empty_after]) + " \\\\"
    head = ["Row", *map(_tex, names.values()), *(f"\\rotatebox{{90}}{{{_tex(name)}}}" for _, name in columns)]
    head += ["Params (M)", "no head"]
    lines = [
        "% generated by python -m peftlab.report; needs \\usepackage{booktabs,graphicx}",
        f"\\begin{{tabular}}{{{'l' * (1 + len(names))}{'c' * (len(columns) + 2)}}}",
        "\\toprule",
        *([span_row] if len(layout.groups) > 1 else []),
        " & ".join(head) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = [_cell(row, k, pm="{\\scriptsize$\\pm$") + ("}" if _has_std(row, k) else "") for k, _ in columns]
        cells += [_params(row, PARAMS_HEAD), _params(row, PARAMS_NO_HEAD)]
        settings = [_tex(config_value(row, key)) for key in names]
        lines.append(" & ".join([_tex(row.label), *settings, *(c.replace("–", "--") for c in cells)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    path.write_text("\n".join(lines))
    return path


def _has_std(row: Row, key: str) -> bool:
    return key in row.cells and row.cells[key].std is not None


def write_runs_csv(runs: Sequence[Run], path: Path) -> Path:
    """Every results file found, counted or not: the audit trail behind the tables."""
    fields = ["path", "status", "method", "backbone", "dataset", "task", "split", "seed", "value", "identity", "error"]
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
    names = dict(table_columns(layout))
    for name, keys in charts.items():
        labels = {id(r): series_name(r, table.config_keys) for r in rows}
        series = {labels[id(r)]: [r.cells[k].value if k in r.cells else None for k in keys] for r in rows}
        errors = {labels[id(r)]: [r.cells[k].std if k in r.cells else None for k in keys] for r in rows}
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
