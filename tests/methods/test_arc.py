"""ARC: counts (docs/methods.md §4), the adapter as a dense matrix on the LayerNorm outputs, merge algebra, init."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from peftlab.methods.arc import ArcConfig, ArcLayer
from peftlab.methods.layers import SHARED
from tests.helpers import (
    ATOL,
    AVERAGE_HEAD,
    HEAD_100,
    RTOL,
    assert_invalid,
    assert_train_dropout,
    count_on,
    images,
    perturb,
    tiny_vit,
)
from tests.methods.equations import dense_adapter

# docs/methods.md §4 [D], = RLRR-P supplement Table 4's 2·(D·D' + (D' + D)·L): shared U_att, U_mlp (2·768·50) plus per
# block s_att, b_att, s_mlp, b_mlp (12·2·(50 + 768)). With the mean VTAB-1k head (38,045) 0.134 M, RLRR-P/HTA-P
# Table 1 report 0.13 M. (FGVC: 0.277 M with the mean head vs 0.25 M reported, unexplained.)
ARC = 96_432
# "ARC_att" (attention adapters only): 768·50 + 12·(50 + 768).
ARC_ATT = 48_216


def test_parameter_count_vit_b16():
    assert count_on(ArcConfig())["trainable"] == ARC
    assert count_on(ArcConfig(), num_classes=100)["trainable"] == ARC + HEAD_100 == 173_332
    assert round((ARC + AVERAGE_HEAD["vtab"]) / 1e6, 2) == 0.13
    assert count_on(ArcConfig(targets=["attn.qkv"]))["trainable"] == ARC_ATT


def randomised(config=None, seed: int = 3):
    base = tiny_vit()
    model = (config or ArcConfig()).apply(copy.deepcopy(base)).eval()
    perturb(model, scale=0.5, seed=seed)
    base.head.load_state_dict(model.head.state_dict())  # the head trains too
    return base, model


def test_forward_is_the_adapter_on_the_layernorm_outputs():
    """The base model with ``x ↦ x M_ℓ + b_ℓ`` applied to the outputs of norm1 and norm2 equals the adapted model."""
    base, model = randomised()
    u = getattr(model, SHARED).arc_u
    for block, adapted in zip(base.blocks, model.blocks, strict=True):
        for norm, layer, pos in ((block.norm1, adapted.attn.qkv, "attn"), (block.norm2, adapted.mlp.fc1, "mlp")):
            m, b = dense_adapter(u[pos], layer.arc_scale, layer.arc_bias)
            norm.register_forward_hook(lambda mod, args, out, m=m, b=b: out @ m + b)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=ATOL, rtol=RTOL)


def test_merged_weight_and_bias_are_the_dense_algebra():
    _, model = randomised()
    layer = model.blocks[1].mlp.fc1
    m, b = dense_adapter(getattr(model, SHARED).arc_u["mlp"], layer.arc_scale, layer.arc_bias)
    weight, bias = layer.base_layer.weight, layer.base_layer.bias
    h = torch.randn(4, 64)
    with torch.no_grad():
        torch.testing.assert_close(layer.merged_weight(), weight @ m, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(layer.merged_bias(), bias + weight @ b, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(layer(h), (h @ m + b) @ weight.T + bias, atol=ATOL, rtol=RTOL)


def test_init_follows_the_official_code_and_is_not_identity():
    base = tiny_vit()
    model = ArcConfig().apply(copy.deepcopy(base)).eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, ArcLayer)}
    assert set(layers) == {"blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.attn.qkv", "blocks.1.mlp.fc1"}
    bound = math.sqrt(6 / (1 + 50))  # Xavier-uniform on the 1×D' shape of s_mlp
    for name, layer in layers.items():
        assert torch.count_nonzero(layer.arc_bias) == 0
        if name.endswith("qkv"):
            assert torch.count_nonzero(layer.arc_scale) == 0
        else:
            assert 0 < layer.arc_scale.abs().max() <= bound
    x = images()
    with torch.no_grad():
        assert not torch.allclose(model(x), base(x), atol=1e-4)
        for layer in layers.values():  # s_mlp is the only term away from the identity
            layer.arc_scale.zero_()
        torch.testing.assert_close(model(x), base(x), atol=ATOL, rtol=RTOL)


def test_bottleneck_dropout_only_in_training():
    _, model = randomised(ArcConfig(dropout=0.5))
    assert_train_dropout(model)


def test_projections_are_shared_once():
    model = ArcConfig().apply(tiny_vit())
    names = [n for n, p in model.named_parameters() if p.requires_grad and "arc_u" in n]
    assert names == ["peft_shared.arc_u.attn", "peft_shared.arc_u.mlp"]
    assert model.blocks[0].attn.qkv.u is model.blocks[1].attn.qkv.u


@pytest.mark.parametrize(
    "kwargs, match",
    [({"bottleneck": 0}, "bottleneck=0.*integer >= 1"), ({"dropout": 1.5}, r"dropout=1.5.*\[0, 1\)")],
)
def test_invalid_options_name_the_option(kwargs, match):
    assert_invalid(ArcConfig, kwargs, match)


def test_targets_must_be_whole_linears():
    with pytest.raises(ValueError, match="whole linears.*'blocks.0.attn.q'"):
        ArcConfig(targets=["attn.q"]).apply(tiny_vit())
    with pytest.raises(TypeError, match="'blocks.0.norm1' is a LayerNorm"):
        ArcConfig(targets=["norm1"]).apply(tiny_vit())
