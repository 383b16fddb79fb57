"""experiments/bench_sweep.py without the probe runs: the generated task is in NOAH's layout, the recipe facts come
from the experiment config, and the extrapolation follows its formula. No timing assertions."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from peftlab.data.splits import read_txt_split
from tests.helpers import load_experiment


@pytest.fixture(scope="module")
def sweep():
    return load_experiment("bench_sweep")


def test_generated_task_has_the_real_layout_and_counts(sweep, tmp_path):
    task = sweep.write_task(tmp_path / "cifar100", test_size=7, source_px=16)
    counts = {split: len(read_txt_split(task, split)[0]) for split in ("train800", "val200", "train800val200", "test")}
    assert counts == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 7}
    assert (task / "images/train800val200/000999.jpg").is_file()


def test_recipe_facts_come_from_the_experiment_config(sweep):
    facts = sweep.recipe_facts(sweep.parse_args(["--method", "lora"]))
    assert facts["batch_size"] > 0 and facts["eval_batch_size"] > 0 and facts["check_val_every_n_epoch"] >= 1


def test_task_time_is_fixed_plus_training_plus_every_evaluation(sweep):
    costs = {"fixed_s": 10.0, "train_batch_s": 0.5, "eval_batch_s": 0.25}
    recipe = {"batch_size": 32, "eval_batch_size": 128, "cache_max_gb": 4.0, "check_val_every_n_epoch": 1}
    seconds = sweep.task_seconds(costs, 1000, recipe, epochs=100, rate=100.0)
    eval_pass = math.ceil(1000 / 128) * 0.25
    assert seconds == pytest.approx(10 + 100 * math.ceil(1000 / 32) * 0.5 + 101 * eval_pass)
    huge = 73_728  # over cache_max_gb: decoded at every evaluation
    with_decode = sweep.task_seconds(costs, huge, recipe, epochs=100, rate=100.0)
    without = sweep.task_seconds(costs, huge, {**recipe, "cache_max_gb": 100.0}, epochs=100, rate=100.0)
    assert with_decode - without == pytest.approx(101 * huge / 100.0)


def test_job_seconds_come_from_the_launchers_journal_in_job_order(sweep, tmp_path):
    """A job's cost is its own process time, not its sweep's wall time (which adds the launcher's start once)."""
    journal = tmp_path / "launcher.jsonl"
    records = [{"job": 1, "start": 100.0, "end": 112.5}, {"job": 0, "start": 100.0, "end": 110.0}]
    journal.write_text("".join(json.dumps({**r, "device": "0", "returncode": 0}) + "\n" for r in records))
    assert sweep.job_seconds(journal) == [10.0, 12.5]


def test_the_launchers_start_is_paid_once_per_sweep_not_once_per_job(sweep):
    costs = {"fixed_s": 10.0, "train_batch_s": 0.5, "eval_batch_s": 0.25, "launcher_s": 15.0}
    recipe = {"batch_size": 32, "eval_batch_size": 128, "cache_max_gb": 4.0, "check_val_every_n_epoch": 10}
    report = sweep.sweep_report(sweep.parse_args([]), recipe, rate=1000.0, costs={2: costs}, complete=True)
    estimate = report["estimates_by_k"][2]
    assert estimate["sweep_s"] == pytest.approx(
        15.0 + sum(estimate["per_task_s"].values()) / 2 + report["decode_first_jobs_s"]
    )


def test_an_auto_cache_limit_is_resolved_per_jobs_per_device(sweep, monkeypatch):
    """With ``cache_max_gb: auto`` (the shipped default) on a GPU each of k jobs gets 1/k of half its memory (on a host
    with more memory than that)."""
    monkeypatch.setattr("torch.cuda.get_device_properties", lambda device: SimpleNamespace(total_memory=80e9))
    monkeypatch.setattr("peftlab.data.cache.host_memory_bytes", lambda: 1e12)  # a host larger than the GPU
    assert sweep.cache_limit_gb("auto", "cuda", 1) == pytest.approx(40.0)
    assert sweep.cache_limit_gb("auto", "cuda", 4) == pytest.approx(10.0)
    assert sweep.cache_limit_gb("auto", "cpu", 4) == 4.0
    assert sweep.cache_limit_gb(2.5, "cuda", 4) == 2.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train-batches", "17"], r"--train-batches 17 is more than an epoch has \(16 batches of 64\)"),
        (["--eval-batches", "9", "--test-size", "2048"], r"--eval-batches 9 needs 18 test batches .* at least 2304"),
    ],
)
def test_probe_sizes_that_do_not_exist_are_one_error_before_any_probe(sweep, argv, message):
    recipe = {"batch_size": 64, "eval_batch_size": 128, "cache_max_gb": "auto", "check_val_every_n_epoch": 10}
    with pytest.raises(SystemExit, match=message):
        sweep.check_probe_sizes(sweep.parse_args(argv), recipe)
    sweep.check_probe_sizes(
        sweep.parse_args(["--train-batches", "16", "--eval-batches", "8", "--test-size", "2048"]), recipe
    )
