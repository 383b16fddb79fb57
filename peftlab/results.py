"""``results.json``: one per run, written atomically, with provenance; complete results are never overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

RESULTS_FILE = "results.json"
RUNNING, FAILED, COMPLETE = "running", "failed", "complete"
#: stopped by a signal (resumable, never complete); numbers from a cut-short debug run (never counted as a result)
INTERRUPTED, PARTIAL = "interrupted", "partial"


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


def write_results(output_dir: Path, payload: dict[str, Any]) -> Path:
    path = Path(output_dir) / RESULTS_FILE
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def read_results(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_complete(output_dir: Path) -> bool:
    results = read_results(output_dir)
    return bool(results) and results.get("status") == COMPLETE and results.get("reported", {}).get("value") is not None


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


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


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
