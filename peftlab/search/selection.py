"""Reading a search's results and selecting per task: every run must be a search-split run; per task the
configuration (run identity without seed) with the best mean final-epoch validation accuracy wins, ties to the smaller
learning rate (VPT), then to the smaller other values."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.identity import TASK_KEYS
from peftlab.protocol import SEARCH, SEARCH_METRIC
from peftlab.results import RESULTS_FILE, RunRecord, find_results

#: identity keys never handed over: the task's own facts, the split and seed of the final runs, and derived labels
NOT_HANDED_OVER = TASK_KEYS | {"seed", "data.split", "method.name", "backbone.weights", "method_data.name"}
#: precision used to call two mean accuracies equal (ties go to the smaller learning rate)
TIE_DIGITS = 9


class SearchError(ValueError):
    """The search cannot be used for selection; the message says why and what to do."""


@dataclass(frozen=True)
class Trial:
    """One complete search-split run: its task, configuration, the values of the compared keys, seed and accuracy."""

    path: Path
    task: str
    config: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, Any], ...]
    seed: int
    accuracy: float
    record: RunRecord


@dataclass(frozen=True)
class Choice:
    """The selected configuration of one task, with the evidence it was selected on."""

    task: str
    values: tuple[tuple[str, Any], ...]
    val_acc: float
    seeds: int
    candidates: int
    record: RunRecord

    @property
    def handed_over(self) -> dict[str, Any]:
        """Every semantic key of the chosen run the final runs must reproduce (dotted keys)."""
        config = self.record.identity.config
        return {k: v for k, v in config.items() if k not in NOT_HANDED_OVER and not k.endswith("._target_")}


# ------------------------------------------------------------------------------------------------------ reading


def load_records(root: Path) -> list[tuple[Path, RunRecord]]:
    """Every record under ``root``; refuses results that are not search-split runs or have no identity."""
    paths, _ = find_results([root])
    if not paths:
        raise SearchError(
            f"no {RESULTS_FILE} under {root}: give the dir of a sweep or study run with data.split=search"
        )
    loaded = []
    for path in paths:
        try:
            record = RunRecord.load(path)
        except ValueError as error:
            raise SearchError(f"{path}: {error}") from error
        check_search_split(record, path)
        loaded.append((path, record))
    check_one_experiment(loaded)
    return loaded


def check_search_split(record: RunRecord, path: Path) -> None:
    split, metric = record.experiment.split, record.reported.metric
    if split != SEARCH or metric != SEARCH_METRIC:
        raise SearchError(
            f"refusing {path}: it is a split={split} run reporting {metric}. Test accuracy never selects "
            f"hyperparameters: run the grid with data.split=search (final-epoch {SEARCH_METRIC} on the validation "
            "split) and select on that; the split=final runs then use the selection."
        )
    if not record.identity.config:
        raise SearchError(f"{path} has no run identity (written by an older peftlab): re-run it to select from it")


def check_one_experiment(loaded: list[tuple[Path, RunRecord]]) -> None:
    """All runs must share method, backbone and benchmark: a selection across them would mix experiments."""
    identities = {(r.experiment.method, r.experiment.backbone, r.experiment.dataset) for _, r in loaded}
    if len(identities) > 1:
        listed = "; ".join(sorted(", ".join(identity) for identity in identities))
        raise SearchError(f"the results mix experiments ({listed}): select one experiment's sweep dir at a time")


def configuration(record: RunRecord) -> dict[str, Any]:
    return {k: v for k, v in record.identity.config.items() if k not in TASK_KEYS and k != "seed"}


def varied_keys(loaded: list[tuple[Path, RunRecord]]) -> list[str]:
    """The configuration keys whose value differs between runs (seeds and tasks excluded)."""
    seen: dict[str, set[str]] = defaultdict(set)
    configs = [configuration(record) for _, record in loaded]
    for key in set().union(*configs):
        for config in configs:
            seen[key].add(json.dumps(config.get(key, "<unset>"), sort_keys=True, default=str))
    keys = sorted(key for key, values in seen.items() if len(values) > 1)
    if not keys:
        raise SearchError("no hyperparameter varies between the runs: nothing to select (pass --keys to force)")
    return keys


def config_value(record: RunRecord, key: str, path: Path) -> Any:
    """The value ``key`` (dotted) had in the run's semantic config."""
    config = record.identity.config
    if key not in config:
        nested = sorted(k for k in config if k.startswith(key + "."))
        if nested:
            raise SearchError(
                f"{key!r} is a config group, not a value: a per-task config can only set values; "
                "sweep group choices (method=..., backbone=...) as separate experiments"
            )
        raise SearchError(f"{path}: the run's config has no {key!r}")
    return config[key]


def to_trials(
    loaded: list[tuple[Path, RunRecord]], keys: Sequence[str], include_partial: bool = False
) -> tuple[list[Trial], list[Path]]:
    """Complete runs as trials, and the paths of the runs that are not counted (failed, running, partial...)."""
    trials, unfinished = [], []
    for path, record in loaded:
        if not record.counted(include_partial):
            unfinished.append(path)
            continue
        values = tuple((key, config_value(record, key, path)) for key in keys)
        config = tuple(sorted((k, json.dumps(v, default=str)) for k, v in configuration(record).items()))
        exp = record.experiment
        trials.append(Trial(path, exp.task, config, values, exp.seed, float(record.reported.value), record))
    return trials, unfinished


# ------------------------------------------------------------------------------------------------------ selecting


def select(trials: Iterable[Trial]) -> dict[str, Choice]:
    """Per task, the configuration with the best mean final-epoch val accuracy over seeds (ties: smaller lr)."""
    by_task: dict[str, dict[tuple, list[Trial]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        by_task[trial.task][trial.config].append(trial)
    choices = {}
    for task, candidates in sorted(by_task.items()):
        ranked = sorted(candidates.values(), key=ranking_key)
        best = ranked[0]
        accuracy = statistics.fmean(t.accuracy for t in best)
        choices[task] = Choice(task, best[0].values, accuracy, len(best), len(candidates), best[0].record)
    return choices


def ranking_key(trials: list[Trial]) -> tuple:
    """Sort key: best mean accuracy first; among equal means the smaller learning rate, then smaller other values."""
    values = trials[0].values
    lr_first = sorted(values, key=lambda kv: kv[0].rsplit(".", 1)[-1] != "lr")
    mean = statistics.fmean(t.accuracy for t in trials)
    return (-round(mean, TIE_DIGITS), *(sortable(value) for _, value in lr_first), trials[0].config)


def sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def uneven_seeds(trials: Iterable[Trial]) -> list[str]:
    """Configurations with fewer seeds than the most-seeded one of their task (their mean is noisier)."""
    counts: dict[str, dict[tuple, list[Trial]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        counts[trial.task][trial.config].append(trial)
    lines = []
    for task, per_config in sorted(counts.items()):
        most = max(map(len, per_config.values()))
        lines += [f"{task}: {format_values(group[0].values)} has {len(group)} of {most} seeds"
                  for group in per_config.values() if len(group) < most]  # fmt: skip
    return lines


def format_values(values: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values)


def select_from_sweep(
    sweep_dir: Path, keys: Sequence[str] | None = None, include_partial: bool = False
) -> tuple[dict[str, Choice], list[str]]:
    """Read, check and select; returns the choices and the warnings (unfinished runs, uneven seeds)."""
    loaded = load_records(sweep_dir)
    trials, unfinished = to_trials(loaded, list(keys) if keys else varied_keys(loaded), include_partial)
    if not trials:
        raise SearchError(f"no complete run under {sweep_dir}: finish (re-run) the sweep first")
    warnings = [f"not complete, ignored: {path}" for path in unfinished] + uneven_seeds(trials)
    return select(trials), warnings
