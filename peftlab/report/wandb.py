"""The report on W&B: one ``job_type="report"`` run with a table per benchmark (each configuration row linking to
the W&B runs it aggregates) and bar plots of the summary columns. ``WANDB_MODE`` is honoured."""

from __future__ import annotations

from collections.abc import Sequence

from peftlab.report.aggregate import PARAMS_HEAD, PARAMS_NO_HEAD, Row, Table
from peftlab.report.render import series_name, table_columns


def run_links(row: Row) -> str:
    """The W&B runs behind a row (their URLs, or ``project/run id`` for offline runs not yet synced)."""
    links = []
    for run in row.runs:
        wandb_info = run.record.run_info.get("wandb") or {}
        link = wandb_info.get("url") or "/".join(str(wandb_info[k]) for k in ("project", "id") if wandb_info.get(k))
        if link:
            links.append(link)
    return " ".join(sorted(set(links)))


def wandb_payload(tables: Sequence[Table]) -> dict:
    """``{"<dataset>/table": wandb.Table, "<dataset>/<summary column>": bar plot}`` for every table."""
    import wandb

    payload = {}
    for table in tables:
        columns = table_columns(table.layout)
        header = ["row", "kind", "seeds", *(n for _, n in columns), PARAMS_HEAD, PARAMS_NO_HEAD, "wandb_runs"]
        data = [
            [series_name(r, table.config_keys), r.kind, r.seeds,
             *(r.cells[k].value if k in r.cells else None for k, _ in columns),
             r.params.get(PARAMS_HEAD), r.params.get(PARAMS_NO_HEAD), run_links(r)]
            for r in table.rows
        ]  # fmt: skip
        payload[f"{table.layout.dataset}/table"] = wandb.Table(columns=header, data=data)
        for key, title in table.layout.summaries.items():
            points = [
                [series_name(r, table.config_keys), r.cells[key].value]
                for r in table.rows
                if r.kind != "delta" and key in r.cells
            ]
            bars = wandb.Table(columns=["row", "accuracy"], data=points)
            payload[f"{table.layout.dataset}/{key}"] = wandb.plot.bar(
                bars, "row", "accuracy", title=f"{table.layout.title}: {title}"
            )
    return payload


def log_wandb(tables: Sequence[Table], project: str, name: str | None = None) -> None:
    """Log the tables and bar plots in one step of a ``job_type="report"`` run."""
    import wandb

    run = wandb.init(project=project, name=name, job_type="report")
    try:
        run.log(wandb_payload(tables))
    finally:
        run.finish()
