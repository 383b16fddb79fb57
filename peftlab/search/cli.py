"""``python -m peftlab.search select|optuna`` (``peftlab-search``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from peftlab.search.handoff import check_outside_package, final_command, method_data_yaml, write_selection
from peftlab.search.selection import Choice, SearchError, format_values, select_from_sweep

DESCRIPTION = "Honest hyperparameter selection from a grid sweep or an Optuna study on the search split."


def print_choices(choices: dict[str, Choice]) -> None:
    for task, choice in choices.items():
        print(
            f"{task}: {format_values(choice.values)}  val acc {100 * choice.val_acc:.2f}% "
            f"({choice.seeds} seed(s), best of {choice.candidates})",
            file=sys.stderr,
        )


def run_select(args: argparse.Namespace) -> int:
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    choices, warnings = select_from_sweep(args.sweep_dir, keys, args.include_partial)
    varied = [key for key, _ in next(iter(choices.values())).values]
    name = args.name or f"{args.sweep_dir.resolve().name}_selected"
    config_dir = args.out or args.sweep_dir / "selection"
    check_outside_package(config_dir)
    path = config_dir / "method_data" / f"{name}.yaml"
    write_selection(method_data_yaml(choices, name, str(args.sweep_dir), varied), path, args.force)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print_choices(choices)
    print(f"wrote {path}\nfinal runs:", file=sys.stderr)
    print(final_command(choices, config_dir, name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftlab.search", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("select", help="pick per-task configurations from a search-split grid or study")
    cmd.add_argument("sweep_dir", type=Path, help="the search's dir, e.g. logs/sweeps/hta_grid/hta_vtab1k")
    cmd.add_argument("--out", type=Path, help="config dir to write method_data/<name>.yaml into "
                     "(default: <sweep_dir>/selection)")  # fmt: skip
    cmd.add_argument("--name", help="method_data name (default: <sweep dir name>_selected)")
    cmd.add_argument("--keys", help="comma-separated config keys to compare (default: the keys that vary)")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing selection file")
    cmd.add_argument("--include-partial", action="store_true", help="also select among cut-short (partial) runs")
    commands.add_parser("optuna", help="run or resume an Optuna study: python -m peftlab.search optuna "
                        "[train overrides] search=<space> (peftlab/tune.py)", add_help=False)  # fmt: skip
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["optuna"]:
        from peftlab.tune import main as tune_main

        return tune_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return run_select(args)
    except SearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
