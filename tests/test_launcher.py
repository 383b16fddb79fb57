"""``hydra/launcher=parallel``: k jobs at a time per device (here: the CPU), each in its own process, with the basic
launcher's job dirs and failure semantics (a failed job is reported at the end; the other jobs still complete)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from peftlab.results import RESULTS_FILE


def overlap(records: list[dict]) -> int:
    """The largest number of jobs that ran at the same time."""
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow
def test_jobs_run_k_at_a_time_and_a_failed_job_fails_the_sweep_after_the_others(cli_env, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.jobs_per_device=2",
        f"hydra.sweep.dir={sweep}",
        "method=full",
        "optim.lr=1e-3,1e12",  # the second job diverges (non-finite loss) while the first completes
        "optim.warmup_epochs=0",
        "+backbone.model_kwargs.depth=1",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab.train", *args], env=cli_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode != 0, "a failed job must fail the sweep, as with the basic launcher"
    records = [json.loads(line) for line in (sweep / "launcher.jsonl").read_text().splitlines()]
    assert sorted(r["job"] for r in records) == [0, 1] and {r["device"] for r in records} == {"cpu"}
    assert overlap(records) == 2, "with jobs_per_device=2 both jobs run at the same time"
    assert len({r["pid"] for r in records}) == 2
    statuses = {path.parent.name: json.loads(path.read_text())["status"] for path in sweep.rglob(RESULTS_FILE)}
    assert statuses == {"0": "complete", "1": "failed"}  # job dirs named by job number, as with the basic launcher
    assert {r["job"]: r["status"] for r in records} == {0: "complete", 1: "failed"}  # exit code 0 either way


def test_jobs_per_device_is_validated():
    from hydra_plugins.peftlab_launcher.parallel_launcher import ParallelLauncher

    with pytest.raises(ValueError, match=r"hydra.launcher.jobs_per_device=0 is invalid: expected an integer >= 1"):
        ParallelLauncher(jobs_per_device=0)


def test_each_job_learns_how_many_jobs_share_its_device():
    """``data.cache_max_gb: auto`` divides the GPU's memory among the jobs on it: the launcher tells each job k."""
    from hydra_plugins.peftlab_launcher.parallel_launcher import _job_env
    from peftlab.conf import JOBS_PER_DEVICE_ENV

    env = _job_env("0", 4)
    assert env[JOBS_PER_DEVICE_ENV] == "4" and env["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_its_jobs_resumably_and_journals_them(cli_env, tmp_path):
    sweep, epochs = tmp_path / "sweep", 50
    args = [
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.jobs_per_device=2",
        f"hydra.sweep.dir={sweep}",
        "seed=1,2",
        "optim.warmup_epochs=0",
        "+backbone.model_kwargs.depth=1",
        f"trainer.max_epochs={epochs}",
        "logger=none",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab.train", *args],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, started = [], 0
    for line in proc.stdout:  # both jobs are past their first epoch: training, signal handlers installed
        output.append(line)
        started += f"epoch 1/{epochs}" in line
        if started == 2:
            break
    proc.send_signal(signal.SIGTERM)
    output.append(proc.stdout.read())
    proc.wait(timeout=300)
    assert started == 2 and proc.returncode == 143, "".join(output)[-3000:]
    records = [json.loads(line) for line in (sweep / "launcher.jsonl").read_text().splitlines()]
    stopped = sorted((r["job"], r["status"], r["returncode"]) for r in records)
    assert stopped == [(0, "stopped", 143), (1, "stopped", 143)]
    for record in records:
        with pytest.raises(ProcessLookupError):  # no job outlives the launcher
            os.kill(record["pid"], 0)
    for job in ("0", "1"):
        saved = json.loads((sweep / job / RESULTS_FILE).read_text())
        assert saved["status"] == "interrupted", saved
        last = torch.load(sweep / job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert 1 <= last["epoch"] < epochs  # a checkpoint from the middle of the run: a re-run resumes it
