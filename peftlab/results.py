"""``results.json``: one typed record per run (``RunRecord``), written atomically, with provenance and identity;
complete results are never overwritten. The status values and the rule for "counted in tables" live here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

RESULTS_FILE = "results.json"
RUNNING, COMPLETE, FAILED = "running", "complete", "failed"
#: finished without a reported value (``test=false``)
INCOMPLETE = "incomplete"
#: stopped by a signal (preemption, Ctrl-C); resumable
INTERRUPTED = "interrupted"
#: a debug, batch-limited or zero-epoch run: it has numbers, but they are never counted unless asked for
PARTIAL = "partial"
STATUSES = (RUNNING, COMPLETE, FAILED, INCOMPLETE, INTERRUPTED, PARTIAL)


@dataclass
class Experiment:
    """What was run. ``backbone`` is the timm model name; ``backbone_config`` the config group it came from."""

    name: str = "default"
    method: str = "?"
    backbone: str = "?"
    backbone_config: str | None = None
    weights: str | None = None
    dataset: str = "?"
    task: str = "?"
    group: str | None = None
    split: str = "final"
    seed: int | None = None


@dataclass
class Reported:
    """The number tables use: final-epoch accuracy on the protocol's eval split (``protocol.py``)."""

    metric: str | None = "test/acc"
    value: float | None = None


@dataclass
class Identity:
    """The semantic configuration (``identity.py``): flat ``{dotted key: value}``, keys chosen per task, and a hash."""

    config: dict[str, Any] = field(default_factory=dict)
    per_task: list[str] = field(default_factory=list)
    hash: str = ""


@dataclass
class RunRecord:
    """The content of one ``results.json``: the only reader and writer of that file."""

    status: str = RUNNING
    error: str | None = None
    partial_reasons: list[str] = field(default_factory=list)  # why a ``partial`` run's numbers are not a result
    experiment: Experiment = field(default_factory=Experiment)
    identity: Identity = field(default_factory=Identity)
    reported: Reported = field(default_factory=Reported)
    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def counted(self, include_partial: bool = False) -> bool:
        """The one rule for "counted in tables and selections": a complete run with a finite reported value
        (``partial`` runs only when asked for)."""
        value = self.reported.value
        allowed = (COMPLETE, PARTIAL) if include_partial else (COMPLETE,)
        return self.status in allowed and isinstance(value, (int, float)) and math.isfinite(value)

    @property
    def finished_at(self) -> str:
        return str(self.run_info.get("finished_at") or "")

    @property
    def config(self) -> dict[str, Any]:
        """The full resolved config of the run."""
        return self.run_info.get("config") or {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Any) -> RunRecord:
        """Parse a results payload; older files (no identity, group name as backbone) are read as well."""
        if not isinstance(payload, dict) or not isinstance(payload.get("experiment"), dict):
            raise ValueError("not a peftlab results file: no 'experiment' section")
        experiment = dict(payload["experiment"])
        if experiment.get("timm_name"):  # before the record named the model: backbone held the config group
            experiment["backbone_config"] = experiment.get("backbone")
            experiment["backbone"] = experiment.pop("timm_name")
        experiment.pop("timm_name", None)
        sections = {f.name for f in fields(cls)} - {"experiment", "identity", "reported"}
        return cls(
            experiment=Experiment(**_known(Experiment, experiment)),
            identity=Identity(**_known(Identity, payload.get("identity") or {})),
            reported=Reported(**_known(Reported, payload.get("reported") or {})),
            **{k: payload[k] for k in sections if payload.get(k) is not None},
        )

    def save(self, output_dir: Path) -> Path:
        path = Path(output_dir) / RESULTS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        """Read ``path`` (a results file or a run dir); raises ValueError saying why it cannot be used."""
        path = Path(path)
        path = path / RESULTS_FILE if path.is_dir() else path
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"unreadable: {error}") from error


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and an atomic rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())  # mkstemp creates 0600; the final file gets the mode any new file would get
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask: what ``open()`` gives a new file (temp files ignore the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in values.items() if k in names}


def read_record(output_dir: Path) -> RunRecord | None:
    """The run's record, or None when there is none (or it cannot be read)."""
    try:
        return RunRecord.load(Path(output_dir) / RESULTS_FILE)
    except ValueError:
        return None


def is_complete(output_dir: Path) -> bool:
    record = read_record(output_dir)
    return record is not None and record.counted()


def find_results(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Every ``results.json`` under ``paths`` (files are taken as given), sorted, and the paths that do not exist."""
    found, absent = [], []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(path.rglob(RESULTS_FILE))
        else:
            absent.append(str(path))
    return sorted(set(found)), absent


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def versions() -> dict[str, str]:
    import lightning
    import timm
    import torch
    import torchmetrics

    import peftlab

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "peftlab": peftlab.__version__,
    }


def device_name(device: Any) -> str:
    """What a run trained on: the GPU's name, or ``cpu`` (also on a GPU machine when the run was told to use a CPU)."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes through a temp file and an atomic rename: a run killed mid-save keeps
    its previous good checkpoint instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, umask_mode())
        os.close(fd)
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
