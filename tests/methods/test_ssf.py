"""SSF: paper parameter count, the scale-shift formula after every op, the official init, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.ssf import ScaleShift, SSFConfig
from tests.helpers import ATOL, AVERAGE_HEAD, HEAD_100, RTOL, count_on, images, method_yaml, perturb, tiny_vit
from tests.methods.equations import add_scale_shift

#: RLRR-P Table 2 / Table 3 (= HTA-P Tables 1, 2), "SSF" row: 0.24 M VTAB-1k and 0.39 M FGVC, head included.
#: Backbone part derived by hand: a (γ, β) pair after the patch conv (768), qkv (2304), proj (768), fc1 (3072),
#: fc2 (768), norm1 (768), norm2 (768) of 12 blocks and the final norm (768):
#: 2 · (768 + 12 · (2304 + 768 + 3072 + 768 + 768 + 768) + 768) = 205,824.
SSF_VIT_B16 = 205_824
SSF_TABLE_M = {"vtab": 0.24, "fgvc": 0.39}


def test_parameter_count_matches_paper_on_vit_b16():
    assert count_on(SSFConfig())["trainable"] == SSF_VIT_B16
    for bench, millions in SSF_TABLE_M.items():  # the table counts the task-averaged head: exact match
        assert round((SSF_VIT_B16 + AVERAGE_HEAD[bench]) / 1e6, 2) == millions
    counts = count_on(SSFConfig(), num_classes=100)
    assert (counts["trainable"], counts["trainable_without_head"]) == (SSF_VIT_B16 + HEAD_100, SSF_VIT_B16)


def test_forward_equals_scale_shift_after_every_op():
    base = tiny_vit()
    model = SSFConfig().apply(copy.deepcopy(base)).eval()
    perturb(model)
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.head.load_state_dict(model.head.state_dict())
    add_scale_shift(reference.patch_embed.proj, model.patch_embed.proj, channel_dim=1)
    add_scale_shift(reference.norm, model.norm)
    for block, ref in zip(model.blocks, reference.blocks, strict=True):
        for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "norm1", "norm2"):
            add_scale_shift(ref.get_submodule(name), block.get_submodule(name))
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=RTOL)


def test_init_is_the_official_normal_and_not_identity():
    layer = SSFConfig().apply(tiny_vit()).blocks[0].mlp.fc1
    assert isinstance(layer, ScaleShift)
    scale, shift = layer.ssf_scale.detach(), layer.ssf_shift.detach()
    assert abs(scale.mean() - 1) < 0.01 and 0.01 < scale.std() < 0.03  # N(1, 0.02), 128 samples
    assert abs(shift.mean()) < 0.01 and 0.01 < shift.std() < 0.03  # N(0, 0.02)
    assert not SSFConfig.identity_at_init


def test_layernorm_without_affine_is_not_mergeable():
    layer = ScaleShift(torch.nn.LayerNorm(8, elementwise_affine=False))
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), torch.nn.functional.layer_norm(x, (8,)) * layer.ssf_scale + layer.ssf_shift)
    assert not layer.mergeable


def test_unsupported_target_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="targets must be Linear, LayerNorm or Conv2d"):
        SSFConfig(targets=["attn"]).apply(tiny_vit())
    with pytest.raises(ValueError, match="matches no layer"):
        SSFConfig(targets=["attn.query"]).apply(tiny_vit())


def test_hydra_config_instantiates_the_defaults():
    assert method_yaml("ssf") == SSFConfig()
