"""Full fine-tuning and linear probing: parameter counts on ViT-B/16 against the tables' reference rows."""

from __future__ import annotations

from peftlab.methods.full import FullConfig, LinearConfig
from tests.helpers import AVERAGE_HEAD, HEAD_100, count_on, method_yaml

#: timm's vit_base_patch16_224 without a head (Dosovitskiy et al., ICLR 2021, Table 1: ViT-Base, "86M").
VIT_B16 = 85_798_656
#: RLRR-P Table 2 / HTA-P Table 1 "Full fine-tuning": 85.80 M on VTAB-1k (the backbone alone: with the average head it
#: would be 85.84 M); RLRR-P Table 3 / HTA-P Table 2 "Full FT": 85.98 M on FGVC (backbone + average FGVC head).
FULL_VTAB_M, FULL_FGVC_M = 85.80, 85.98
#: "Linear probing": 0.04 M on VTAB-1k and 0.18 M on FGVC, the average heads (docs/methods.md "Conventions").
LINEAR_VTAB_M, LINEAR_FGVC_M = 0.04, 0.18
#: class counts (peftlab/data/catalog.py; FGVC: RLRR-P supplement Table 1, from VPT)
VTAB_CLASSES = [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]
FGVC_CLASSES = [200, 555, 102, 120, 196]


def test_average_heads_follow_from_the_class_counts():
    def avg_head(classes, width=768):
        return round(sum((width + 1) * c for c in classes) / len(classes))

    assert avg_head(VTAB_CLASSES) == AVERAGE_HEAD["vtab"]
    assert avg_head(FGVC_CLASSES) == AVERAGE_HEAD["fgvc"]
    assert avg_head(VTAB_CLASSES, width=1024) == AVERAGE_HEAD["vtab_large"]
    assert HEAD_100 == 768 * 100 + 100


def test_full_fine_tuning_trains_every_parameter():
    counts = count_on(FullConfig())
    assert counts["trainable"] == counts["total"] == VIT_B16
    assert count_on(FullConfig(), num_classes=100)["trainable"] == VIT_B16 + HEAD_100
    assert round(VIT_B16 / 1e6, 2) == FULL_VTAB_M
    assert round((VIT_B16 + AVERAGE_HEAD["fgvc"]) / 1e6, 2) == FULL_FGVC_M


def test_linear_probing_trains_the_head_only():
    assert count_on(LinearConfig())["trainable"] == 0
    with_head = count_on(LinearConfig(), num_classes=100)
    assert with_head["trainable"] == with_head["head"] == HEAD_100
    assert round(AVERAGE_HEAD["vtab"] / 1e6, 2) == LINEAR_VTAB_M
    assert round(AVERAGE_HEAD["fgvc"] / 1e6, 2) == LINEAR_FGVC_M


def test_yaml_gives_the_default_configs():
    assert method_yaml("full") == FullConfig()
    assert method_yaml("linear") == LinearConfig()
