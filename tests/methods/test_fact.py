"""FacT-TT / FacT-TK: counts against FacT Table 1, the increment tensor of Eq. 4/9/11 written out densely."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.fact import FactLayer, FactTKConfig, FactTTConfig
from peftlab.methods.layers import SHARED
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
    vit_b16,
)
from tests.methods.equations import fact_increment

# FacT Table 1 (VTAB-1k, ViT-B/16, head excluded), sizes 2dr + 12Lr² (TT) and 2dr + 12Lr + r³ (TK), d = 768, L = 12:
TT_R4 = 8_448  # "FacT-TT4 0.008": 2·768·4 + 144·16
TK_R8 = 13_952  # "FacT-TK8 0.014": 2·768·8 + 144·8 + 512
TT_R8 = 21_504  # default: 2·768·8 + 144·64
TK_R32 = 86_528  # default: 2·768·32 + 144·32 + 32768
# "FacT-TK≤32 0.069" (FacT Table 1; 0.07 in HTA-P Table 1): per-task ranks of the official configs/tk/*.yaml
# (JieShibo/PETL-ViT), 13 tasks at r = 32 and 6 (clevr_dist, diabetic_retinopathy, dtd, oxford_iiit_pet,
# smallnorb_ele, sun397) at r = 16.
TK_VTAB_RANKS = {32: 13, 16: 6}
TK_R16 = 30_976  # 2·768·16 + 144·16 + 4096


@pytest.mark.parametrize(
    "config, expected, published",
    [
        (FactTTConfig(rank=4), TT_R4, 0.008),
        (FactTKConfig(rank=8), TK_R8, 0.014),
        (FactTTConfig(), TT_R8, None),
        (FactTKConfig(), TK_R32, None),
    ],
    ids=["tt4", "tk8", "tt-default", "tk-default"],
)
def test_parameter_count_vit_b16(config, expected, published):
    assert count_on(config)["trainable"] == expected
    if published is not None:
        assert round(expected / 1e6, 3) == published
    assert count_on(config, num_classes=100)["trainable"] == expected + HEAD_100


def test_fact_tk_le_32_mean_count():
    assert count_on(FactTKConfig(rank=16))["trainable"] == TK_R16
    per_rank = {32: TK_R32, 16: TK_R16}
    mean = sum(per_rank[r] * n for r, n in TK_VTAB_RANKS.items()) / sum(TK_VTAB_RANKS.values())
    assert round(mean / 1e6, 3) == 0.069


def test_slices_follow_the_papers_tensor_order():
    """Eq. 4: per layer q, k, v, o, then fc1's four and fc2's four d×d slices (12 per layer on ViT-B/16)."""
    with torch.device("meta"):
        model = FactTTConfig().apply(vit_b16())
    starts = {n.removeprefix("blocks.1."): m.start for n, m in model.named_modules() if isinstance(m, FactLayer)}
    order = ["attn.qkv.parts.q", "attn.qkv.parts.k", "attn.qkv.parts.v", "attn.proj", "mlp.fc1", "mlp.fc2"]
    assert [starts[name] for name in order] == [12, 13, 14, 15, 16, 20]
    assert getattr(model, SHARED).fact_sigma.shape == (144, 8, 8)


def randomised(config, seed: int = 3):
    base = tiny_vit()
    model = config.apply(copy.deepcopy(base)).eval()
    perturb(model, scale=0.5, seed=seed)
    base.head.load_state_dict(model.head.state_dict())  # the head trains too
    return base, model


@torch.no_grad()
def add_increment(base, delta) -> None:
    """Add ΔW to the plain model per Eq. 3-4: per layer q, k, v, o, then W_up's and W_down's d×d slices; the
    PyTorch weight (out×in) of a paper matrix W (in×out) is Wᵀ."""
    slices = iter(delta)
    for block in base.blocks:
        d = block.attn.proj.in_features
        for part in range(3):  # q, k, v rows of the fused qkv
            block.attn.qkv.weight[part * d : (part + 1) * d] += next(slices).T
        block.attn.proj.weight += next(slices).T
        blocks = block.mlp.fc1.out_features // d
        for i in range(blocks):  # W_up = [W_up⁽¹⁾ … W_up⁽ⁿ⁾] along its outputs
            block.mlp.fc1.weight[i * d : (i + 1) * d] += next(slices).T
        for i in range(blocks):  # W_down = [W_down⁽¹⁾; …] along its inputs
            block.mlp.fc2.weight[:, i * d : (i + 1) * d] += next(slices).T
    assert next(slices, None) is None


@pytest.mark.parametrize("config", [FactTTConfig(rank=4, scale=0.7), FactTKConfig(rank=5, scale=0.7)], ids=["tt", "tk"])
def test_forward_matches_the_dense_increment_tensor(config):
    base, model = randomised(config)
    factors = getattr(model, SHARED)
    delta = fact_increment(factors, scale=0.7)
    assert delta.shape == (2 * 8, 64, 64)  # tiny ViT: 2 layers × (4 + 2 + 2) slices of 64×64 (MLP ratio 2)
    add_increment(base, delta)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=ATOL, rtol=RTOL)


def test_fused_qkv_with_an_unadapted_part_matches_the_dense_increment():
    """q and v only: the one-GEMM qkv path gives k a zero core; slices 0, 1 are q, v of block 0, then 2, 3."""
    base, model = randomised(FactTTConfig(rank=4, scale=0.7, targets=["attn.q", "attn.v"]))
    delta = fact_increment(getattr(model, SHARED), scale=0.7)
    with torch.no_grad():
        for index, block in enumerate(base.blocks):
            d = block.attn.proj.in_features
            for part, slice_ in zip((0, 2), delta[2 * index : 2 * index + 2], strict=True):
                block.attn.qkv.weight[part * d : (part + 1) * d] += slice_.T
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("config", [FactTTConfig(), FactTKConfig()], ids=["tt", "tk"])
def test_zero_v_is_the_only_zero_factor(config):
    factors = getattr(config.apply(tiny_vit()), SHARED)
    nonzero = {n: bool(torch.count_nonzero(p)) for n, p in factors.named_parameters()}
    assert nonzero.pop("fact_v") is False
    assert all(nonzero.values()), nonzero


def test_dropout_on_the_core_only_in_training():
    _, model = randomised(FactTTConfig(dropout=0.5))
    assert_train_dropout(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "rank=0.*integer >= 1"),
        ({"scale": -1.0}, "scale=-1.0.*> 0"),
        ({"dropout": 1.0}, r"dropout=1.0.*\[0, 1\)"),
    ],
)
def test_invalid_options_name_the_option(kwargs, match):
    assert_invalid(FactTKConfig, kwargs, match)


def test_targets_must_tile_into_d_by_d_slices():
    with pytest.raises(ValueError, match=r"64×64 slices.*'head' is 5×64"):
        FactTTConfig(targets=["head"]).apply(tiny_vit())


def test_targets_must_be_linear():
    with pytest.raises(TypeError, match="'blocks.0.norm1' is a LayerNorm"):
        FactTTConfig(targets=["norm1"]).apply(tiny_vit())
