"""A run's lifecycle outside the training math: one writer per run dir, signals that stop a run resumably with the
exit code schedulers expect, what makes a result partial, and failed jobs that do not stop a sweep."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

LOCK_FILE = ".peftlab.lock"


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGTERM: preemption or time limit; SIGINT: Ctrl+C).

    A BaseException, so that no ``except Exception`` on the way swallows it; the process exits ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class RunDirBusy(FileExistsError):
    """Another process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory, held for the whole run: a second process on the same directory stops at
    once (naming the holder) instead of interleaving checkpoints, logs and results. The kernel releases the lock
    when the holder exits, even on SIGKILL, so a killed run never leaves a stale lock behind."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise RunDirBusy(
                f"run dir {self.path.parent} is in use by {holder}: wait for that run to finish (or stop it), "
                "or give this run its own directory (hydra.run.dir=...)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock; the file stays (unlinking it would race a waiter)
            self._fd = None


class StopSignals:
    """SIGTERM and SIGINT stop a run cleanly: while Lightning trains or evaluates, at the next batch boundary (the
    checkpoint callback then saves ``last.ckpt``); otherwise at once. A second signal stops at once. Either way the
    run ends with :class:`Interrupted`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.trainer: Any = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python lets only the main thread set handlers (a run started from a worker thread)
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum if first else self.received
        if first and self._trainer_running():
            _note(f"received {signal.Signals(signum).name}: stopping after the current batch\n")
            self.trainer._signal_connector.received_sigterm = True  # Lightning's own stop flag (set for SIGTERM too)
            return
        raise Interrupted(self.received)

    def _trainer_running(self) -> bool:
        from lightning.pytorch.trainer.states import TrainerStatus

        return self.trainer is not None and self.trainer.state.status == TrainerStatus.RUNNING


def _note(message: str) -> None:
    """Write from a signal handler: a raw write to stderr's descriptor. ``logging`` and buffered streams are not
    reentrant: a signal arriving while the main thread writes the log file would fail inside their lock."""
    try:
        os.write(sys.stderr.fileno(), message.encode())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def partial_reasons(cfg: DictConfig) -> list[str]:
    """Why a run's numbers are not a real result (debug settings that cut training or evaluation short)."""
    trainer = cfg.trainer
    reasons = []
    if trainer.get("max_epochs") == 0:
        reasons.append("trainer.max_epochs=0 (no training)")
    if (trainer.get("max_steps") or -1) > 0:
        reasons.append(f"trainer.max_steps={trainer.max_steps}")
    if trainer.get("fast_dev_run"):
        reasons.append(f"trainer.fast_dev_run={trainer.fast_dev_run}")
    if trainer.get("overfit_batches"):
        reasons.append(f"trainer.overfit_batches={trainer.overfit_batches}")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is not None and not (isinstance(value, float) and value == 1.0):
            reasons.append(f"trainer.{key}={value} (not the whole split)")
    return reasons


# --------------------------------------------------------------------------------------------- sweeps (multirun)
def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_failed_job(output_dir: str, err: BaseException, user_error: bool) -> None:
    """One sweep job failed: say so (one line for bad input, the traceback for anything else); the sweep goes on."""
    if user_error:
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    else:
        traceback.print_exception(err, file=sys.stderr)
    print(f"job in {output_dir} failed; the sweep goes on", file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(message).split())


#: the record of a job whose process died without writing its end
DIED = (
    "the job's process ended without recording how (killed: out of memory, SIGKILL, or a crash of the interpreter); "
    "rerun the sweep to resume it from its last.ckpt"
)


def failed_jobs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(job dir, error) of every job under ``sweep_dir`` whose results.json says ``failed``. Called when the sweep has
    ended, so a job still ``running`` whose run dir is not locked died unrecorded: it is recorded ``failed`` now."""
    from peftlab.results import FAILED, RESULTS_FILE, RUNNING, read_record

    failed = []
    for path in sorted(Path(sweep_dir).rglob(RESULTS_FILE)):
        record = read_record(path.parent)
        if record is not None and record.status == RUNNING and not is_locked(path.parent):
            record.status, record.error = FAILED, DIED
            record.save(path.parent)
        if record is not None and record.status == FAILED:
            failed.append((str(path.parent), " ".join(str(record.error).split())))
    return failed


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds ``run_dir``'s :class:`RunLock` (a dead holder's lock is released by the kernel)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class SweepSummary(Callback):
    """Hydra callback, run by the process that launched the sweep (whatever the launcher: jobs in-process, in
    parallel processes or on SLURM): list the failed jobs and exit 1 when there are any."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = failed_jobs(Path(config.hydra.sweep.dir))
        if not failed:
            return
        lines = [f"{len(failed)} sweep job(s) failed:", *(f"  {job}: {error[:300]}" for job, error in failed)]
        print("\n".join(lines), file=sys.stderr, flush=True)
        sys.exit(1)
