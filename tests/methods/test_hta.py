"""HTA: paper parameter counts, Eq. 6 in the paper's layout on separate q/k/v, init, float32 Householder, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.hta import HTAConfig
from tests.helpers import (
    ATOL,
    AVERAGE_HEAD,
    DIM,
    HEAD_100,
    RTOL,
    assert_invalid,
    count_on,
    images,
    method_yaml,
    perturb,
    tiny_vit,
    vit_l16,
)
from tests.methods.equations import hta_weight

#: HTA-P Table 1 (VTAB-1k, 0.22 M) and Table 2 (FGVC, 0.36 M), head included; Fig. 2 / supplement Table 7 for
#: ranks 0, 2, 4 (0.15 / 0.30 / 0.44 M VTAB); Table 3 for ViT-L/16 (0.54 M). Derived by hand (docs/methods.md §2.3):
#: per 768×768 matrix v_left + v_right + d (3 · 768) + rank · (768 + 768); q, k, v, o of 12 blocks.
HTA_VIT_B16 = {0: 110_592, 1: 184_320, 2: 258_048, 4: 405_504}
HTA_TABLE_M = {0: 0.15, 1: 0.22, 2: 0.30, 4: 0.44}
HTA_FGVC_TABLE_M = 0.36
HTA_VIT_L16, HTA_VIT_L16_TABLE_M = 491_520, 0.54  # 24 blocks · 4 · (3 · 1024 + 2 · 1024)


@pytest.mark.parametrize("rank", sorted(HTA_VIT_B16))
def test_parameter_count_matches_paper_on_vit_b16(rank):
    assert count_on(HTAConfig(rank=rank))["trainable"] == HTA_VIT_B16[rank]
    assert round((HTA_VIT_B16[rank] + AVERAGE_HEAD["vtab"]) / 1e6, 2) == HTA_TABLE_M[rank]


def test_parameter_count_with_head_fgvc_and_vit_l16():
    counts = count_on(HTAConfig(), num_classes=100)
    assert (counts["trainable"], counts["trainable_without_head"]) == (HTA_VIT_B16[1] + HEAD_100, HTA_VIT_B16[1])
    assert round((HTA_VIT_B16[1] + AVERAGE_HEAD["fgvc"]) / 1e6, 2) == HTA_FGVC_TABLE_M
    assert count_on(HTAConfig(), factory=vit_l16)["trainable"] == HTA_VIT_L16
    assert round((HTA_VIT_L16 + AVERAGE_HEAD["vtab_large"]) / 1e6, 2) == HTA_VIT_L16_TABLE_M


def reference_model(base, model, normalize: bool = False):
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.head.load_state_dict(model.head.state_dict())
        for block, ref in zip(model.blocks, reference.blocks, strict=True):
            parts = block.attn.qkv.parts
            ref.attn.qkv.weight.copy_(torch.cat([hta_weight(parts[s], normalize) for s in "qkv"]))
            ref.attn.proj.weight.copy_(hta_weight(block.attn.proj, normalize))
    return reference


@pytest.mark.parametrize(
    "config",
    [HTAConfig(), HTAConfig(rank=0), HTAConfig(rank=3, normalize=True), HTAConfig(compute="weight")],
    ids=["eq6", "rank0", "normalized", "weight_form"],
)
def test_forward_equals_eq6_on_separate_qkv_and_proj(config):
    base = tiny_vit()
    model = config.apply(copy.deepcopy(base)).eval()
    perturb(model)
    x = images()
    with torch.no_grad():
        expected = reference_model(base, model, config.normalize)(x)
        torch.testing.assert_close(model(x), expected, atol=ATOL, rtol=RTOL)


def test_init_starts_at_zero_update_with_near_orthogonal_householders():
    layer = HTAConfig().apply(tiny_vit()).blocks[0].attn.qkv.parts["q"]
    assert torch.equal(layer.hta_diag, torch.zeros(DIM)) and torch.equal(layer.hta_up, torch.zeros(1, DIM))
    assert layer.hta_down.abs().max() <= DIM**-0.5 and layer.hta_down.abs().max() > 0
    for v in (layer.hta_v_left, layer.hta_v_right):  # v ~ N(0, 2/D): ‖v‖² ≈ 2
        assert 1.3 < v.detach().square().sum() < 2.7
    assert torch.equal(layer.delta_weight(), torch.zeros(DIM, DIM))


def test_d_trains_first_and_releases_the_householder_vectors():
    model = HTAConfig().apply(tiny_vit()).train()
    torch.nn.functional.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    layer = model.blocks[1].attn.proj
    assert layer.hta_diag.grad.abs().sum() > 0 and layer.hta_down.grad.abs().sum() == 0
    assert layer.hta_v_left.grad.abs().sum() == 0, "documented: v gets no gradient while d = 0"


@pytest.mark.float32
def test_householder_terms_run_in_float32_under_bf16_autocast():
    base = tiny_vit()
    model = HTAConfig().apply(copy.deepcopy(base)).eval()
    perturb(model)
    x = images()
    layer = model.blocks[0].attn.proj
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer._update(torch.randn(2, DIM, dtype=torch.bfloat16)).dtype == torch.float32
        low = model(x).float()
    with torch.no_grad():
        full = model(x)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low, full, atol=0.02 * full.abs().max().item(), rtol=0.02)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": -1}, "rank=-1 is invalid: expected an integer >= 0"),
        ({"rank": 1.5}, "rank=1.5 is invalid"),
        ({"normalize": "yes"}, "normalize='yes' is invalid: expected true or false"),
        ({"compute": "dense"}, "compute='dense' is invalid: expected one of activation, weight"),
    ],
)
def test_invalid_options_are_named(kwargs, message):
    assert_invalid(HTAConfig, kwargs, message)


def test_non_linear_target_is_refused():
    with pytest.raises(TypeError, match="method 'hta' adapts Linear layers.*'blocks.0.norm1' is a LayerNorm"):
        HTAConfig(targets=["blocks.0.norm1"]).apply(tiny_vit())


def test_hydra_config_instantiates_the_defaults():
    assert method_yaml("hta") == HTAConfig()
