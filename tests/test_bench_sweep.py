"""experiments/bench_sweep.py without the probe runs: the generated task is in NOAH's layout, the recipe facts come
from the experiment config, and the extrapolation follows its formula. No timing assertions."""

from __future__ import annotations

import math

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
