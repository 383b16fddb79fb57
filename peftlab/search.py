"""Honest hyperparameter selection from a grid sweep on the search split.

CLI::

    python -m peftlab.search select <sweep dir> [--out conf/method_data/<name>.yaml] [--keys optim.lr,...] [--force]

Reads every ``results.json`` under the sweep dir. All of them must come from ``data.split=search`` runs (VTAB-1k
train800 -> val200, FGVC train -> val): a ``split=final`` result is refused, because test accuracy never selects
anything. Per task, the runs are grouped by the values of the swept keys (read from each job's
``.hydra/overrides.yaml``: the overrides that differ between jobs, seeds excluded, or given with ``--keys``); the group
with the best final-epoch validation accuracy (``reported.value``, mean over seeds) wins; ties go to the smaller
learning rate, as in VPT, then to the smaller other values. The choice is written as a ``method_data`` config
(the format of ``conf/method_data/*.yaml``) that the final runs select::

    python -m peftlab.train experiment=hta_vtab1k sweep=vtab1k_all method_data=<name>
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from peftlab.results import RESULTS_FILE, is_complete

#: the split and metric a selection may use; anything else is refused
SEARCH_SPLIT, SEARCH_METRIC = "search", "val/acc"
#: overrides that never count as hyperparameters: seeds are averaged, tasks are selected for separately, the rest
#: name the experiment, the sweep or the split
NOT_HYPERPARAMETERS = frozenset({"seed", "data", "data.split", "experiment", "sweep", "method_data"})
#: precision used to call two mean accuracies equal (ties go to the smaller learning rate)
TIE_DIGITS = 9


class SearchError(ValueError):
    """The sweep cannot be used for selection; the message says why and what to do."""


@dataclass(frozen=True)
class Trial:
    """One complete search-split run: its task, the values of the swept keys, its seed and final val accuracy."""

    path: Path
    task: str
    values: tuple[tuple[str, Any], ...]
    seed: int
    accuracy: float


@dataclass(frozen=True)
class Choice:
    """The selected configuration of one task, with the evidence it was selected on."""

    task: str
    values: tuple[tuple[str, Any], ...]
    val_acc: float
    seeds: int
    candidates: int


# ------------------------------------------------------------------------------------------------------ reading


def find_results(root: Path) -> list[Path]:
    """Every ``results.json`` under ``root`` (sorted, for reproducible warnings)."""
    paths = sorted(Path(root).rglob(RESULTS_FILE))
    if not paths:
        raise SearchError(f"no {RESULTS_FILE} under {root}: give the dir of a sweep run with data.split=search")
    return paths


def load_results(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Read results, refusing any that was not a search-split run (test accuracy never selects anything)."""
    loaded = []
    for path in paths:
        result = json.loads(path.read_text())
        check_search_split(result, path)
        loaded.append((path, result))
    check_one_experiment(loaded)
    return loaded


def check_search_split(result: dict[str, Any], path: Path) -> None:
    split = result.get("experiment", {}).get("split")
    metric = result.get("reported", {}).get("metric")
    if split != SEARCH_SPLIT or metric != SEARCH_METRIC:
        raise SearchError(
            f"refusing {path}: it is a split={split} run reporting {metric}. Test accuracy never selects "
            f"hyperparameters: run the grid with data.split=search (final-epoch {SEARCH_METRIC} on the validation "
            "split) and select on that; the split=final runs then use the selection."
        )


def check_one_experiment(loaded: list[tuple[Path, dict[str, Any]]]) -> None:
    """All runs must share method, backbone and benchmark: a selection across them would mix experiments."""
    identities = {run_identity(result) for _, result in loaded}
    if len(identities) > 1:
        listed = "; ".join(sorted(", ".join(identity) for identity in identities))
        raise SearchError(f"the results mix experiments ({listed}): select one experiment's sweep dir at a time")


def run_identity(result: dict[str, Any]) -> tuple[str, str, str]:
    experiment = result.get("experiment", {})
    return str(experiment.get("method")), str(experiment.get("backbone")), str(experiment.get("dataset"))


def read_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line and sweep overrides (``.hydra/overrides.yaml``) as ``{key: value}``."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise SearchError(f"{path} is missing: cannot tell which keys were swept; pass them with --keys")
    overrides = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def swept_keys(loaded: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The overrides whose value differs between jobs, minus seeds, tasks and the other non-hyperparameters."""
    all_overrides = [read_overrides(path.parent) for path, _ in loaded]
    seen: dict[str, set[str]] = defaultdict(set)
    for key in set().union(*all_overrides):
        for overrides in all_overrides:
            seen[key].add(overrides.get(key, "<unset>"))
    keys = sorted(key for key, values in seen.items() if len(values) > 1 and key not in NOT_HYPERPARAMETERS)
    if not keys:
        raise SearchError("no hyperparameter varies between the runs: nothing to select (pass --keys to force)")
    return keys


def config_value(config: dict[str, Any], key: str, path: Path) -> Any:
    """The value ``key`` (dotted) had in the run's resolved config."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SearchError(f"{path}: the run's config has no {key!r}")
        node = node[part]
    if isinstance(node, (dict, list)):
        raise SearchError(
            f"{key!r} is a config group or a list, not a value: a per-task config can only set values; "
            "sweep group choices (method=..., backbone=...) as separate experiments"
        )
    return node


def to_trials(loaded: list[tuple[Path, dict[str, Any]]], keys: Sequence[str]) -> tuple[list[Trial], list[Path]]:
    """Complete runs as trials, and the paths of the runs that are not complete (failed, running, incomplete)."""
    trials, unfinished = [], []
    for path, result in loaded:
        if not is_complete(path.parent):
            unfinished.append(path)
            continue
        config = result.get("run_info", {}).get("config", {})
        values = tuple((key, config_value(config, key, path)) for key in keys)
        experiment = result["experiment"]
        trials.append(Trial(path, experiment["task"], values, experiment["seed"], float(result["reported"]["value"])))
    return trials, unfinished


# ------------------------------------------------------------------------------------------------------ selecting


def select(trials: Iterable[Trial]) -> dict[str, Choice]:
    """Per task, the configuration with the best mean final-epoch val accuracy over seeds (ties: smaller lr)."""
    by_task: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        by_task[trial.task][trial.values].append(trial.accuracy)
    choices = {}
    for task, candidates in sorted(by_task.items()):
        ranked = sorted(candidates.items(), key=lambda item: ranking_key(item[0], item[1]))
        values, accuracies = ranked[0]
        choices[task] = Choice(task, values, statistics.fmean(accuracies), len(accuracies), len(candidates))
    return choices


def ranking_key(values: tuple[tuple[str, Any], ...], accuracies: list[float]) -> tuple:
    """Sort key: best mean accuracy first; among equal means the smaller learning rate, then smaller other values."""
    lr_first = sorted(values, key=lambda kv: kv[0].rsplit(".", 1)[-1] != "lr")
    return (-round(statistics.fmean(accuracies), TIE_DIGITS), *(sortable(value) for _, value in lr_first))


def sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, str(value))


def uneven_seeds(trials: Iterable[Trial]) -> list[str]:
    """Configurations with fewer seeds than the most-seeded one of their task (their mean is noisier)."""
    counts: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
    for trial in trials:
        counts[trial.task][trial.values] += 1
    return [
        f"{task}: {format_values(values)} has {n} of {max(per_config.values())} seeds"
        for task, per_config in sorted(counts.items())
        for values, n in per_config.items()
        if n < max(per_config.values())
    ]


# ------------------------------------------------------------------------------------------------------ writing


def row_names(keys: Sequence[str]) -> dict[str, str]:
    """Short row names for config keys: the last part (``optim.lr`` -> ``lr``) unless two keys share it."""
    last = {key: key.rsplit(".", 1)[-1] for key in keys}
    counts = list(last.values())
    return {key: name if counts.count(name) == 1 else key.replace(".", "_") for key, name in last.items()}


def wiring(keys: Sequence[str], names: dict[str, str]) -> dict[str, Any]:
    """``{optim: {lr: ${method_data.tasks.${data.task}.lr}}}``: each key reads its task's row."""
    nested: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = "${method_data.tasks.${data.task}." + names[key] + "}"
    return nested


def method_data_yaml(choices: dict[str, Choice], name: str, source: str) -> str:
    """The selection as a ``conf/method_data`` config (same layout as the hand-written tables)."""
    keys = [key for key, _ in next(iter(choices.values())).values]
    names = row_names(keys)
    rows = {task: {names[k]: v for k, v in choice.values} for task, choice in choices.items()}
    evidence = {
        task: {"val_acc": round(c.val_acc, 6), "seeds": c.seeds, "candidates": c.candidates}
        for task, c in choices.items()
    }
    lines = [
        "# @package _global_",
        f"# Written by `python -m peftlab.search select {source}`: per task, the configuration with the best",
        f"# final-epoch {SEARCH_METRIC} on the search split (mean over seeds; ties -> smaller lr). Test accuracy",
        f"# selected nothing. The split=final runs use it with method_data={name} (experiments/README.md).",
        "method_data:",
        f"  name: {name}",
        f"  source: {flow(source)}",
        f"  selected_by: final-epoch {SEARCH_METRIC} on the search split, mean over seeds; ties -> smaller lr",
        "  tasks:",
        *aligned_rows(rows, indent=4),
        "  evidence:",
        *aligned_rows(evidence, indent=4),
        "  selected: ${method_data.tasks.${data.task}}",
        "",
        OmegaConf.to_yaml(OmegaConf.create(wiring(keys, names))).rstrip(),
    ]
    return "\n".join(lines) + "\n"


def aligned_rows(rows: dict[str, dict[str, Any]], indent: int) -> list[str]:
    width = max(len(task) for task in rows) + 1
    return [f"{' ' * indent}{(task + ':').ljust(width)} {flow(row)}" for task, row in rows.items()]


def flow(value: Any) -> str:
    """One-line YAML for a scalar or a flat mapping."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def format_values(values: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values)


# ------------------------------------------------------------------------------------------------------ CLI


def select_from_sweep(sweep_dir: Path, keys: Sequence[str] | None = None) -> tuple[dict[str, Choice], list[str]]:
    """Read, check and select; returns the choices and the warnings (unfinished runs, uneven seeds)."""
    loaded = load_results(find_results(sweep_dir))
    trials, unfinished = to_trials(loaded, list(keys) if keys else swept_keys(loaded))
    if not trials:
        raise SearchError(f"no complete run under {sweep_dir}: finish (re-run) the sweep first")
    warnings = [f"not complete, ignored: {path}" for path in unfinished] + uneven_seeds(trials)
    return select(trials), warnings


def write_selection(text: str, out: Path | None, force: bool) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        raise SearchError(f"{out} exists: a selection is never overwritten silently (use --force)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def print_choices(choices: dict[str, Choice]) -> None:
    for task, choice in choices.items():
        print(
            f"{task}: {format_values(choice.values)}  val acc {100 * choice.val_acc:.2f}% "
            f"({choice.seeds} seed(s), best of {choice.candidates})",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.search", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("select", help="pick per-task hyperparameters from a search-split sweep")
    cmd.add_argument("sweep_dir", type=Path, help="the sweep's dir, e.g. logs/sweeps/hta_grid/hta_vtab1k")
    cmd.add_argument("--out", type=Path, help="write the config here (conf/method_data/<name>.yaml); else stdout")
    cmd.add_argument("--name", help="method_data name (default: the --out file name, else <dir>_searched)")
    cmd.add_argument("--keys", help="comma-separated config keys to select (default: the overrides that vary)")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)
    try:
        keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
        choices, warnings = select_from_sweep(args.sweep_dir, keys)
        name = args.name or (args.out.stem if args.out else f"{args.sweep_dir.resolve().name}_searched")
        write_selection(method_data_yaml(choices, name, str(args.sweep_dir)), args.out, args.force)
    except SearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print_choices(choices)
    if args.out:
        print(f"wrote {args.out}; final runs: method_data={name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
