"""Validate datasets on disk before training: ``python -m peftlab.data.check data=vtab1k [paths.data_dir=...]``.

``data=`` takes a config (``data=vtab1k/dtd``, ``data=fgvc/cub``, ``data=demo``) or a whole group folder
(``data=vtab1k`` checks all 19 tasks, ``data=fgvc`` all 5). Every split file is read, counts, label ranges and class
coverage are checked and every image is decoded (``--no-decode`` skips decoding). Prints one row per task and each
problem with its fix; exits with status 1 if there is any problem.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from peftlab.conf import CONFIG_DIR
from peftlab.data.catalog import FGVC_TASKS, VTAB_TASKS, find_spec
from peftlab.data.demo import make_demo_dataset
from peftlab.data.errors import DataError, Problem
from peftlab.data.fgvc import read_fgvc_splits
from peftlab.data.splits import VTAB_EXPECTED_COUNTS, VTAB_SOURCE_FIX, LabeledImages, find_task_dir, read_txt_split
from peftlab.data.validate import cheap_problems, decode_problems, missing_classes
from peftlab.data.vtab import vtab_task_spec

VTAB_TARGET = "peftlab.data.VTABDataModule"


@dataclass
class TaskReport:
    """Result of checking one task: per-split sample counts, the folder found, problems and warnings."""

    name: str
    group: str
    counts: dict[str, int | str]
    folder: str = "-"
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def data_config_names(selection: str, conf_dir: Path = CONFIG_DIR) -> list[str]:
    """Expands ``data=<selection>`` into config names: itself if it is a config, else every task in the folder."""
    if (conf_dir / "data" / f"{selection}.yaml").is_file():
        return [selection]
    folder = conf_dir / "data" / selection
    if not folder.is_dir():
        raise SystemExit(f"data={selection}: no config {folder}.yaml and no folder {folder}")
    names = [p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")]
    return [f"{selection}/{name}" for name in sorted(names, key=_catalog_order)]


def _catalog_order(name: str) -> tuple[int, str]:
    known = [*VTAB_TASKS, *FGVC_TASKS]
    return (known.index(name) if name in known else len(known), name)


def compose_data_config(name: str, overrides: list[str], conf_dir: Path = CONFIG_DIR) -> DictConfig:
    """Composes ``data=<name>`` with the shipped configs and returns the resolved ``data`` node.

    Uses ``train.yaml`` when the config dir has one (so ``paths`` and experiments apply); otherwise composes the data
    group alone with ``paths.data_dir`` defaulting to ``$PEFTLAB_DATA`` or ``./data``.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        if (conf_dir / "train.yaml").is_file():
            cfg = compose("train", overrides=[f"data={name}", *overrides])
        else:
            path_overrides = [o for o in overrides if o.startswith("paths.")]
            cfg = compose(overrides=[f"+data={name}", *[o for o in overrides if o not in path_overrides]])
            default_paths = {"paths": {"data_dir": "${oc.env:PEFTLAB_DATA,data}"}}
            cfg = OmegaConf.merge(default_paths, cfg, OmegaConf.from_dotlist(path_overrides))
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))  # resolves only what data uses


def check_vtab(cfg: DictConfig, decode: bool, workers: int) -> TaskReport:
    """Checks all four VTAB-1k split files of one task."""
    report = TaskReport(cfg.task, cfg.group, dict.fromkeys(VTAB_EXPECTED_COUNTS, "-"))
    spec = vtab_task_spec(cfg.task, cfg.num_classes, cfg.group)
    root = Path(cfg.root)
    if cfg.get("generate_demo", False):
        make_demo_dataset(root, cfg.num_classes, cfg.image_size)
        task_dir, report.folder = root, root.name
    else:
        task_dir, report.folder = find_task_dir(root, spec, VTAB_SOURCE_FIX)
    for split, expected in VTAB_EXPECTED_COUNTS.items():
        images, problems = read_txt_split(task_dir, split)
        report.counts[split] = len(images)
        report.problems += problems
        if images.paths:
            report.problems += cheap_problems(images, cfg.num_classes, expected)
            report.problems += decode_problems(images, workers, progress=True) if decode else []
        if split.startswith("train") and images.paths:
            _warn_missing_classes(report, images, cfg.num_classes)
    return report


def check_fgvc(cfg: DictConfig, decode: bool, workers: int) -> TaskReport:
    """Checks the train/val/test json splits of one FGVC dataset."""
    report = TaskReport(cfg.task, cfg.group, dict.fromkeys(("train", "val", "test"), "-"))
    spec = find_spec(cfg.task, FGVC_TASKS)
    if spec is None:
        raise DataError(Problem(f"data.task={cfg.task}", "unknown FGVC dataset", f"use one of {sorted(FGVC_TASKS)}"))
    task_dir, report.folder = find_task_dir(Path(cfg.root), spec, "put VPT's json splits next to the images")
    for split in ("train", "val", "test"):
        try:
            images = read_fgvc_splits(task_dir, spec, [split], cfg.num_classes)
        except DataError as error:
            report.problems += error.problems
            continue
        report.counts[split] = len(images)
        report.problems += decode_problems(images, workers, progress=True) if decode else []
        if split == "train":
            _warn_missing_classes(report, images, cfg.num_classes)
    return report


def _warn_missing_classes(report: TaskReport, images: LabeledImages, num_classes: int) -> None:
    missing = missing_classes(images, num_classes)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        report.warnings.append(
            f"{images.sources[0]}: {len(missing)} of {num_classes} classes have no sample ({shown}); "
            "expected for VTAB-1k tasks with many classes (train800 is not class-stratified), "
            "otherwise check data.num_classes"
        )


def check_one(cfg: DictConfig, decode: bool, workers: int) -> TaskReport:
    """Checks one composed data config, turning data and config errors into report problems."""
    is_vtab = cfg._target_ == VTAB_TARGET
    try:
        return check_vtab(cfg, decode, workers) if is_vtab else check_fgvc(cfg, decode, workers)
    except (DataError, ValueError) as error:
        problems = getattr(error, "problems", None) or [Problem("data config", str(error), "fix the data config")]
        splits = VTAB_EXPECTED_COUNTS if is_vtab else ("train", "val", "test")
        return TaskReport(cfg.task, cfg.group, dict.fromkeys(splits, "-"), problems=problems)


def format_table(reports: list[TaskReport]) -> str:
    """One row per task: folder found, sample count per split, status."""
    splits = list(dict.fromkeys(split for r in reports for split in r.counts))
    header = ["task", "group", "folder", *splits, "status"]
    rows = [header] + [
        [r.name, r.group, r.folder, *[str(r.counts.get(s, "")) for s in splits], _status(r)] for r in reports
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _status(report: TaskReport) -> str:
    if report.problems:
        return f"FAIL ({len(report.problems)} problem(s))"
    return f"ok ({len(report.warnings)} warning(s))" if report.warnings else "ok"


def format_details(reports: list[TaskReport]) -> str:
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
    parser = argparse.ArgumentParser(prog="python -m peftlab.data.check", description=__doc__.splitlines()[0])
    parser.add_argument("--no-decode", action="store_true", help="skip decoding every image (cheap checks only)")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument("--conf-dir", type=Path, default=CONFIG_DIR, help="Hydra config folder")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("data=") for o in overrides):
        parser.error("give data=<config or group>, e.g. data=vtab1k, data=fgvc or data=vtab1k/dtd")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    """Runs the checks and prints the table; returns the exit status (1 if any problem)."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    selection = next(o for o in overrides if o.startswith("data=")).split("=", 1)[1]
    rest = [o for o in overrides if not o.startswith("data=")]
    reports = []
    for name in data_config_names(selection, args.conf_dir):
        cfg = compose_data_config(name, rest, args.conf_dir)
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
