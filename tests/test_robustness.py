"""Never lose work, fail clearly: resume after a kill, non-finite loss, atomic writes, bad input, DDP."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from peftlab.results import RESULTS_FILE, AtomicCheckpointIO, RunRecord
from peftlab.train import train

DEMO_FAST = ["+backbone.model_kwargs.depth=2", "logger=none", "trainer.deterministic=true"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "peftlab.train", *args]


def final(run_dir) -> dict:
    return json.loads((run_dir / RESULTS_FILE).read_text())


def wait_for_checkpoint(proc: subprocess.Popen, last, timeout: float = 300) -> dict:
    """Poll until ``last`` exists (an end-of-epoch save), then return its content; the process keeps running."""
    deadline = time.time() + timeout
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert last.exists(), "the run ended before it wrote a checkpoint"
    return torch.load(last, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_metrics(cli_env, tmp_path):
    """SIGKILL in a middle epoch (the shipped callbacks, validation or not), resume: exactly the reference run."""
    epochs = 4
    args = [*DEMO_FAST, f"trainer.max_epochs={epochs}", "logger=csv"]
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    ref = subprocess.run(cli(*args, f"hydra.run.dir={ref_dir}"), env=cli_env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen(
        cli(*args, f"hydra.run.dir={run_dir}"), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    saved = wait_for_checkpoint(proc, run_dir / "checkpoints" / "last.ckpt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert saved["epoch"] < epochs - 1, "killed after training ended, not in a middle epoch"
    assert final(run_dir)["status"] == "running", "a killed run must never look complete"
    rows_before = csv_rows(run_dir)

    resumed = subprocess.run(cli(*args, f"hydra.run.dir={run_dir}"), env=cli_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    expected, got = final(ref_dir), final(run_dir)
    assert got["status"] == "complete"
    assert got["metrics"]["test/loss"] == expected["metrics"]["test/loss"]
    assert got["metrics"]["test/acc"] == expected["metrics"]["test/acc"]
    assert got["train_info"]["global_step"] == expected["train_info"]["global_step"]
    epochs_logged = [row["epoch"] for row in csv_rows(run_dir) if row.get("train/loss_epoch")]
    assert epochs_logged == [str(e) for e in range(epochs)], "the per-epoch history must survive the resume"
    after = [filled(row) for row in csv_rows(run_dir)]  # columns logged later (test/*) are empty in earlier rows
    assert all(filled(row) in after for row in rows_before if int(row["epoch"] or 0) <= saved["epoch"])


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["memory", "none"], ids=["cached-loader", "pil-loader"])
def test_run_stopped_mid_epoch_resumes_to_the_same_final_metrics(cli_env, tmp_path, cache):
    """SIGTERM inside an epoch (a preemption): last.ckpt is saved at that batch, and the resumed run trains the rest
    of the epoch on the batches the uninterrupted run saw, in the same order with the same flips: exactly the
    reference run. Both training loaders: the cached one (the VTAB default) and the PIL one (FGVC, splits over the
    cache limit), which prefetches with worker processes."""
    steps_per_epoch = 125  # the demo's 1000 train images at batch 8
    args = [
        *DEMO_FAST,
        "trainer.max_epochs=2",
        "data.batch_size=8",
        f"data.cache={cache}",
        "+data.hflip=true",
        "data.num_workers=2",
        "callbacks.model_checkpoint.every_n_train_steps=20",
    ]
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "interrupted"
    ref = subprocess.run(cli(*args, f"hydra.run.dir={ref_dir}"), env=cli_env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen(
        cli(*args, f"hydra.run.dir={run_dir}"), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_checkpoint(proc, run_dir / "checkpoints" / "last.ckpt")  # step 20 of epoch 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] % steps_per_epoch != 0, "the signal's checkpoint must be inside an epoch"

    resumed = subprocess.run(cli(*args, f"hydra.run.dir={run_dir}"), env=cli_env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "not resumable" not in resumed.stdout + resumed.stderr
    expected, got = final(ref_dir), final(run_dir)
    assert got["status"] == "complete"
    assert got["train_info"]["global_step"] == expected["train_info"]["global_step"] == 2 * steps_per_epoch
    assert got["metrics"]["test/loss"] == expected["metrics"]["test/loss"]
    assert got["metrics"]["test/acc"] == expected["metrics"]["test/acc"]


def filled(row: dict) -> dict:
    return {k: v for k, v in row.items() if v}


def csv_rows(run_dir) -> list[dict]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def test_non_finite_loss_stops_with_a_clear_message(make_cfg, tmp_path):
    cfg = make_cfg("method=full", "optim.lr=1e12", "optim.warmup_epochs=0", *DEMO_FAST, "trainer.max_epochs=1")
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* at step \d+ .*learning rate"):
        train(cfg)
    saved = final(tmp_path / "run")
    assert saved["status"] == "failed" and "non-finite" in saved["error"]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    if last.exists():  # whatever checkpoint survives was written before the loss went bad
        state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values())


def test_atomic_writes_leave_no_partial_files(tmp_path):
    RunRecord(status="complete").save(tmp_path)
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ckpt" / "last.ckpt")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "last.ckpt", RESULTS_FILE]

    class Unserialisable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        AtomicCheckpointIO().save_checkpoint({"x": Unserialisable()}, tmp_path / "ckpt" / "last.ckpt")
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]["w"].sum() == 2
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=lora", "method.rank=-1"], "rank"),
        (["method=hta", "method.rank=-2"], "rank"),
        (["method=lora", "method.targets=[attn.query]"], "matches no layer"),
        (["data.num_classes=3", "data.generate_demo=false"], r"label 3 is outside \[0, 2\] \(num_classes=3\)"),
        (["data.image_size=36"], "not divisible by the backbone's patch size 8"),
        (["data.num_classes=1"], "expected an integer >= 2"),
        (["ckpt_path=/nonexistent.ckpt"], "does not exist"),
    ],
)
def test_bad_values_fail_before_anything_is_written(make_cfg, tmp_path, overrides, message):
    with pytest.raises((ValueError, KeyError, FileNotFoundError, TypeError), match=message):
        train(make_cfg(*overrides, "logger=none"))
    assert not (tmp_path / "run" / RESULTS_FILE).exists() or final(tmp_path / "run")["status"] == "failed"


def test_cli_prints_one_clear_error_without_traceback(cli_env):
    proc = subprocess.run(cli("method=lora", "method.rank=0"), env=cli_env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "\nerror: method option rank=0" in "\n" + proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(cli_env, tmp_path):
    """gloo on CPU: 2 processes × batch 16 against 1 process × batch 32 (same effective batch)."""
    common = [*DEMO_FAST, "trainer.max_epochs=2", "trainer.accelerator=cpu"]
    one = subprocess.run(
        cli(*common, "data.batch_size=32", f"hydra.run.dir={tmp_path / 'one'}"),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        cli(
            *common,
            "trainer=ddp",
            "trainer.devices=2",
            "data.batch_size=16",
            f"hydra.run.dir={tmp_path / 'two'}",
        ),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(list(tmp_path.rglob(RESULTS_FILE))) == 2, "DDP must write exactly one results.json (rank 0)"
    acc_one = final(tmp_path / "one")["reported"]["value"]
    acc_two = final(tmp_path / "two")["reported"]["value"]
    assert abs(acc_one - acc_two) <= 0.05  # stated tolerance: 5 points of accuracy on the 400-image demo test set


@pytest.mark.parametrize("method", ["hta", "aoft", "oft"])
def test_bf16_mixed_precision_trains_on_cpu(make_cfg, method):
    """Methods with Householder/orthogonal math run under bf16 autocast (their math stays float32 inside)."""
    results = train(make_cfg(f"method={method}", "trainer.precision=bf16-mixed", "debug=limit", *DEMO_FAST))
    assert results.meta_info["precision"] == "bf16-mixed"
    assert results.status == "partial" and math.isfinite(results.metrics["train/loss"])  # debug=limit


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_gpu(make_cfg, precision):
    gpu = ["trainer.accelerator=gpu", f"trainer.precision={precision}"]  # after debug=limit, which picks the CPU
    results = train(make_cfg("method=rlrr", "debug=limit", *gpu, *DEMO_FAST))
    assert results.status == "partial"  # debug=limit
    assert results.meta_info["device"] == torch.cuda.get_device_name() and results.meta_info["precision"] == precision


@pytest.mark.gpu
def test_cuda_graphs_train_through_the_lightning_loop(make_cfg):
    """``trainer.compile=reduce-overhead`` in a real run: the loss, metrics and finiteness check must not read a CUDA
    graph's output after the next replay has overwritten it (training and evaluation graphs alternate)."""
    gpu = ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "trainer.compile=reduce-overhead"]
    results = train(make_cfg("method=lora", "debug=limit", *gpu, *DEMO_FAST))
    assert results.status == "partial" and results.meta_info["device"] == torch.cuda.get_device_name()
    assert math.isfinite(results.metrics["train/loss"]) and math.isfinite(results.metrics["test/loss"])


def test_results_name_the_device_the_run_trained_on_not_the_machines_gpu(make_cfg, monkeypatch):
    """A run told to use the CPU on a GPU machine (``debug=``, ``trainer=cpu``) records ``cpu``, and the precision
    Lightning ran (16-mixed falls back to bf16-mixed on a CPU), not the one asked for."""
    import peftlab.train

    def on_a_gpu_machine(*args, **kwargs):  # a GPU is visible while the record is made (training itself stays real)
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: True)
            patch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H200")
            return initial_record(*args, **kwargs)

    initial_record = peftlab.train.initial_record
    monkeypatch.setattr(peftlab.train, "initial_record", on_a_gpu_machine)
    results = train(make_cfg("trainer.precision=16-mixed", "debug=limit", *DEMO_FAST))
    assert results.meta_info["device"] == "cpu" and results.meta_info["precision"] == "bf16-mixed"


@pytest.mark.slow
def test_compiled_training_keeps_plain_checkpoint_keys(make_cfg, tmp_path):
    from peftlab.build import build
    from peftlab.checkpoint import load_checkpoint, model_state
    from peftlab.methods.state import trainable_state_dict

    cfg = make_cfg("trainer.compile=true", "debug=limit", "trainer.max_epochs=1", *DEMO_FAST)
    assert train(cfg).status == "partial"  # debug=limit
    state = model_state(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert set(state) == set(trainable_state_dict(build(make_cfg(*DEMO_FAST), loggers=False).model))
