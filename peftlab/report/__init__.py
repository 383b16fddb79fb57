"""Aggregate ``results.json`` files into the papers' VTAB-1k and FGVC tables (Markdown, CSV, LaTeX, PNG, W&B).

CLI::

    python -m peftlab.report outputs/ multirun/ [--out reports/] [--format md,csv,tex] [--published same|all|none]
                             [--group-by KEYS] [--select-on-val] [--no-plots] [--wandb] [--wandb-project NAME]

A row is one configuration: the run identity (``peftlab/identity.py``) without the task, the values chosen per task
and the seed. Per task a row shows the mean ± sample std (ddof=1) over seeds of ``reported.value`` (final-epoch
accuracy); runs that differ in any semantic key (lr, weight decay, pretrained, method options ...) are separate rows
and the keys that differ are shown as columns. Only the same identity with the same seed is a duplicate (the newest
``finished_at`` is kept). VTAB-1k rows show the three group means, the 19-task mean (the RLRR/HTA papers' "Mean")
and the mean of the group means (VPT/Adapter+'s convention), each named; stds propagate as sqrt(Σσ²)/n, as in
Adapter+. A mean over tasks is only given when every one of its tasks has a complete run. Params are
``params.trainable_without_head`` and that plus the benchmark's average head (768·C + C averaged over the tasks:
38,045 on VTAB-1k, 180,407 on FGVC), the papers' convention. Only runs counted by ``RunRecord.counted`` enter a
table; failed, running, interrupted, partial and incomplete runs are listed, never counted.

Modules: ``load`` (results -> runs, layouts from the catalog), ``aggregate`` (rows), ``render`` (md/csv/tex/png),
``wandb``, ``cli``.
"""

from peftlab.report.aggregate import (
    PARAMS_HEAD,
    PARAMS_NO_HEAD,
    Issues,
    Row,
    Stat,
    Table,
    aggregate,
    summarize,
)
from peftlab.report.cli import main, report, write_outputs
from peftlab.report.load import Layout, Run, layout_for, load_run, load_runs
from peftlab.report.render import fmt, to_markdown

__all__ = [
    "PARAMS_HEAD", "PARAMS_NO_HEAD", "Issues", "Layout", "Row", "Run", "Stat", "Table", "aggregate", "fmt",
    "layout_for", "load_run", "load_runs", "main", "report", "summarize", "to_markdown", "write_outputs",
]  # fmt: skip
