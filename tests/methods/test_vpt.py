"""VPT-Shallow / VPT-Deep: counts, the token sequence of §3.2 written out on timm's own components, pooling."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from peftlab.methods import NotMergeableError
from peftlab.methods.inject import merge_and_unload
from peftlab.methods.layers import SHARED
from peftlab.methods.vpt import PromptedBlocks, VptConfig, VptDeepConfig
from tests.helpers import (
    ATOL,
    HEAD_100,
    RTOL,
    assert_invalid,
    assert_train_dropout,
    count_on,
    images,
    perturb,
    tiny_vit,
)
from tests.methods.equations import vpt_forward

# VPT §3.2: shallow p·D, deep N·p·D parameters (D = 768, N = 12 on ViT-B/16). The published rows (VTAB-1k 0.11 M /
# 0.60 M, FGVC 0.25 M / 0.85 M in RLRR-P Tables 2-3) average per-task prompt lengths and heads, so they cannot be
# reproduced without those lengths; the formula is asserted for p = 50: 50·768 and 12·50·768.
SHALLOW_P50 = 38_400
DEEP_P50 = 460_800


@pytest.mark.parametrize("config, expected", [(VptConfig, SHALLOW_P50), (VptDeepConfig, DEEP_P50)])
def test_parameter_count_vit_b16(config, expected):
    assert count_on(config(num_prompts=50))["trainable"] == expected
    assert count_on(config(num_prompts=50), num_classes=100)["trainable"] == expected + HEAD_100


@pytest.mark.parametrize("config", [VptConfig, VptDeepConfig], ids=["shallow", "deep"])
@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_forward_matches_the_prompted_token_sequence(config, global_pool):
    base = tiny_vit(global_pool=global_pool)
    model = config(num_prompts=3).apply(copy.deepcopy(base)).eval()
    perturb(model, scale=0.5)
    base.head.load_state_dict(model.head.state_dict())  # the head trains too
    prompts = getattr(model, SHARED).vpt_prompts
    assert prompts.shape == ((2, 3, 64) if config.deep else (1, 3, 64))
    x = images()
    with torch.no_grad():
        expected = vpt_forward(base, prompts, config.deep, x)
        torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=RTOL)
        assert model.forward_features(x).shape == base.forward_features(x).shape


def test_deep_and_shallow_differ_and_neither_is_identity():
    base = tiny_vit()
    x = images()
    with torch.no_grad():
        outputs = [cfg().apply(copy.deepcopy(base)).eval()(x) for cfg in (VptConfig, VptDeepConfig)]
        reference = base(x)
    assert not torch.allclose(outputs[0], reference, atol=1e-4)
    assert not torch.allclose(outputs[1], reference, atol=1e-4)
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_prompt_init_is_xavier_with_patch_fan_in():
    """VPT's official init: uniform(±√(6 / (3·patch_area + D))); tiny ViT: patch 8, D 64."""
    model = VptDeepConfig(num_prompts=50).apply(tiny_vit())
    prompts = getattr(model, SHARED).vpt_prompts
    bound = math.sqrt(6 / (3 * 8 * 8 + 64))
    assert prompts.abs().max() <= bound
    assert prompts.abs().max() > 0.9 * bound


def test_prompt_dropout_only_in_training():
    assert_train_dropout(VptConfig(dropout=0.5).apply(tiny_vit()))


def test_merge_is_refused_with_a_clear_message():
    model = VptDeepConfig().apply(tiny_vit())
    assert isinstance(model.blocks, PromptedBlocks)
    with pytest.raises(NotMergeableError, match="PromptedBlocks.*extra tokens"):
        merge_and_unload(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_prompts": 0}, "num_prompts=0.*integer >= 1"),
        ({"num_prompts": 2.0}, "num_prompts=2.0.*integer >= 1"),
        ({"dropout": -0.1}, "dropout=-0.1"),
        ({"dropout": 1}, r"dropout=1.*\[0, 1\)"),
    ],
)
def test_invalid_options_name_the_option(kwargs, match):
    assert_invalid(VptDeepConfig, kwargs, match)


def test_target_must_be_the_blocks_sequential():
    with pytest.raises(TypeError, match="Sequential of transformer blocks.*'blocks.0' is a Block"):
        VptConfig(targets=["blocks.0"]).apply(tiny_vit())
