"""RLRR: paper parameter counts, Eq. 19-20 on separate q/k/v weights plus SSF, the official (non-identity) init."""

from __future__ import annotations

import copy
import math

import torch

from peftlab.methods.layers import FusedQKV
from peftlab.methods.rlrr import RLRRConfig, RLRRLinear
from peftlab.methods.ssf import ScaleShift
from tests.helpers import (
    ATOL,
    AVERAGE_HEAD,
    DIM,
    HEAD_100,
    RTOL,
    count_on,
    images,
    method_yaml,
    perturb,
    tiny_vit,
    vit_l16,
)
from tests.methods.equations import add_scale_shift, rlrr_linear

#: RLRR-P Table 2 (VTAB-1k, 0.33 M) and Table 3 (FGVC, 0.47 M), head included. Derived by hand from the official
#: code (docs/methods.md §1.3): per block q, k, v, o 4 · 3 · 768 + fc1 (768 + 2 · 3072) + fc2 (3072 + 2 · 768)
#: + SSF after both LNs 2 · 2 · 768 = 23,808; 12 blocks + patch SSF 1,536 + final-norm SSF 1,536 = 288,768.
RLRR_VIT_B16 = 288_768
RLRR_TABLE_M = {"vtab": 0.33, "fgvc": 0.47}
#: RLRR-P Table 4 (ViT-L/16, 0.82 M with the average VTAB head of a 1024-d ViT, 50,711): same rules, 24 blocks
RLRR_VIT_L16 = 765_952
RLRR_VIT_L16_TABLE_M = 0.82


def test_parameter_count_matches_paper_on_vit_b16_and_l16():
    assert count_on(RLRRConfig())["trainable"] == RLRR_VIT_B16
    for bench, millions in RLRR_TABLE_M.items():
        assert round((RLRR_VIT_B16 + AVERAGE_HEAD[bench]) / 1e6, 2) == millions
    counts = count_on(RLRRConfig(), num_classes=100)
    assert (counts["trainable"], counts["trainable_without_head"]) == (RLRR_VIT_B16 + HEAD_100, RLRR_VIT_B16)
    assert count_on(RLRRConfig(), factory=vit_l16)["trainable"] == RLRR_VIT_L16
    assert round((RLRR_VIT_L16 + AVERAGE_HEAD["vtab_large"]) / 1e6, 2) == RLRR_VIT_L16_TABLE_M


def reference_model(base, model):
    """``base`` with RLRR's weights written out from the paper and SSF hooks; the (perturbed) head of ``model``."""
    reference = copy.deepcopy(base)
    with torch.no_grad():
        reference.head.load_state_dict(model.head.state_dict())
        for block, ref in zip(model.blocks, reference.blocks, strict=True):
            qkv = [rlrr_linear(block.attn.qkv.parts[s]) for s in "qkv"]  # three independent triples
            ref.attn.qkv.weight.copy_(torch.cat([w for w, _ in qkv]))
            ref.attn.qkv.bias.copy_(torch.cat([b for _, b in qkv]))
            for name in ("attn.proj", "mlp.fc1", "mlp.fc2"):
                weight, bias = rlrr_linear(block.get_submodule(name))
                ref.get_submodule(name).weight.copy_(weight)
                ref.get_submodule(name).bias.copy_(bias)
            add_scale_shift(ref.norm1, block.norm1)
            add_scale_shift(ref.norm2, block.norm2)
    add_scale_shift(reference.patch_embed.proj, model.patch_embed.proj, channel_dim=1)
    add_scale_shift(reference.norm, model.norm)
    return reference


def test_forward_equals_eq19_with_separate_qkv_and_ssf():
    base = tiny_vit()
    model = RLRRConfig().apply(copy.deepcopy(base)).eval()
    perturb(model)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_model(base, model)(x), atol=ATOL, rtol=RTOL)


def test_layer_types_follow_the_official_placement():
    model = RLRRConfig().apply(tiny_vit())
    block = model.blocks[0]
    assert isinstance(block.attn.qkv, FusedQKV)
    assert all(isinstance(block.attn.qkv.parts[s], RLRRLinear) for s in "qkv")
    assert all(isinstance(block.get_submodule(n), RLRRLinear) for n in ("attn.proj", "mlp.fc1", "mlp.fc2"))
    assert all(isinstance(m, ScaleShift) for m in (block.norm1, block.norm2, model.norm, model.patch_embed.proj))
    assert not isinstance(model.patch_embed.norm, ScaleShift)


def test_init_is_the_official_kaiming_uniform_so_not_identity():
    base = tiny_vit()
    model = RLRRConfig().apply(copy.deepcopy(base))
    fc2 = model.blocks[0].mlp.fc2  # in = 128
    s_in, s_out = fc2.rlrr_scale_in.detach(), fc2.rlrr_scale_out.detach()
    bound_in, bound_out = math.sqrt(6 / 128), math.sqrt(6)
    assert s_in.abs().max() <= bound_in and s_in.abs().max() > 0.8 * bound_in
    assert s_out.abs().max() <= bound_out and s_out.abs().max() > 0.8 * bound_out
    assert torch.equal(fc2.rlrr_shift, torch.zeros(DIM))
    assert not RLRRConfig.identity_at_init
    x = images()
    with torch.no_grad():
        assert not torch.allclose(model(x), base(x), atol=1e-3), "RLRR explicitly starts away from the backbone"


def test_hydra_config_instantiates_the_defaults():
    assert method_yaml("rlrr") == RLRRConfig()
