"""PIL charts and the per-layer scale plot from a synthetic Lightning-style checkpoint."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from peftlab import plots


def assert_png(path, min_width=400, min_height=300) -> Image.Image:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= min_height
        colors = {color for _, color in image.convert("RGB").getcolors(1 << 20)}
    assert plots.PALETTE[0] in colors and plots.PALETTE[1] in colors  # both series were drawn
    return image


def test_nice_ticks_are_round_and_cover_the_range():
    assert plots.nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert plots.nice_ticks(0.0, 0.37) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_bar_chart_writes_a_png_with_every_series(tmp_path):
    series = {"ours": [75.6, None, 57.0], "paper": [75.0, 92.4, 56.0]}
    path = plots.bar_chart(["Cifar100", "Caltech101", "Sun397"], series, tmp_path / "sub" / "bars.png",
                           title="natural", ylabel="accuracy (%)", errors={"ours": [0.3, None, 1.0]},
                           ylim=(0, 100))  # fmt: skip
    assert_png(path)


def test_line_chart_with_log_axis_skips_non_positive_values(tmp_path):
    series = {"rlrr_scale_out": [1.0, 1.5, 2.0], "hta_d": [0.0, 0.01, 0.1]}
    assert_png(plots.line_chart([0, 1, 2], series, tmp_path / "lines.png", log_y=True))


def synthetic_state_dict() -> dict[str, torch.Tensor]:
    return {
        "model.blocks.0.attn.qkv.parts.q.rlrr_scale_out": torch.full((4,), 2.0),
        "model.blocks.0.attn.qkv.parts.k.rlrr_scale_out": torch.full((4,), -1.0),
        "model.blocks.1.attn.qkv.parts.q.rlrr_scale_out": torch.full((2, 2), 3.0),
        "model.blocks.1.attn.proj.hta_d": torch.tensor([0.5, -0.5]),
        "model.blocks.10.attn.proj.hta_d": torch.tensor([0.25]),
        "model.blocks.1.mlp.fc1.step": torch.tensor([7]),  # integer: not a learned scale
        "model.head.weight": torch.ones(3, 4),  # outside the blocks
    }


def test_layer_scale_magnitudes_group_by_block_and_parameter_kind():
    magnitudes = plots.layer_scale_magnitudes(synthetic_state_dict())
    assert magnitudes == {
        "hta_d": {1: pytest.approx(0.5), 10: pytest.approx(0.25)},
        "rlrr_scale_out": {0: pytest.approx((4 * 2.0 + 4 * 1.0) / 8), 1: pytest.approx(3.0)},
    }
    by_module = plots.layer_scale_magnitudes(synthetic_state_dict(), group_by="module", match="scale")
    assert by_module == {
        "attn.qkv.parts.k.rlrr_scale_out": {0: pytest.approx(1.0)},
        "attn.qkv.parts.q.rlrr_scale_out": {0: pytest.approx(2.0), 1: pytest.approx(3.0)},
    }
    with pytest.raises(ValueError, match="group_by"):
        plots.layer_scale_magnitudes({}, group_by="layer")


def test_layer_scales_cli_reads_a_lightning_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 96, "state_dict": synthetic_state_dict()}, checkpoint)
    out = tmp_path / "scales.png"
    assert plots.main(["layer-scales", str(checkpoint), "--out", str(out)]) == 0
    assert_png(out)
    printed = capsys.readouterr().out
    assert "rlrr_scale_out" in printed and "1.5000" in printed and f"wrote {out}" in printed


def test_layer_scales_cli_fails_clearly_without_block_tensors(tmp_path, capsys):
    checkpoint = tmp_path / "head_only.ckpt"
    torch.save({"state_dict": {"model.head.weight": torch.ones(2, 2)}}, checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        plots.main(["layer-scales", str(checkpoint), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 1
    assert "no floating-point tensors under 'blocks.<i>.'" in capsys.readouterr().err
