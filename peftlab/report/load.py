"""Reading results for the report: every ``results.json`` as a ``Run`` (its record plus the report's view of it),
and the table layout of each benchmark, taken from the task catalog."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS, TaskSpec, find_spec
from peftlab.identity import TASK_KEYS
from peftlab.results import FAILED, RunRecord, find_results

PER_TASK = "(per task)"
#: benchmarks with a fixed table layout: title and task catalog (tasks in the papers' order, grouped by spec.group)
BENCHMARKS: dict[str, tuple[str, dict[str, TaskSpec]]] = {
    "vtab1k": ("VTAB-1k", VTAB_TASKS),
    "fgvc": ("FGVC", FGVC_TASKS),
}


@dataclass
class Run:
    """One results file as the report sees it (accuracy in percent)."""

    path: Path
    record: RunRecord
    task: str
    include_partial: bool = False  # count cut-short (``partial``) runs too, only when the user asks

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def method(self) -> str:
        return self.record.experiment.method

    @property
    def backbone(self) -> str:
        """The backbone as labelled in tables: the config group when known, else the timm model name."""
        return self.record.experiment.backbone_config or self.record.experiment.backbone

    @property
    def timm_name(self) -> str:
        return self.record.experiment.backbone

    @property
    def dataset(self) -> str:
        return self.record.experiment.dataset

    @property
    def split(self) -> str:
        return self.record.experiment.split

    @property
    def seed(self) -> int | None:
        return self.record.experiment.seed

    @property
    def value(self) -> float | None:
        value = self.record.reported.value
        return 100.0 * float(value) if isinstance(value, int | float) else None

    @property
    def finished_at(self) -> str:
        return self.record.finished_at

    @property
    def identity(self) -> str:
        """The run's identity hash (empty for records older than identities)."""
        return self.record.identity.hash

    @property
    def counted(self) -> bool:
        return self.record.counted(self.include_partial)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def settings(self) -> dict[str, Any]:
        """The run's semantic config without what a row spans: the task and the seed. Older records without an
        identity fall back to method, backbone, benchmark and split."""
        identity = self.record.identity
        if not identity.config:
            return {"method.name": self.method, "backbone.name": self.timm_name, "data.dataset": self.dataset,
                    "data.split": self.split}  # fmt: skip
        return {k: v for k, v in identity.config.items() if k not in TASK_KEYS and k != "seed"}

    @property
    def configuration(self) -> dict[str, Any]:
        """What makes a row: ``settings`` with the values a recipe chooses per task (``method_data``) marked as
        such, so one recipe is one row across its tasks."""
        per_task = set(self.record.identity.per_task)
        return {k: PER_TASK if k in per_task else v for k, v in self.settings.items()}

    def describe(self) -> str:
        return f"{self.method} / {self.backbone} / {self.dataset}/{self.task} / seed {self.seed} ({self.path})"


def load_run(path: Path, include_partial: bool = False) -> Run:
    """Parse one results file; raises ValueError with the reason when it is not a peftlab result."""
    record = RunRecord.load(path)
    return Run(path, record, canonical_task(record.experiment.dataset, record.experiment.task), include_partial)


def canonical_task(dataset: str, task: str) -> str:
    catalog = BENCHMARKS.get(dataset, (None, None))[1]
    spec = find_spec(task, catalog) if catalog else None
    return spec.name if spec else task


def load_runs(paths: Sequence[str | Path], include_partial: bool = False) -> tuple[list[Run], list[str], list[str]]:
    """Runs from every results file under ``paths``, the files that could not be read, and absent paths."""
    files, absent = find_results(paths)
    runs, unreadable = [], []
    for path in files:
        try:
            runs.append(load_run(path, include_partial))
        except ValueError as error:
            unreadable.append(f"{path}: {error}")
    return runs, unreadable, absent


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

    @property
    def fixed(self) -> bool:
        """Whether the tasks come from the catalog (a known benchmark) rather than from the runs found."""
        return bool(self.num_classes)


def layout_for(dataset: str, observed_tasks: Iterable[str] = ()) -> Layout:
    """A catalogued benchmark's layout (tasks grouped by their catalog group, in catalog order); any other dataset
    gets its observed tasks, sorted."""
    if dataset not in BENCHMARKS:
        return Layout(dataset, dataset, {dataset: tuple(sorted(set(observed_tasks)))}, {})
    title, catalog = BENCHMARKS[dataset]
    groups: dict[str, tuple[str, ...]] = {}
    for spec in catalog.values():
        groups[spec.group] = (*groups.get(spec.group, ()), spec.name)
    return Layout(dataset, title, groups, {t: s.num_classes for t, s in catalog.items()})
