"""Smoke tests of ``experiments/bench.py`` on a 2-block ViT: structure of the table and the JSON, ratios derived from
the measured numbers, no silent overwrite, and the RLRR/HTA micro-benchmark. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import EXPERIMENTS, load_experiment

TINY = ["--backbone", "vit_tiny", "--device", "cpu", "--depth", "2", "--image-size", "32", "--batch", "2"]
ONE_ROUND = ["--repeats", "1", "--warmup", "1", "--steps", "1", "--quiet"]
METHODS = ("lora", "adapter")  # one mergeable, one not
VARIANT = "lora[rank=2]"


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench")


@pytest.fixture(scope="module")
def report(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.main(
        [
            *TINY,
            *ONE_ROUND,
            "--methods",
            ",".join(METHODS),
            "--variant",
            "lora:rank=2",
            "--no-data",
            "--before",
            "HEAD",
            "--out-dir",
            str(out),
        ]
    )


def rows_by_name(report) -> dict:
    return {row["name"]: row for row in report["rows"]}


def test_writes_markdown_and_json_named_by_device_backbone_dtype(report):
    markdown, json_file = Path(report["files"]["markdown"]), Path(report["files"]["json"])
    assert markdown.name == "cpu-vit_tiny-fp32.md" and json_file.name == "cpu-vit_tiny-fp32.json"
    assert markdown.read_text() == report["markdown"]
    stored = json.loads(json_file.read_text())
    before = [f"{m}@before" for m in METHODS]
    assert [row["name"] for row in stored["rows"]] == ["frozen", "full", *METHODS, VARIANT, *before]
    setup = stored["setup"]
    for key in ("device", "device_name", "dtype", "batch", "image_size", "repeats", "warmup", "torch_threads"):
        assert key in setup
    assert (setup["device"], setup["dtype"], setup["batch"], setup["image_size"]) == ("cpu", "fp32", 2, 32)
    assert {"torch", "timm", "python"} <= set(stored["versions"])
    assert set(stored["references"]) == {"frozen", "full", "plain"}


def test_markdown_has_one_table_row_per_candidate_with_the_target_columns(report, bench):
    lines = report["markdown"].split("## Before")[0].splitlines()  # the main table (the pairs table follows)
    header = next(line for line in lines if line.startswith("| method |"))
    assert header == "| " + " | ".join(bench.BENCH_HEADER) + " |"
    for name in ("frozen", "full", *METHODS, VARIANT, *(f"{m}@before" for m in METHODS)):
        assert sum(line.startswith(f"| {name} |") for line in lines) == 1


def test_ratios_come_from_the_measured_numbers(report):
    rows = rows_by_name(report)
    frozen, full = rows["frozen"], rows["full"]
    batch = report["setup"]["batch"]
    for row in rows.values():
        assert row["train_images_per_s"] == pytest.approx(batch / row["train_step_s"])
        assert row["train_vs_frozen"] == pytest.approx(row["train_step_s"] / frozen["train_step_s"])
        assert row["train_vs_full"] == pytest.approx(row["train_step_s"] / full["train_step_s"])
        assert row["memory_vs_full"] == pytest.approx(row["memory_bytes"] / full["memory_bytes"])
        assert row["infer_vs_plain"] == pytest.approx(row["infer_images_per_s"] / report["plain_infer_images_per_s"])
    assert frozen["train_vs_frozen"] == full["train_vs_full"] == 1.0


def test_memory_on_cpu_is_the_documented_estimate(report):
    for row in report["rows"]:
        assert row["cuda_peak_bytes"] is None
        assert row["memory_bytes"] == row["estimated_bytes"]
        assert row["estimated_bytes"] == row["static_bytes"] + row["grad_bytes"] + row["saved_activation_bytes"]
        assert row["saved_activation_bytes"] > 0
    rows = rows_by_name(report)
    assert rows["full"]["grad_bytes"] > rows["lora"]["grad_bytes"] > 0


def test_merged_inference_only_for_mergeable_methods(report):
    rows = rows_by_name(report)
    lora, adapter = rows["lora"], rows["adapter"]
    assert lora["mergeable"] is True and adapter["mergeable"] is False
    assert lora["merged_vs_plain"] == pytest.approx(lora["merged_images_per_s"] / report["plain_infer_images_per_s"])
    assert adapter["merged_images_per_s"] is None and adapter["merged_vs_plain"] is None
    assert set(lora["targets"]) == {
        "train_vs_frozen",
        "train_vs_floor",
        "memory_vs_full",
        "ops_vs_frozen",
        "merged_vs_plain",
    }
    assert all(isinstance(v, bool) for v in lora["targets"].values())
    assert all(v is None for v in adapter["targets"].values())
    assert all(v is None for v in rows["full"]["targets"].values())


def test_targets_follow_the_thresholds(bench):
    assert bench.check_target("train_vs_frozen", 1.15) and not bench.check_target("train_vs_frozen", 1.16)
    assert bench.check_target("merged_vs_plain", 0.98) and not bench.check_target("merged_vs_plain", 0.97)
    assert bench.check_target("memory_vs_full", None) is None


def test_end_to_end_estimate_uses_the_measured_throughput(report):
    e2e = report["end_to_end"]
    assert (e2e["epochs"], e2e["train_size"], e2e["test_size"], e2e["tasks"]) == (100, 1000, 10_000, 19)
    for row in report["rows"]:
        expected = 100 * 1000 / row["train_images_per_s"] + 10_000 / row["infer_images_per_s"]
        assert row["e2e_task_s"] == pytest.approx(expected)
        assert row["e2e_benchmark_s"] == pytest.approx(19 * expected)


def test_existing_results_are_not_overwritten_without_force(bench, tmp_path):
    (tmp_path / "cpu-x-fp32.json").write_text("{}")
    markdown, json_file = bench.output_paths(tmp_path, "cpu-x-fp32", force=False)
    assert json_file.name.startswith("cpu-x-fp32-") and not json_file.exists() and markdown.stem == json_file.stem
    assert bench.output_paths(tmp_path, "cpu-x-fp32", force=True)[1] == tmp_path / "cpu-x-fp32.json"
    markdown.write_text("taken")
    again = bench.output_paths(tmp_path, "cpu-x-fp32", force=False)[0]
    assert again != markdown and not again.exists()


def test_variants_are_extra_candidates_with_their_options(report, bench):
    rows = rows_by_name(report)
    assert rows[VARIANT]["role"] == "method" and rows[VARIANT]["mergeable"] is True
    assert 0 < rows[VARIANT]["trainable_params_without_head"] < rows["lora"]["trainable_params_without_head"]
    assert bench.parse_variant("hta:compute=weight,rank=0") == (
        "hta[compute=weight,rank=0]",
        "hta",
        {"compute": "weight", "rank": 0},
    )
    for bad in ("nope:rank=1", "lora", "lora:rank"):
        with pytest.raises(SystemExit, match="--variant"):
            bench.parse_variant(bad)


def test_method_selection_rejects_unknown_names_and_keeps_references_apart(bench):
    assert bench.resolve_methods("full,lora,lora") == ["lora"]
    assert "full" not in bench.resolve_methods("all") and "rlrr" in bench.resolve_methods("all")
    with pytest.raises(SystemExit, match="nope"):
        bench.resolve_methods("lora,nope")


def test_micro_benchmark_compares_both_forms_of_rlrr_and_hta(bench, tmp_path):
    micro = ["--micro", "--micro-batch", "2", "--micro-tokens", "5", "--micro-dim", "16"]
    report = bench.main([*micro, *ONE_ROUND, "--device", "cpu", "--out-dir", str(tmp_path)])
    assert Path(report["files"]["json"]).name == "micro-cpu-fp32.json"
    variants = {(row["shape"], row["variant"]) for row in report["rows"]}
    assert len(variants) == 2 * 6 and ("16->64", "rlrr activation form") in variants
    for shape, methods in report["forms_max_abs_difference"].items():
        assert methods["rlrr"] < 1e-4 and methods["hta"] < 1e-4, shape
    for row in report["rows"]:
        frozen = next(r for r in report["rows"] if r["shape"] == row["shape"] and r["variant"].startswith("frozen"))
        assert row["vs_frozen"] == pytest.approx(row["seconds"] / frozen["seconds"])
    advice = report["recommendations"]["rlrr"]["16->16"]
    assert advice["faster"] in {"weight", "activation"} and advice["weight_over_activation"] > 0


def test_frozen_limit_needs_every_activation_gradient_and_no_block_weight_gradient(bench):
    args = bench.parse_args([*TINY, "--quiet"])
    args.image_size = 32
    model = bench.make_frozen_limit(bench.build_backbone(args))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias", "pos_embed"}  # pos_embed: the input gradient, no weight
    seen = {}
    model.blocks[0].register_forward_hook(lambda module, inputs, output: seen.update(first_block=output))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert seen["first_block"].requires_grad
    assert all(p.grad is None for name, p in model.named_parameters() if name not in trainable)


def test_floor_and_dispatch_columns_come_from_the_math_and_the_counts(report):
    rows = rows_by_name(report)
    frozen = rows["frozen"]
    assert frozen["floor_vs_frozen"] == 1.0 and frozen["ops_vs_frozen"] == 1.0
    assert rows["full"]["floor_vs_frozen"] > rows["lora"]["floor_vs_frozen"] > 1.0
    for row in report["rows"]:
        assert row["train_vs_floor"] == pytest.approx(row["train_vs_frozen"] / row["floor_vs_frozen"])
        assert row["ops_vs_frozen"] == pytest.approx(row["ops_kernel"] / frozen["ops_kernel"])
        assert 0 < row["ops_kernel"] < row["ops_all"]
        assert row["ops_vs_floor"] == pytest.approx(row["ops_kernel"] / row["ops_floor"])
    assert frozen["ops_floor_vs_frozen"] == 1.0 and rows["lora"]["ops_floor_vs_frozen"] > 1.0


def test_before_candidates_run_the_old_code_and_pair_with_the_new(report):
    rows = rows_by_name(report)
    assert rows["lora@before"]["role"] == "before"
    assert rows["lora@before"]["trainable_params"] == rows["lora"]["trainable_params"]
    assert type(sys.modules["peftlab_before.methods.lora"].LoraLayer).__module__ != "peftlab.methods.lora"
    pairs = {pair["method"]: pair for pair in report["before_after"]}
    assert set(pairs) == set(METHODS)
    assert pairs["lora"]["train_vs_frozen_after"] == rows["lora"]["train_vs_frozen"]
    assert pairs["lora"]["train_vs_frozen_before"] == rows["lora@before"]["train_vs_frozen"]
    assert "## Before → after" in report["markdown"]


def test_bench_gpu_stops_with_one_error_line_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make bench-gpu would run for minutes")
    script = EXPERIMENTS / "bench_gpu.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: make bench-gpu needs a CUDA device") and proc.stderr.count("\n") == 1


def test_gpu_check_stops_with_one_error_line_when_peftlabs_dependencies_are_missing(tmp_path):
    proc = subprocess.run(
        ["bash", str(EXPERIMENTS / "gpu_check.sh"), str(tmp_path)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": "/bin/false"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: /bin/false cannot import peftlab's dependencies")
    assert proc.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())  # stopped before any stage


def test_gpu_check_runs_only_the_stages_asked_for(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "STAGES": ""}
    proc = subprocess.run(
        ["bash", str(EXPERIMENTS / "gpu_check.sh"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "== " not in proc.stdout  # no stage ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env.log"]


def test_timed_calls_run_with_the_garbage_collector_paused(bench):
    import gc

    seen = []
    bench.seconds_per_call(lambda: seen.append(gc.isenabled()), 3, torch.device("cpu"), "wall")
    assert seen == [False, False, False] and gc.isenabled()
