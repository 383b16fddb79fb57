"""BitFit: the "Bias" rows' parameter counts on ViT-B/16, exactly the biases train, validation."""

from __future__ import annotations

import pytest

from peftlab.methods.bitfit import BitFitConfig
from tests.helpers import AVERAGE_HEAD, HEAD_100, count_on, method_yaml, tiny_vit

#: Every bias of ViT-B/16 (VPT's "tinytl-bias": every encoder parameter named *bias*): patch embedding 768
#: + 12 blocks × (norm1 768 + qkv 2,304 + proj 768 + norm2 768 + fc1 3,072 + fc2 768) + final norm 768.
BITFIT_VIT_B16 = 102_912
#: RLRR-P Table 2 / HTA-P Table 1 "Bias" row: 0.14 M on VTAB-1k; RLRR-P Table 3 / HTA-P Table 2: 0.28 M on FGVC.
#: Both include the benchmark's average head (docs/methods.md "Conventions"): VTAB 38,045, FGVC 180,407 parameters.
BIAS_VTAB_M, BIAS_FGVC_M = 0.14, 0.28


def test_parameter_count_matches_the_bias_rows():
    assert count_on(BitFitConfig())["trainable"] == BITFIT_VIT_B16
    assert count_on(BitFitConfig(), num_classes=100)["trainable"] == BITFIT_VIT_B16 + HEAD_100
    assert round((BITFIT_VIT_B16 + AVERAGE_HEAD["vtab"]) / 1e6, 2) == BIAS_VTAB_M
    assert round((BITFIT_VIT_B16 + AVERAGE_HEAD["fgvc"]) / 1e6, 2) == BIAS_FGVC_M


def test_exactly_the_biases_and_the_head_train():
    model = BitFitConfig().apply(tiny_vit())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert trainable == biases | {"head.weight"}
    assert {"blocks.0.norm1.bias", "patch_embed.proj.bias", "norm.bias"} <= trainable


def test_without_head_only_biases_train():
    model = BitFitConfig(train_head=False).apply(tiny_vit())
    assert all(n.endswith(".bias") for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("options", [{"targets": ["attn.q"]}, {"exclude": ["norm"]}])
def test_targets_are_refused(options):
    with pytest.raises(ValueError, match="injects no layers.*expected both empty"):
        BitFitConfig(**options)


def test_yaml_gives_the_default_config():
    assert method_yaml("bitfit") == BitFitConfig()
