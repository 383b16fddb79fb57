"""Adapter (sequential) and AdaptFormer (parallel): counts against the papers' tables, the formulas written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from peftlab.methods import NotMergeableError
from peftlab.methods.adapter import AdapterConfig, AdaptFormerConfig, BottleneckAdapter
from peftlab.methods.inject import merge_and_unload
from tests.helpers import ATOL, AVERAGE_HEAD, HEAD_100, RTOL, assert_invalid, count_on, images, perturb, tiny_vit
from tests.methods.equations import dense_mlp

# FacT Table 1 and HTA-P Table 1 (VTAB-1k, ViT-B/16): Adapter 0.16 M and AdaptFormer 0.16 M, head excluded, h = 8
# (FacT §4.1). Per block D·h + h + h·D + D = 6,144 + 8 + 6,144 + 768 = 13,064; × 12 blocks.
ADAPTER_H8 = 156_768
# RLRR-P Table 3 (FGVC) Adapter 0.41 M and RLRR-P Table 2 (VTAB, VPT-paper Adapter) 0.27 M, heads included. Derived:
# h = 12 (VPT's reduction factor 64) gives 12 · (768·12 + 12 + 12·768 + 768) = 230,544 without head.
ADAPTER_H12 = 230_544


@pytest.mark.parametrize("config", [AdapterConfig(), AdaptFormerConfig()], ids=["adapter", "adaptformer"])
def test_parameter_count_vit_b16(config):
    assert count_on(config)["trainable"] == ADAPTER_H8
    assert round(ADAPTER_H8 / 1e6, 2) == 0.16
    assert count_on(config, num_classes=100)["trainable"] == ADAPTER_H8 + HEAD_100


def test_parameter_count_of_the_vpt_paper_adapter():
    assert count_on(AdapterConfig(bottleneck=12))["trainable"] == ADAPTER_H12
    assert round((ADAPTER_H12 + AVERAGE_HEAD["fgvc"]) / 1e6, 2) == 0.41
    assert round((ADAPTER_H12 + AVERAGE_HEAD["vtab"]) / 1e6, 2) == 0.27


def randomised(config, seed: int = 3):
    base = tiny_vit()
    model = config.apply(tiny_vit())
    perturb(model, scale=0.5, seed=seed)
    return base, model


def test_sequential_forward_matches_formula():
    _, model = randomised(AdapterConfig())
    layer = model.blocks[1].mlp
    x = torch.randn(2, 5, 64)
    h = dense_mlp(layer.base_layer, x)
    down = F.gelu(h @ layer.adapter_down_weight.T + layer.adapter_down_bias)
    expected = h + down @ layer.adapter_up_weight.T + layer.adapter_up_bias
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=ATOL, rtol=RTOL)


def test_parallel_forward_matches_adaptformer_formula():
    _, model = randomised(AdaptFormerConfig())
    layer = model.blocks[0].mlp
    x = torch.randn(2, 5, 64)
    down = torch.relu(x @ layer.adapter_down_weight.T + layer.adapter_down_bias)
    expected = dense_mlp(layer.base_layer, x) + 0.1 * (down @ layer.adapter_up_weight.T + layer.adapter_up_bias)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=ATOL, rtol=RTOL)


def test_quick_gelu_and_scale_options():
    _, model = randomised(AdapterConfig(activation="quick_gelu", scale=0.5))
    layer = model.blocks[0].mlp
    x = torch.randn(2, 5, 64)
    h = dense_mlp(layer.base_layer, x)
    pre = h @ layer.adapter_down_weight.T + layer.adapter_down_bias
    expected = h + 0.5 * ((pre * torch.sigmoid(1.702 * pre)) @ layer.adapter_up_weight.T + layer.adapter_up_bias)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("config", [AdapterConfig(), AdaptFormerConfig()], ids=["adapter", "adaptformer"])
def test_zero_up_projection_starts_at_identity_but_trains(config):
    """Only ``up`` is zero: the branch is off at init, yet ``up`` gets a gradient at once (VPT's all-zero init would
    block it, FacT appendix B.5)."""
    model = config.apply(tiny_vit())
    layer = model.blocks[0].mlp
    assert isinstance(layer, BottleneckAdapter)
    assert torch.count_nonzero(layer.adapter_up_weight) == 0 and torch.count_nonzero(layer.adapter_down_weight) > 0
    model(images()).sum().backward()
    assert layer.adapter_up_weight.grad.abs().sum() > 0


def test_only_the_mlps_are_wrapped():
    model = AdapterConfig().apply(tiny_vit())
    wrapped = [n for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)]
    assert wrapped == ["blocks.0.mlp", "blocks.1.mlp"]


def test_merge_is_refused_with_a_clear_message():
    _, model = randomised(AdaptFormerConfig())
    with pytest.raises(NotMergeableError, match="BottleneckAdapter.*non-linear bottleneck"):
        merge_and_unload(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"style": "serial"}, "style='serial'.*sequential, parallel"),
        ({"bottleneck": 0}, "bottleneck=0.*integer >= 1"),
        ({"bottleneck": 8.5}, "bottleneck=8.5.*integer >= 1"),
        ({"scale": 0}, "scale=0.*> 0"),
        ({"activation": "tanh"}, "activation='tanh'.*gelu, quick_gelu, relu"),
        ({"dropout": 1.0}, r"dropout=1.0.*\[0, 1\)"),
    ],
)
def test_invalid_options_name_the_option(kwargs, match):
    assert_invalid(AdapterConfig, kwargs, match)


def test_target_must_be_an_mlp():
    with pytest.raises(TypeError, match="wraps MLP modules.*'blocks.0.attn.qkv' is a Linear"):
        AdapterConfig(targets=["attn.qkv"]).apply(tiny_vit())
