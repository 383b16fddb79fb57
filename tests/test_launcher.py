"""``hydra/launcher=parallel``: k jobs at a time per device (here: the CPU), each in its own process, with the basic
launcher's job dirs and failure semantics (a failed job is reported at the end; the other jobs still complete)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_jobs_per_device_is_validated():
    from hydra_plugins.peftlab_launcher.parallel_launcher import ParallelLauncher

    with pytest.raises(ValueError, match=r"hydra.launcher.jobs_per_device=0 is invalid: expected an integer >= 1"):
        ParallelLauncher(jobs_per_device=0)
