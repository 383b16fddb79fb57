"""``python -m peftlab.report``: find results, aggregate, print Markdown, write md/csv/tex/png, optionally log to
W&B."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from peftlab.report.aggregate import Issues, Table, aggregate
from peftlab.report.load import Run, load_runs
from peftlab.report.render import issues_markdown, save_plots, to_markdown, write_csv, write_latex, write_runs_csv

FORMATS = ("md", "csv", "tex")


def report(
    paths: Sequence[str | Path],
    mode: str = "same",
    group_by: Sequence[str] | None = None,
    select_on_val: bool = False,
    include_partial: bool = False,
) -> tuple[str, list[Table], Issues, list[Run]]:
    """Markdown report, tables, issues and runs for the results under ``paths``.

    Raises:
        FileNotFoundError: No ``results.json`` was found under any of the paths.
    """
    runs, unreadable, absent = load_runs(paths, include_partial)
    if not runs and not unreadable:
        where = ", ".join(map(str, paths)) + (f" (do not exist: {', '.join(absent)})" if absent else "")
        raise FileNotFoundError(f"no results.json found under {where}")
    tables, issues = aggregate(runs, mode, group_by, select_on_val)
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


def parser() -> argparse.ArgumentParser:
    cmd = argparse.ArgumentParser(
        prog="python -m peftlab.report",
        description="Aggregate results.json files into the papers' VTAB-1k and FGVC tables (one row per "
        "configuration: runs differing in any semantic key are separate rows).",
    )
    cmd.add_argument("paths", nargs="+", help="results.json files or folders searched recursively")
    cmd.add_argument("--out", type=Path, help="folder for report.md, <dataset>.csv/.tex, runs.csv and PNG plots")
    cmd.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    cmd.add_argument("--published", choices=("same", "all", "none"), default="same",
                     help="published rows: of the methods run (default), all main rows, or none")  # fmt: skip
    cmd.add_argument("--group-by", help="comma-separated identity keys that make a row (e.g. method.name,optim.lr); "
                     "default: every semantic key")  # fmt: skip
    cmd.add_argument("--select-on-val", action="store_true",
                     help="add per method a row taking per task the config best on the search split")  # fmt: skip
    cmd.add_argument("--no-plots", action="store_true", help="do not write PNG bar plots")
    cmd.add_argument(
        "--include-partial",
        action="store_true",
        help="also count cut-short runs (debug/limit/zero-epoch: status partial), never counted otherwise",
    )
    cmd.add_argument("--wandb", action="store_true", help="also log tables (linking the runs) and bar plots to W&B")
    cmd.add_argument("--wandb-project", default=os.environ.get("WANDB_PROJECT", "peftlab"))
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if formats - set(FORMATS):
        parser().error(f"--format: unknown {sorted(formats - set(FORMATS))}; choose from {','.join(FORMATS)}")
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
    try:
        markdown, tables, issues, runs = report(
            args.paths, args.published, group_by, args.select_on_val, args.include_partial
        )
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
        from peftlab.report.wandb import log_wandb

        log_wandb(tables, args.wandb_project)
    return 0
