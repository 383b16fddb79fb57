"""BitFit: the "Bias" rows' parameter counts on ViT-B/16, exactly the biases train, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from peftlab.methods.bitfit import BitFitConfig
from peftlab.methods.inject import count_parameters
from tests.helpers import tiny_vit, vit_b16

#: Every bias of ViT-B/16 (VPT's "tinytl-bias": every encoder parameter named *bias*): patch embedding 768
#: + 12 blocks × (norm1 768 + qkv 2,304 + proj 768 + norm2 768 + fc1 3,072 + fc2 768) + final norm 768.
BITFIT_VIT_B16 = 102_912
#: RLRR-P Table 2 / HTA-P Table 1 "Bias" row: 0.14 M on VTAB-1k; RLRR-P Table 3 / HTA-P Table 2: 0.28 M on FGVC.
#: Both include the benchmark's average head (methods.md "Conventions"): VTAB 38,045, FGVC 180,407 parameters.
BIAS_VTAB_M, BIAS_FGVC_M = 0.14, 0.28
VTAB_AVG_HEAD, FGVC_AVG_HEAD = 38_045, 180_407
#: a 100-class head on ViT-B/16: 768 · 100 + 100
HEAD_100 = 76_900
CONF = Path(__file__).parents[2] / "conf" / "method"


def trainable_on_vit_b16(num_classes: int = 0) -> int:
    with torch.device("meta"):  # real shapes, no init time
        model = vit_b16(num_classes)
    return count_parameters(BitFitConfig().apply(model))["trainable"]


def test_parameter_count_matches_the_bias_rows():
    assert trainable_on_vit_b16() == BITFIT_VIT_B16
    assert trainable_on_vit_b16(num_classes=100) == BITFIT_VIT_B16 + HEAD_100
    assert round((BITFIT_VIT_B16 + VTAB_AVG_HEAD) / 1e6, 2) == BIAS_VTAB_M
    assert round((BITFIT_VIT_B16 + FGVC_AVG_HEAD) / 1e6, 2) == BIAS_FGVC_M


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
    assert instantiate(OmegaConf.load(CONF / "bitfit.yaml")) == BitFitConfig()
