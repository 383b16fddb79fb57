"""The hand-off of a selection: a ``method_data`` config holding per task the complete configuration of the chosen
run, written outside the package, and the command that runs the final (``split=final``) runs with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from peftlab.protocol import SEARCH_METRIC
from peftlab.search.selection import Choice, SearchError


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def wiring(keys: Iterable[str]) -> dict[str, Any]:
    """``{optim: {lr: ${method_data.tasks.${data.task}.optim.lr}}}``: each key reads its task's row."""
    return nested({key: "${method_data.tasks.${data.task}." + key + "}" for key in keys})


def method_data_yaml(choices: dict[str, Choice], name: str, source: str, varied: Sequence[str]) -> str:
    """The selection as a ``method_data`` config: per task the complete configuration of the chosen run."""
    rows = {task: nested(choice.handed_over) for task, choice in choices.items()}
    keys = sorted(set().union(*(choice.handed_over for choice in choices.values())))
    evidence = {
        task: {"val_acc": round(c.val_acc, 6), "seeds": c.seeds, "candidates": c.candidates,
               "identity": c.record.identity.hash, "run": c.record.run_info.get("output_dir")}
        for task, c in choices.items()
    }  # fmt: skip
    body = {
        "method_data": {
            "name": name,
            "source": source,
            "selected_by": f"final-epoch {SEARCH_METRIC} on the search split, mean over seeds; ties -> smaller lr",
            "varied": list(varied),
            "tasks": rows,
            "evidence": evidence,
            "selected": "${method_data.tasks.${data.task}}",
        },
        **wiring(keys),
    }
    header = [
        "# @package _global_",
        f"# Written by `python -m peftlab.search select {source}`: per task, the complete configuration of the run",
        f"# with the best final-epoch {SEARCH_METRIC} on the search split (mean over seeds; ties -> smaller lr).",
        "# Test accuracy selected nothing. Every semantic key is handed over, not only those that varied.",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False, width=120)


def final_command(choices: dict[str, Choice], config_dir: Path, name: str) -> str:
    """The command that runs the final (``split=final``) runs of the selection, one job per task."""
    record = next(iter(choices.values())).record
    choices_made = record.run_info.get("choices") or {}
    groups = ("experiment",) if choices_made.get("experiment") else ("method", "backbone", "optim", "trainer")
    args = [f"{group}={choices_made[group]}" for group in groups if choices_made.get(group)]
    data = [c.record.run_info.get("choices", {}).get("data") or c.task for c in choices.values()]
    recipe = "method_data" if "method_data" in choices_made else "+method_data"  # a slot exists: override it
    args += [f"{recipe}={name}", "data=" + ",".join(data), "data.split=final"]
    return " ".join(["python -m peftlab.train -m", f"--config-dir {config_dir.resolve()}", *args])


def check_outside_package(config_dir: Path) -> None:
    package = Path(__file__).resolve().parents[1]
    if config_dir.resolve().is_relative_to(package):
        raise SearchError(f"--out {config_dir} is inside the installed peftlab package: write selections beside your "
                          "search's outputs (the default) or in your own config dir")  # fmt: skip


def write_selection(text: str, path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SearchError(f"{path} exists: a selection is never overwritten silently (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
