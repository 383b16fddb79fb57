"""OFT: parameter count, z = (R W⁰)ᵀ x with dense Cayley blocks on separate q/k/v weights, orthogonality, bf16
autocast stability, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods import functional
from peftlab.methods.oft import OftConfig
from tests.helpers import (
    ATOL,
    HEAD_100,
    RTOL,
    assert_invalid,
    count_on,
    images,
    method_yaml,
    perturb,
    tiny_vit,
    with_qv_weights,
)
from tests.methods.equations import oft_rotated

#: No published OFT count for ViT-B/16 on VTAB-1k/FGVC was available (the OFT paper evaluates Stable Diffusion).
#: Derived for the default (W_q, W_v of 12 blocks, 32×32 blocks): 768 / 32 = 24 blocks per matrix, each with
#: 32 · 31 / 2 = 496 free entries of a skew-symmetric Q: 12 · 2 · 24 · 496.
OFT_VIT_B16 = 285_696
#: r = 4 blocks of 192: 12 · 2 · 4 · (192 · 191 / 2)
OFT_R4_VIT_B16 = 1_760_256


def test_parameter_count_on_vit_b16():
    assert count_on(OftConfig())["trainable"] == OFT_VIT_B16
    assert count_on(OftConfig(), num_classes=100)["trainable"] == OFT_VIT_B16 + HEAD_100
    assert count_on(OftConfig(block_size=None, r=4))["trainable"] == OFT_R4_VIT_B16


@pytest.mark.parametrize("block", [16, 32])
def test_forward_equals_formula_on_separate_q_and_v(block):
    base = tiny_vit()
    model = OftConfig(block_size=block, train_head=False).apply(copy.deepcopy(base)).eval()
    perturb(model)
    reference = with_qv_weights(base, model, lambda w, layer: oft_rotated(w, layer, block))
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=RTOL)


def test_rotation_acts_on_the_input_side():
    model = OftConfig(targets=["mlp.fc2"], block_size=32).apply(tiny_vit())  # fc2: 128 -> 64
    perturb(model)
    layer = model.blocks[0].mlp.fc2
    x = torch.randn(3, 128)
    rotation = torch.block_diag(*layer.rotation().detach())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x @ rotation), atol=ATOL, rtol=RTOL)


def test_identity_at_init_and_orthogonal_after_perturbation():
    model = OftConfig().apply(tiny_vit())
    layer = model.blocks[0].attn.qkv.parts["q"]
    assert layer.oft_skew.shape == (2, 32 * 31 // 2)
    assert torch.equal(layer.rotation(), torch.eye(32).expand(2, 32, 32))
    perturb(model, scale=1.0)
    rotation = layer.rotation().detach()
    eye = torch.eye(32).expand_as(rotation)
    torch.testing.assert_close(rotation.transpose(-1, -2) @ rotation, eye, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(rotation, eye, atol=1e-2)


@pytest.mark.float32
def test_cayley_stays_float32_and_orthogonal_under_bf16_autocast():
    skew = functional.skew_symmetric(torch.randn(4, 32 * 31 // 2, generator=torch.Generator().manual_seed(0)), 32)
    eye = torch.eye(32).expand(4, 32, 32)
    for generator in (skew, skew.bfloat16()):  # bf16 parameters are upcast before the inverse
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rotation = functional.cayley(generator)
        assert rotation.dtype == torch.float32
        torch.testing.assert_close(rotation.transpose(-1, -2) @ rotation, eye)  # torch's float32 tolerance


@pytest.mark.float32
def test_bf16_autocast_output_is_finite_and_close_to_fp32():
    model = OftConfig().apply(tiny_vit()).eval()
    perturb(model, scale=0.5)
    x = images()
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"block_size": 16, "r": 4}, "set exactly one"),
        ({"block_size": None}, "set exactly one"),
        ({"block_size": 0}, "block_size=0 is invalid: expected an integer >= 1"),
        ({"block_size": None, "r": 1.5}, "r=1.5 is invalid: expected an integer >= 1"),
    ],
)
def test_invalid_options_name_the_option(options, message):
    assert_invalid(OftConfig, options, message)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"block_size": 48}, "block_size=48 must divide in_features=64 of 'blocks.0.attn.q'"),
        ({"block_size": None, "r": 3}, "r=3 must divide in_features=64 of 'blocks.0.attn.q'"),
    ],
)
def test_block_size_must_divide_the_layer_width(options, message):
    with pytest.raises(ValueError, match=message):
        OftConfig(**options).apply(tiny_vit())


def test_non_linear_target_is_refused_with_its_name():
    with pytest.raises(TypeError, match="'blocks.1.norm2' is a LayerNorm"):
        OftConfig(targets=["blocks.1.norm2"]).apply(tiny_vit())


def test_yaml_gives_the_default_config():
    assert method_yaml("oft") == OftConfig()
