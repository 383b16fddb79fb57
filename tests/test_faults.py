"""Fault injection: bad options, bad data, hostile or broken files, signals, concurrent runs, full disks.

Every case asserts the outcome the CLI gives (exit code, the one ``error:`` line), and what is left on disk. Most
cases run in-process through ``run_cli`` (the body of every CLI entry point); subprocesses only where the process
itself is the subject (signals, a sweep, the exit status of ``python -m peftlab.train``).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import open_dict
from PIL import Image
from safetensors.torch import save_file

from peftlab.backbones import create_backbone
from peftlab.build import build
from peftlab.checkpoint import CheckpointError, load_checkpoint
from peftlab.data.demo import make_demo_dataset
from peftlab.data.errors import DataError
from peftlab.data.images import load_rgb
from peftlab.data.splits import read_txt_split
from peftlab.lifecycle import LOCK_FILE, RunLock, partial_reasons
from peftlab.options import effective_warmup_epochs
from peftlab.results import RESULTS_FILE, AtomicCheckpointIO, Reported, RunRecord, atomic_write_text, read_record
from peftlab.train import train, write_final_record
from peftlab.utils import run_cli
from peftlab.weights import WeightsError

FAST = ["+backbone.model_kwargs.depth=2", "logger=none", "trainer.deterministic=true"]


def read_results(run_dir: Path) -> dict | None:
    """The run's results.json as a dict (None when absent or unreadable)."""
    record = read_record(run_dir)
    return None if record is None else record.to_dict()


def cli_outcome(body, capsys) -> tuple[int, str]:
    """Exit code and stderr of a CLI body run through ``run_cli`` (what every entry point does)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(body)
    return exit_info.value.code, capsys.readouterr().err


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def left_on_disk(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) if run_dir.exists() else []


# ----------------------------------------------------------------------------------------- command-line options
BAD_OPTIONS = [
    (["data.batch_size=0"], "data.batch_size=0 is invalid: expected an integer >= 1"),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0 is invalid: expected an integer >= 1"),
    (["data.batch_size=2.5"], "data.batch_size=2.5 is invalid: expected an integer >= 1"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1 is invalid: expected a number >= 0"),
    (["module.label_smoothing=2"], "module.label_smoothing=2 is invalid: expected a number in [0, 1)"),
    (["optim.lr=-1"], "optim.lr=-1 is invalid: expected a number > 0 (e.g. optim.lr=1e-3)"),
    (["optim.lr=0"], "optim.lr=0 is invalid: expected a number > 0"),
    (["optim.lr=fast"], "optim.lr='fast' is invalid: expected a number > 0"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs=-1 is invalid: expected a number >= 0"),
    (["optim.head_lr_scale=0"], "optim.head_lr_scale=0 is invalid: expected a number > 0"),
    (["optim.layer_decay=1.5"], "optim.layer_decay=1.5 is invalid: expected a number in (0, 1], or null for none"),
    (["seed=abc"], "seed='abc' is invalid: expected an integer >= 0 (e.g. seed=42)"),
    (["seed=-3"], "seed=-3 is invalid: expected an integer >= 0"),
    (["trainer.max_epochs=-1"], "trainer.max_epochs=-1 is invalid: expected an integer >= 0"),
    (["method=lora", "method.targets=[]"], "method.targets=[] leaves method 'lora' nothing to adapt"),
    (["method=hta", "method.targets=[]"], "method.targets=[] leaves method 'hta' nothing to adapt"),
    (["method=lora", "method.rank=-1"], "rank"),
    (["method=lora", "method.targets=[attn.query]"], "matches no layer"),
    (["data.image_size=36"], "not divisible by the backbone's patch size 8"),
    (["data.num_classes=1"], "expected an integer >= 2"),
    (["optim.warmup_epochs=100", "trainer.max_epochs=3"], "optim.warmup_epochs=100 is not shorter than the run"),
]


@pytest.mark.parametrize("overrides, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option_is_one_error_line_before_anything_is_written(make_cfg, tmp_path, capsys, overrides, message):
    cfg = make_cfg(*overrides, *FAST)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, message)
    assert left_on_disk(tmp_path / "run") in ([], [LOCK_FILE]), "a rejected run writes nothing but its lock file"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_trainer_without_cuda_names_the_fix(make_cfg, tmp_path, capsys):
    cfg = make_cfg("trainer=gpu", *FAST)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, "trainer.accelerator=gpu (trainer=gpu) needs a CUDA GPU", "use trainer=cpu")
    assert left_on_disk(tmp_path / "run") == []


def test_checkpoint_every_n_steps_must_be_a_count(make_cfg):
    with pytest.raises(ValueError, match=r"callbacks.model_checkpoint.every_n_train_steps=-1 is invalid"):
        build(make_cfg("callbacks.model_checkpoint.every_n_train_steps=-1", *FAST), loggers=False)


def test_warmup_longer_than_the_run_is_scaled_and_recorded(make_cfg, caplog):
    """The papers' 10 warm-up epochs in a 5-epoch run (protocol 100 epochs): 10/100 of the run, i.e. 0.5 epochs."""
    cfg = make_cfg("optim.warmup_epochs=10", "trainer.max_epochs=5", *FAST)
    assert effective_warmup_epochs(cfg) == pytest.approx(0.5)
    assert "warm-up scaled to 0.5 epochs" in caplog.text
    built = build(cfg, loggers=False)
    assert built.module.recipe.warmup_epochs == pytest.approx(0.5)
    shorter = make_cfg("optim.warmup_epochs=2", "trainer.max_epochs=5", *FAST)
    assert effective_warmup_epochs(shorter) == 2.0


# --------------------------------------------------------------------------------------------- partial results
@pytest.mark.parametrize(
    "overrides, reason",
    [
        (["debug=fdr"], "trainer.fast_dev_run=True"),
        (["debug=limit"], "trainer.limit_train_batches=3 (not the whole split)"),
        (["debug=overfit"], "trainer.overfit_batches=2"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 (no training)"),
        (["+trainer.limit_test_batches=0.5"], "trainer.limit_test_batches=0.5 (not the whole split)"),
        (["+trainer.limit_train_batches=1"], "trainer.limit_train_batches=1 (not the whole split)"),
        (["+trainer.max_steps=10"], "trainer.max_steps=10"),
    ],
)
def test_cut_short_runs_are_partial(make_cfg, overrides, reason):
    assert reason in partial_reasons(make_cfg(*overrides))


def test_shipped_defaults_are_not_partial(make_cfg):
    assert partial_reasons(make_cfg()) == []


def test_partial_run_is_recorded_partial_with_its_schedule_and_never_counted(make_cfg, tmp_path, capsys):
    from peftlab.report import load_run
    from peftlab.results import is_complete

    results = train(make_cfg("debug=limit", *FAST))
    saved = read_results(tmp_path / "run")
    assert results.status == saved["status"] == "partial" and saved["reported"]["value"] is not None
    assert "trainer.limit_test_batches=2 (not the whole split)" in saved["partial_reasons"]
    schedule = saved["train_info"]["schedule"]
    assert schedule["total_steps"] == 6 and schedule["warmup_steps"] == 3  # 2 epochs x 3 batches, 1 warm-up epoch
    assert not is_complete(tmp_path / "run"), "search and sweeps must not take it as done"
    assert not load_run(tmp_path / "run" / RESULTS_FILE).counted, "report must not count it"
    assert load_run(tmp_path / "run" / RESULTS_FILE, include_partial=True).counted, "... unless asked for"
    from peftlab.report import main as report_main

    assert report_main([str(tmp_path / "run")]) == 0 and "No complete run" in capsys.readouterr().out
    assert report_main([str(tmp_path / "run"), "--include-partial"]) == 0
    assert "No complete run" not in capsys.readouterr().out


def test_zero_epochs_is_never_complete(make_cfg, tmp_path):
    results = train(make_cfg("trainer.max_epochs=0", *FAST))
    assert results.status in ("partial", "incomplete")
    assert read_results(tmp_path / "run")["status"] == results.status


# ------------------------------------------------------------------------------------------ one writer per run
def test_second_process_on_a_run_dir_stops_at_once_naming_the_holder(make_cfg, tmp_path, capsys):
    cfg = make_cfg(*FAST)
    with RunLock(tmp_path / "run"):
        code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, f"is in use by pid {os.getpid()} on host", "hydra.run.dir=")
    assert left_on_disk(tmp_path / "run") == [LOCK_FILE], "the second process wrote nothing"


def test_lock_is_released_when_the_holder_ends(tmp_path):
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):  # no stale lock, even though the file stays
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()}")


def test_sweep_end_records_a_job_that_died_running_as_failed_but_not_one_still_locked(tmp_path):
    from peftlab.lifecycle import failed_jobs

    dead, alive = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    for job in (dead, alive):
        RunRecord(status="running").save(job)
    with RunLock(dead):  # the lock file of a run whose process then died (SIGKILL: the kernel released the lock)
        pass
    with RunLock(alive):
        failed = failed_jobs(tmp_path / "sweep")
    assert [job for job, _ in failed] == [str(dead)]
    assert "ended without recording how (killed: out of memory, SIGKILL" in failed[0][1]
    assert read_results(dead)["status"] == "failed" and read_results(alive)["status"] == "running"


def test_a_complete_result_is_never_replaced(tmp_path):
    complete = RunRecord(status="complete", reported=Reported("test/acc", 0.9))
    complete.save(tmp_path)
    with pytest.raises(FileExistsError, match="became complete while this run was training"):
        write_final_record(tmp_path, RunRecord(status="complete", reported=Reported("test/acc", 0.1)))
    assert RunRecord.load(tmp_path) == complete


# -------------------------------------------------------------------------------------------- hostile checkpoints
class WritesAFile:
    """A pickle payload that would create a file when unpickled (arbitrary code execution)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (self.target, "pwned"))


def pickle_payload(path: Path, target: Path) -> Path:
    torch.save({"state_dict": {}, "peftlab": {"config": {}}, "evil": WritesAFile(target)}, path)
    return path


@pytest.fixture
def real_checkpoint(tmp_path) -> Path:
    path = tmp_path / "good.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"model.w": torch.ones(64)}, "peftlab": {"config": {}}}, path)
    return path


BROKEN_CHECKPOINTS = {
    "empty": lambda good, path: path.write_bytes(b""),
    "truncated": lambda good, path: path.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
    "random bytes": lambda good, path: path.write_bytes(os.urandom(4096)),
    "text": lambda good, path: path.write_text("not a checkpoint\n"),
}


@pytest.mark.parametrize("kind", list(BROKEN_CHECKPOINTS))
def test_broken_checkpoint_is_one_clear_line(real_checkpoint, tmp_path, capsys, kind):
    bad = tmp_path / f"{kind}.ckpt"
    BROKEN_CHECKPOINTS[kind](real_checkpoint, bad)
    code, stderr = cli_outcome(lambda: load_checkpoint(bad), capsys)
    assert code == 2
    assert_one_error_line(stderr, str(bad), "is not a readable checkpoint", "truncated or corrupt")


def test_pickle_payload_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    evil = pickle_payload(tmp_path / "evil.ckpt", target)
    code, stderr = cli_outcome(lambda: load_checkpoint(evil), capsys)
    assert code == 2
    assert_one_error_line(stderr, str(evil), "could run arbitrary code")
    assert not target.exists()


def test_pickle_payload_is_refused_by_plots_too(tmp_path):
    from peftlab.plots import load_state_dict

    target = tmp_path / "pwned.txt"
    with pytest.raises(CheckpointError, match="could run arbitrary code"):
        load_state_dict(pickle_payload(tmp_path / "evil.ckpt", target))
    assert not target.exists()


def test_pickle_payload_as_resume_checkpoint_is_refused_before_training(make_cfg, tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    evil = pickle_payload(tmp_path / "evil.ckpt", target)
    cfg = make_cfg(f"ckpt_path={evil}", *FAST)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2 and not target.exists()
    assert_one_error_line(stderr, "could run arbitrary code")
    assert read_results(tmp_path / "run") is None


def test_corrupt_last_checkpoint_in_the_run_dir_is_reported_not_trained_over(make_cfg, tmp_path, capsys):
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"\x00" * 100)
    cfg = make_cfg(*FAST)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, str(last), "truncated or corrupt")
    assert read_results(tmp_path / "run") is None and last.read_bytes() == b"\x00" * 100


def test_plain_state_dict_is_not_taken_for_a_run(tmp_path, capsys):
    path = tmp_path / "plain.ckpt"
    torch.save({"w": torch.ones(2)}, path)
    code, stderr = cli_outcome(lambda: load_checkpoint(path), capsys)
    assert code == 2
    assert_one_error_line(stderr, "is not a peftlab checkpoint")


# --------------------------------------------------------------------------------------- backbone weight files
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
TIMM_NAME = "vit_tiny_patch16_224"


def backbone_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=10, **TINY)
    return {k: v.clone() for k, v in model.state_dict().items()}


def load_backbone(path: Path, **kwargs):
    return create_backbone(TIMM_NAME, num_classes=3, weights_file=str(path), model_kwargs=TINY, **kwargs)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_complete_weights_file_loads_every_tensor(tmp_path, suffix):
    weights, path = backbone_weights(), tmp_path / f"w{suffix}"
    save_file(weights, str(path)) if suffix == ".safetensors" else torch.save(weights, path)
    model = load_backbone(path)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"])
    assert model.head.weight.shape[0] == 3 and not model.head.weight.any()


def test_weights_file_missing_a_backbone_tensor_is_an_error_listing_it(tmp_path, capsys):
    weights = backbone_weights()
    del weights["blocks.0.attn.qkv.weight"], weights["blocks.1.norm2.bias"]
    save_file(weights, str(path := tmp_path / "w.safetensors"))
    code, stderr = cli_outcome(lambda: load_backbone(path), capsys)
    assert code == 2
    assert_one_error_line(stderr, "lacks 2 backbone tensor(s)", "blocks.0.attn.qkv.weight", "blocks.1.norm2.bias")


def test_weights_file_without_the_head_is_fine(tmp_path):
    weights = {k: v for k, v in backbone_weights().items() if not k.startswith("head.")}
    save_file(weights, str(path := tmp_path / "w.safetensors"))
    assert load_backbone(path).head.out_features == 3


def test_unexpected_tensors_are_an_error_unless_allowed(tmp_path, capsys):
    weights = {**backbone_weights(), "decoder.weight": torch.ones(3)}
    save_file(weights, str(path := tmp_path / "w.safetensors"))
    code, stderr = cli_outcome(lambda: load_backbone(path), capsys)
    assert code == 2
    assert_one_error_line(stderr, "decoder.weight", "backbone.allow_unexpected_keys=true")
    assert load_backbone(path, allow_unexpected_keys=True) is not None


def test_weights_of_another_shape_are_an_error(tmp_path, capsys):
    weights = backbone_weights()
    weights["blocks.0.mlp.fc1.weight"] = torch.ones(7, 32)
    save_file(weights, str(path := tmp_path / "w.safetensors"))
    code, stderr = cli_outcome(lambda: load_backbone(path), capsys)
    assert code == 2
    assert_one_error_line(stderr, "shapes differ for blocks.0.mlp.fc1.weight")


@pytest.mark.parametrize("kind", ["empty", "truncated", "random bytes"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_broken_weights_file_is_one_clear_line(tmp_path, capsys, kind, suffix):
    good = tmp_path / f"good{suffix}"
    save_file(backbone_weights(), str(good)) if suffix == ".safetensors" else torch.save(backbone_weights(), good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"empty": b"", "truncated": good.read_bytes()[:5000], "random bytes": os.urandom(5000)}[kind])
    code, stderr = cli_outcome(lambda: load_backbone(bad), capsys)
    assert code == 2
    assert_one_error_line(stderr, str(bad), "truncated or corrupt")


def test_pickle_payload_weights_file_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "w.pth"
    torch.save({**backbone_weights(), "evil": WritesAFile(target)}, path)
    with pytest.raises(WeightsError, match="could run arbitrary code"):
        load_backbone(path)
    assert not target.exists()


# --------------------------------------------------------------------------------------------------------- data
def decompression_bomb(path: Path, side: int = 14_000) -> Path:
    """A PNG whose header claims side x side pixels (PIL refuses it before decoding anything)."""
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_a_data_problem_naming_the_file(tmp_path):
    bomb = decompression_bomb(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png: image is too large to decode safely") as info:
        load_rgb(bomb)
    assert "fix: replace it with a normal-size image" in str(info.value)


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    """A private demo dataset (the real VTAB-1k txt layout) to damage."""
    make_demo_dataset(tmp_path / "data" / "demo")
    return tmp_path / "data"


def on_data(cfg, data_dir: Path):
    with open_dict(cfg):
        cfg.paths.data_dir = str(data_dir)
    return cfg


def test_decompression_bomb_in_a_split_stops_training_before_results(make_cfg, tmp_path, demo_copy, capsys):
    decompression_bomb(demo_copy / "demo" / "images" / "test" / "000003.png")
    lines = (demo_copy / "demo" / "test.txt").read_text().splitlines()
    lines[3] = "images/test/000003.png " + lines[3].split()[1]
    (demo_copy / "demo" / "test.txt").write_text("\n".join(lines) + "\n")
    cfg = on_data(make_cfg(*FAST), demo_copy)  # the decoded-image cache is filled before anything is written
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert "000003.png: image is too large to decode safely" in stderr and "Traceback" not in stderr
    assert read_results(tmp_path / "run") is None


def test_duplicate_lines_in_a_split_file_are_reported(tmp_path):
    (tmp_path / "train800.txt").write_text("images/a.jpg 0\nimages/b.jpg 1\nimages/a.jpg 0\n")
    images, problems = read_txt_split(tmp_path, "train800")
    assert len(images) == 2
    assert [p.where for p in problems] == [f"{tmp_path / 'train800.txt'}:3"]
    assert "duplicate entry 'images/a.jpg' (first listed on line 1)" in problems[0].message


def test_duplicate_lines_stop_training_and_data_check(make_cfg, demo_copy, tmp_path, capsys):
    from peftlab.data.check import main as check_main

    split = demo_copy / "demo" / "train800val200.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join([lines[0], *lines[:-1]]) + "\n")  # same count, line 1 repeated
    assert check_main(["data=demo", f"paths.data_dir={demo_copy}", "--no-decode"]) == 1
    assert "duplicate entry" in capsys.readouterr().out
    cfg = on_data(make_cfg(*FAST), demo_copy)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2 and f"{split}:2: duplicate entry" in stderr
    assert read_results(tmp_path / "run") is None


# ------------------------------------------------------------------------------------------ export, disks, modes
def run_checkpoint(make_cfg, path: Path, method: str) -> Path:
    """A peftlab checkpoint of an untrained ``method`` run (its config and trainable tensors)."""
    from omegaconf import OmegaConf

    from peftlab.build import build_method, build_model
    from peftlab.methods.state import trainable_state_dict
    from peftlab.module import PREFIX

    cfg = make_cfg(f"method={method}", *FAST)
    state = {PREFIX + k: v for k, v in trainable_state_dict(build_model(cfg, build_method(cfg))).items()}
    torch.save({"state_dict": state, "peftlab": {"config": OmegaConf.to_container(cfg, resolve=True)}}, path)
    return path


def test_exporting_a_non_mergeable_method_is_one_line(make_cfg, tmp_path, capsys):
    from omegaconf import OmegaConf

    from peftlab.export import export

    ckpt = run_checkpoint(make_cfg, tmp_path / "vpt.ckpt", "vpt_shallow")
    cfg = OmegaConf.create({"ckpt_path": str(ckpt), "out": str(tmp_path / "m.safetensors"), "merge": True})
    cfg.overrides = []
    code, stderr = cli_outcome(lambda: export(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, "cannot be merged", "merge=false")
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_full_or_read_only_disk_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch, error):
    def refuse(*args, **kwargs):
        raise OSError(error, os.strerror(error), str(tmp_path / "out" / ".results.json.tmp"))

    monkeypatch.setattr("peftlab.results.os.replace", refuse)
    code, stderr = cli_outcome(lambda: RunRecord().save(tmp_path / "out"), capsys)
    assert code == 2
    assert_one_error_line(stderr, f"cannot write ({tmp_path / 'out'}", os.strerror(error))
    assert left_on_disk(tmp_path / "out") == [], "no temp file left behind"


def test_read_only_run_dir_is_one_line(make_cfg, tmp_path, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "run" / LOCK_FILE))

    monkeypatch.setattr("peftlab.lifecycle.os.open", read_only)
    cfg = make_cfg(*FAST)
    code, stderr = cli_outcome(lambda: train(cfg), capsys)
    assert code == 2
    assert_one_error_line(stderr, str(tmp_path / "run"), "read-only", "hydra.run.dir")


def test_written_files_respect_the_umask(tmp_path):
    from peftlab.export import atomic_save_file

    old = os.umask(0o022)
    try:
        RunRecord().save(tmp_path)
        atomic_write_text(tmp_path / "eval_results.json", "{}")
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
        atomic_save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors", {})
    finally:
        os.umask(old)
    for name in (RESULTS_FILE, "eval_results.json", "last.ckpt", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ------------------------------------------------------------------------------- processes: CLI, sweep, signals
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "peftlab.train", *args]


def test_cli_exit_code_for_a_bad_option(cli_env, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(cli("optim.lr=-1", f"hydra.run.dir={run_dir}"), env=cli_env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "optim.lr=-1 is invalid")
    assert not (run_dir / RESULTS_FILE).exists()


@pytest.mark.slow
def test_sweep_goes_on_after_a_bad_job_and_exits_non_zero(cli_env, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "optim.lr=-1,0.001", "debug=fdr", *FAST, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cli(*args), env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: optim.lr=-1 is invalid" in proc.stderr
    assert f"1 sweep job(s) failed:\n  {sweep / '0'}: ConfigError: optim.lr=-1 is invalid" in proc.stderr
    failed, second = read_results(sweep / "0"), read_results(sweep / "1")
    assert failed["status"] == "failed" and "optim.lr=-1" in failed["error"] and failed["reported"]["value"] is None
    assert second is not None and second["status"] == "incomplete", "job 1 ran (fast_dev_run: never complete)"


def start_and_signal(cli_env, run_dir: Path, signum: int, epochs: int = 3) -> tuple[subprocess.Popen, str, float]:
    """Start a run, wait until its first epoch ended, send ``signum`` in the second; returns the output and the
    time the signal was sent."""
    args = [*FAST, f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cli(*args), env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in proc.stdout:
        output.append(line)
        if f"epoch 1/{epochs}" in line:
            break
    sent = time.time()
    proc.send_signal(signum)
    output.append(proc.stdout.read())
    proc.wait(timeout=300)
    return proc, "".join(output), sent


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_last_checkpoint_and_records_interrupted(cli_env, tmp_path, signum, code):
    run_dir = tmp_path / "run"
    proc, output, sent = start_and_signal(cli_env, run_dir, signum)
    assert proc.returncode == code, output[-3000:]
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: last.ckpt is kept; rerun the same command to resume" in output
    saved = read_results(run_dir)
    assert saved["status"] == "interrupted" and name in saved["error"] and saved["reported"]["value"] is None
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.stat().st_mtime >= sent - 0.5, "last.ckpt is saved at the signal"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] < 3
    assert "Traceback" not in output


@pytest.mark.slow
def test_interrupted_run_resumes_to_complete(cli_env, tmp_path):
    run_dir = tmp_path / "run"
    proc, output, _ = start_and_signal(cli_env, run_dir, signal.SIGTERM, epochs=2)
    assert proc.returncode == 143, output[-3000:]
    resumed = subprocess.run(
        cli(*FAST, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"),
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = read_results(run_dir)
    assert results["status"] == "complete" and results["train_info"]["epochs"] == 2
    assert json.loads((run_dir / RESULTS_FILE).read_text())["reported"]["value"] is not None


def test_payload_class_is_picklable_for_the_tests(tmp_path):
    """Guards the tests above: without weights_only the payload really does write its file."""
    target = tmp_path / "pwned.txt"
    pickle.loads(pickle.dumps(WritesAFile(target)))
    assert target.read_text() == "pwned"
