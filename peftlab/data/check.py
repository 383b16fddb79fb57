"""Validate datasets on disk before training: ``peftlab-check data=vtab1k [paths.data_dir=...]``
(also ``python -m peftlab.data.check``).

``data=`` takes a config (``data=vtab1k/dtd``, ``data=fgvc/cub``, ``data=demo``, your own ``data=vtab_layout
data.task=...`` or a config in your user config dir) or a whole group folder (``data=vtab1k`` checks all 19 tasks,
``data=fgvc`` all 5). Each task's data module runs its own ``check()`` (the one training runs before loading weights):
every split file is read, counts, label ranges and class coverage are checked and every image is decoded
(``--no-decode`` skips decoding). Prints one row per task and each problem with its fix; exits with status 1 if there
is any problem.
"""

from __future__ import annotations

import argparse
import os
import sys

from omegaconf import DictConfig, OmegaConf

from peftlab.conf import CONFIG_PATH, USER_CONFIG_ENV
from peftlab.data.base import CheckReport
from peftlab.data.catalog import BENCHMARKS
from peftlab.data.errors import Problem
from peftlab.options import ConfigError, check_moved_keys
from peftlab.utils import error_message

CONFIG_FIX = "fix the data option named here (see its config: peftlab-train data=<name> --cfg job)"


def data_config_names(selection: str) -> list[str]:
    """Expands ``data=<selection>`` into config names: itself if it is a config, else every task in the group folder
    (the shipped configs and the user config dir alike)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parent, _, leaf = selection.rpartition("/")
        if leaf in loader.get_group_options("/".join(filter(None, ("data", parent))), ObjectType.CONFIG):
            return [selection]
        names = [n for n in loader.get_group_options(f"data/{selection}", ObjectType.CONFIG) if not n.startswith("_")]
        if not names:
            known = loader.get_group_options("data")
            raise SystemExit(f"error: data={selection} is neither a data config nor a group; options: {known}")
    return [f"{selection}/{name}" for name in sorted(names, key=_catalog_order)]


def _catalog_order(name: str) -> tuple[int, str]:
    known = [task for tasks in BENCHMARKS.values() for task in tasks]
    return (known.index(name) if name in known else len(known), name)


def compose_data_config(name: str, overrides: list[str]) -> DictConfig:
    """Composes ``train.yaml`` with ``data=<name>`` and the overrides (so ``paths`` and experiments apply)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_PATH.removeprefix("pkg://"), version_base="1.3"):
        return compose("train", overrides=[f"data={name}", *overrides])


def check_one(cfg: DictConfig, decode: bool, workers: int) -> CheckReport:
    """Builds the configured data module and runs its ``check()``; config mistakes become report problems."""
    from peftlab.build import build_datamodule

    name, group = (OmegaConf.select(cfg, key, throw_on_resolution_failure=False) for key in ("data.task", "data.group"))
    try:
        datamodule = build_datamodule(cfg)
    except Exception as error:  # noqa: BLE001 - every config mistake is reported in the table
        problem = Problem("data config", error_message(error), CONFIG_FIX)
        return CheckReport(str(name), str(group or "-"), {}, problems=[problem])
    return datamodule.check(decode=decode, workers=workers)


def format_table(reports: list[CheckReport]) -> str:
    """One row per task: folder found, sample count per split, status."""
    splits = list(dict.fromkeys(split for r in reports for split in r.counts))
    header = ["task", "group", "folder", *splits, "status"]
    rows = [header] + [
        [r.name, r.group, r.folder, *[str(r.counts.get(s, "-")) for s in splits], _status(r)] for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _status(report: CheckReport) -> str:
    if report.problems:
        return f"FAIL ({len(report.problems)} problem(s))"
    return f"ok ({len(report.warnings)} warning(s))" if report.warnings else "ok"


def format_details(reports: list[CheckReport]) -> str:
    """Every problem (with its fix) and warning, grouped by task."""
    lines = []
    for report in reports:
        for problem in report.problems:
            lines.append(f"[{report.name}] ERROR {problem}")
        for warning in report.warnings:
            lines.append(f"[{report.name}] warning {warning}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits the command line into our flags and Hydra overrides (``data=...``, ``paths.data_dir=...``)."""
    parser = argparse.ArgumentParser(prog="peftlab-check", description=__doc__.splitlines()[0])
    parser.add_argument("--no-decode", action="store_true", help="skip decoding every image (cheap checks only)")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument(
        "--config-dir",
        default=None,
        help=f"your own config groups, as for the other commands (default: ${USER_CONFIG_ENV})",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.config_dir:
        os.environ[USER_CONFIG_ENV] = args.config_dir
    if not any(o.startswith("data=") for o in overrides):
        parser.error("give data=<config or group>, e.g. data=vtab1k, data=fgvc or data=vtab1k/dtd")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    """Runs the checks and prints the table; returns the exit status (1 if any problem)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        check_moved_keys(overrides)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    selection = next(o for o in overrides if o.startswith("data=")).split("=", 1)[1]
    rest = [o for o in overrides if not o.startswith("data=")]
    reports = []
    for name in data_config_names(selection):
        cfg = compose_data_config(name, rest)
        reports.append(check_one(cfg, decode=not args.no_decode, workers=args.workers))
    print(format_table(reports))
    details = format_details(reports)
    if details:
        print("\n" + details)
    failed = [r.name for r in reports if r.problems]
    print(f"\n{len(reports) - len(failed)}/{len(reports)} task(s) ok" + (f"; failing: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
