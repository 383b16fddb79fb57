"""matplotlib charts and the per-layer change-from-init plot from Lightning-style checkpoints."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from peftlab import plots
from peftlab.build import build_method, build_model
from peftlab.methods.state import trainable_state_dict
from peftlab.module import PREFIX


def assert_png(path, series_count=2, min_width=400, min_height=300) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= min_height
        colors = {color for _, color in image.convert("RGB").getcolors(1 << 22)}
    for i in range(series_count):  # every series was drawn in its own colour
        assert plots.PALETTE[i] in colors, f"series {i} colour {plots.PALETTE[i]} missing"


def test_bar_chart_writes_a_png_with_every_series(tmp_path):
    series = {"ours": [75.6, None, 57.0], "paper": [75.0, 92.4, 56.0]}
    path = plots.bar_chart(["Cifar100", "Caltech101", "Sun397"], series, tmp_path / "sub" / "bars.png",
                           title="natural", ylabel="accuracy (%)", errors={"ours": [0.3, None, 1.0]},
                           ylim=(0, 100))  # fmt: skip
    assert path == tmp_path / "sub" / "bars.png"
    assert_png(path)


def test_line_chart_with_log_axis_skips_non_positive_values(tmp_path):
    series = {"rlrr_scale_out": [1.0, 1.5, 2.0], "hta_diag": [0.0, 0.01, 0.1]}
    assert_png(plots.line_chart([0, 1, 2], series, tmp_path / "lines.png", log_y=True))


def synthetic_state_dict() -> dict[str, torch.Tensor]:
    return {
        "model.blocks.0.attn.qkv.parts.q.rlrr_scale_out": torch.full((4,), 2.0),
        "model.blocks.0.attn.qkv.parts.k.rlrr_scale_out": torch.full((4,), -1.0),
        "model.blocks.1.attn.qkv.parts.q.rlrr_scale_out": torch.full((2, 2), 3.0),
        "model.blocks.1.attn.proj.hta_diag": torch.tensor([0.5, -0.5]),
        "model.blocks.10.attn.proj.hta_diag": torch.tensor([0.25]),
        "model.blocks.1.mlp.fc1.step": torch.tensor([7]),  # integer: not a learned scale
        "model.head.weight": torch.ones(3, 4),  # outside the blocks
    }


def test_layer_scale_magnitudes_group_by_block_and_parameter_kind():
    magnitudes = plots.layer_scale_magnitudes(synthetic_state_dict())
    assert magnitudes == {
        "hta_diag": {1: pytest.approx(0.5), 10: pytest.approx(0.25)},
        "rlrr_scale_out": {0: pytest.approx((4 * 2.0 + 4 * 1.0) / 8), 1: pytest.approx(3.0)},
    }
    by_module = plots.layer_scale_magnitudes(synthetic_state_dict(), group_by="module", match="scale")
    assert by_module == {
        "attn.qkv.parts.k.rlrr_scale_out": {0: pytest.approx(1.0)},
        "attn.qkv.parts.q.rlrr_scale_out": {0: pytest.approx(2.0), 1: pytest.approx(3.0)},
    }
    with pytest.raises(ValueError, match="group_by"):
        plots.layer_scale_magnitudes({}, group_by="layer")


def test_deviation_from_init_makes_scales_near_one_comparable_to_shifts_near_zero():
    state = {
        "model.blocks.0.norm1.ssf_scale": torch.tensor([1.1, 0.9]),
        "model.blocks.0.norm1.ssf_shift": torch.tensor([0.1, -0.1]),
    }
    init = {"model.blocks.0.norm1.ssf_scale": torch.ones(2), "model.blocks.0.norm1.ssf_shift": torch.zeros(2)}
    magnitudes = plots.layer_scale_magnitudes(state, init=init)
    assert magnitudes == {"ssf_scale": {0: pytest.approx(0.1)}, "ssf_shift": {0: pytest.approx(0.1)}}


def test_layer_scales_cli_with_an_init_checkpoint(tmp_path, capsys):
    checkpoint, start = tmp_path / "last.ckpt", tmp_path / "init.ckpt"
    torch.save({"epoch": 3, "global_step": 96, "state_dict": synthetic_state_dict()}, checkpoint)
    torch.save({"state_dict": {k: torch.zeros_like(v) for k, v in synthetic_state_dict().items()}}, start)
    out = tmp_path / "scales.png"
    assert plots.main(["layer-scales", str(checkpoint), "--out", str(out), "--init", str(start)]) == 0
    assert_png(out)
    printed = capsys.readouterr().out
    assert "rlrr_scale_out" in printed and "1.5000" in printed and f"wrote {out}" in printed


def trained_checkpoint(make_cfg, tmp_path, shift: float):
    """A checkpoint as training writes it: trainable tensors moved by ``shift`` from the seeded init, plus the
    resolved run config."""
    cfg = make_cfg("method=rlrr", "+backbone.model_kwargs.depth=2")
    model = build_model(cfg, build_method(cfg))
    state = {PREFIX + k: v + shift for k, v in trainable_state_dict(model).items()}
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "peftlab": {"config": OmegaConf.to_container(cfg, resolve=True)}}, path)
    return path


def test_layer_scales_rebuild_the_runs_own_init_and_name_the_run(make_cfg, tmp_path):
    checkpoint = trained_checkpoint(make_cfg, tmp_path, shift=0.25)
    magnitudes = plots.plot_layer_scales(checkpoint, tmp_path / "scales.png")
    assert set(magnitudes) == {"rlrr_scale_in", "rlrr_scale_out", "rlrr_shift", "ssf_scale", "ssf_shift"}
    assert all(v == pytest.approx(0.25) for per_block in magnitudes.values() for v in per_block.values())
    assert_png(tmp_path / "scales.png", series_count=5)
    payload = plots.load_checkpoint(checkpoint)
    assert plots.run_title(payload, checkpoint) == f"RLRR · {payload['peftlab']['config']['data']['task']} · run"


def test_layer_scales_cli_fails_clearly_without_block_tensors(tmp_path, capsys):
    checkpoint = tmp_path / "head_only.ckpt"
    torch.save({"state_dict": {"model.head.weight": torch.ones(2, 2)}}, checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        plots.main(["layer-scales", str(checkpoint), "--out", str(tmp_path / "x.png"), "--init", str(checkpoint)])
    assert exit_info.value.code == 2
    assert "no floating-point tensors under 'blocks.<i>.'" in capsys.readouterr().err


def test_layer_scales_cli_without_config_or_init_says_what_to_pass(tmp_path, capsys):
    checkpoint = tmp_path / "bare.ckpt"
    torch.save({"state_dict": synthetic_state_dict()}, checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        plots.main(["layer-scales", str(checkpoint), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: the checkpoint holds no run config" in err and "pass --init" in err
