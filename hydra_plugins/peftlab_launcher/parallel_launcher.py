"""``hydra/launcher=parallel``: a sweep's jobs run as local processes, ``jobs_per_device`` at a time on each visible
device, so that several small jobs (a VTAB-1k task at batch 64) share one GPU.

    python -m peftlab.train -m hydra/launcher=parallel hydra.launcher.jobs_per_device=4 experiment=lora_vtab1k ...

Each job is a fresh process pinned to one device (``CUDA_VISIBLE_DEVICES``); it runs Hydra's own ``run_job`` on the
job's sweep config exactly as the basic launcher does, so job dirs, logs, resume (a complete job is skipped, a job with
a ``last.ckpt`` resumes) and failure (a failed job is reported when the batch ends; the other jobs still run) are
unchanged. ``devices`` defaults to every visible CUDA device, or the CPU when there is none. Every job's end is
appended to ``<sweep dir>/launcher.jsonl`` (job, device, pid, start, end, exit code, and the run's status from its
``results.json``: a failed run is ``failed`` there even though its process exited 0). A SIGTERM to the launcher is
passed on to the running jobs, which save ``last.ckpt`` and stop as ``interrupted`` (so a re-run resumes them), before
it exits.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
#: the sweep's journal: one JSON line per ended job, in ``<sweep dir>``
JOURNAL_NAME = "launcher.jsonl"
#: how long stopped jobs get to write their checkpoint before they are killed
STOP_GRACE_SECONDS = 120


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.peftlab_launcher.parallel_launcher.ParallelLauncher"
    jobs_per_device: int = 1
    devices: Any = None  # list of CUDA indices or "cpu"; None: every visible CUDA device, else the CPU


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf, provider="peftlab")


def visible_devices() -> list[str]:
    """Every CUDA device this process sees (as indices into its own ``CUDA_VISIBLE_DEVICES``), or ``["cpu"]``."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [str(i) for i in range(count)] or ["cpu"]


def physical_device(index: str) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry of logical device ``index`` in this process."""
    inherited = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return inherited[int(index)] if inherited and int(index) < len(inherited) else index


class ParallelLauncher(Launcher):
    def __init__(self, jobs_per_device: int = 1, devices: Any = None) -> None:
        if not isinstance(jobs_per_device, int) or isinstance(jobs_per_device, bool) or jobs_per_device < 1:
            raise ValueError(
                f"hydra.launcher.jobs_per_device={jobs_per_device!r} is invalid: expected an integer >= 1 "
                "(jobs run at the same time on each device)"
            )
        self.jobs_per_device = jobs_per_device
        self.devices = None if devices is None else [str(d) for d in devices]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def __call__(self, overrides: list[str], job_num: int, singleton_state: dict) -> JobReturn:
        """Runs one job in the current (worker) process, as the basic launcher would."""
        from hydra.core.utils import run_job
        from omegaconf import open_dict

        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = f"job_id_for_{job_num}"
            job.num = job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        devices = self.devices or visible_devices()
        slots = [device for device in devices for _ in range(self.jobs_per_device)]
        log.info(f"Parallel launcher: {len(job_overrides)} jobs, {self.jobs_per_device} per device on {devices}")
        jobs = deque((initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides))
        with tempfile.TemporaryDirectory(prefix="peftlab-launcher-") as scratch:
            return self._run_all(jobs, slots, Path(scratch), sweep_dir / JOURNAL_NAME)

    def _run_all(self, jobs: deque, slots: list[str], scratch: Path, journal: Path) -> list[JobReturn]:
        running, results = {}, {}  # slot -> (process, job, result file, start); job -> JobReturn
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            self._schedule(jobs, slots, scratch, journal, running, results)
        finally:
            signal.signal(signal.SIGTERM, previous)
            _stop(running, slots, journal)
        return [results[num] for num in sorted(results)]

    def _schedule(self, jobs: deque, slots: list[str], scratch: Path, journal: Path, running: dict, results: dict):
        """Runs ``jobs`` k at a time per device, filling ``running`` and ``results`` as they start and end."""
        import cloudpickle

        free, state = list(range(len(slots))), Singleton.get_state()
        while jobs or running:
            while jobs and free:
                slot = free.pop(0)
                num, overrides = jobs.popleft()
                log.info(f"\t#{num} on {slots[slot]}: {' '.join(filter_overrides(overrides))}")
                payload, result = scratch / f"{num}.job", scratch / f"{num}.result"
                payload.write_bytes(cloudpickle.dumps((self, overrides, num, state)))
                process = subprocess.Popen(
                    [sys.executable, "-m", "hydra_plugins.peftlab_launcher.worker", str(payload), str(result)],
                    env=_job_env(slots[slot], self.jobs_per_device),
                )
                running[slot] = (process, num, result, time.time())
            time.sleep(POLL_SECONDS)
            for slot, (process, num, result, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                free.append(slot)
                results[num] = _read_result(result, num, process.returncode)
                _journal(journal, num, slots[slot], process, start, _run_status(results[num]))


def _run_status(result: JobReturn) -> str:
    """The run's own status (``results.json``: complete, failed, interrupted, …), else Hydra's (a job that failed
    before writing one): a peftlab job records its failure and returns, so Hydra's status alone says COMPLETED."""
    from peftlab.results import RESULTS_FILE

    try:
        record = Path(str(OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir"))) / RESULTS_FILE
        return json.loads(record.read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return result.status.name


def _raise_terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _stop(running: dict, slots: list[str], journal: Path) -> None:
    """SIGTERM to every job still running (the launcher is stopping), then wait for their checkpoints."""
    for process, *_ in running.values():
        process.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    for slot, (process, num, _, start) in running.items():
        try:
            process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        _journal(journal, num, slots[slot], process, start, "stopped")


def _journal(path: Path, num: int, device: str, process: subprocess.Popen, start: float, status: str) -> None:
    record = {"job": num, "device": device, "pid": process.pid, "start": start, "end": time.time()}
    _append_json(path, {**record, "returncode": process.returncode, "status": status})


def _job_env(device: str, jobs_per_device: int) -> dict[str, str]:
    from peftlab.conf import JOBS_PER_DEVICE_ENV

    env = {**os.environ, JOBS_PER_DEVICE_ENV: str(jobs_per_device)}  # the share of the device a job may cache into
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["CUDA_VISIBLE_DEVICES"] = physical_device(device)
    root = str(Path(__file__).resolve().parents[2])  # the job process finds this plugin (and peftlab) like its parent
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _read_result(path: Path, num: int, returncode: int) -> JobReturn:
    import cloudpickle

    if path.is_file():
        return cloudpickle.loads(path.read_bytes())
    failed = JobReturn()
    failed.status = JobStatus.FAILED
    failed.return_value = RuntimeError(f"job #{num} exited with code {returncode} before reporting a result")
    return failed


def _append_json(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
