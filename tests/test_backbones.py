"""Backbones come from timm's factory: heads, local weights files, branch dropout, clear errors."""

from __future__ import annotations

import pytest
import timm
import torch

from peftlab.backbones import WeightsError, create_backbone, data_config, timm_name, weights_source
from peftlab.build import build_backbone
from peftlab.identity import semantic_identity

TINY = dict(img_size=32, patch_size=8, depth=3)


def test_head_is_reset_to_the_task_and_zeroed():
    model = create_backbone("vit_tiny_patch16_224", num_classes=7, model_kwargs=TINY)
    head = model.get_classifier()
    assert head.out_features == 7 and torch.count_nonzero(head.weight) == 0


def test_local_weights_file_is_loaded_through_timm(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("vit_tiny_patch16_224", num_classes=3, weights_file=str(path), model_kwargs=TINY)
    torch.testing.assert_close(model.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)


def test_missing_weights_file_names_the_option(tmp_path):
    with pytest.raises(WeightsError, match="backbone.weights_file"):
        create_backbone("vit_tiny_patch16_224", num_classes=3, weights_file=str(tmp_path / "nope.safetensors"))


def test_branch_dropout_rises_linearly_over_blocks():
    model = create_backbone("vit_tiny_patch16_224", num_classes=3, branch_dropout=0.3, model_kwargs=TINY)
    rates = [(b.attn.proj_drop.p, b.mlp.drop2.p) for b in model.blocks]
    assert rates == [(0.0, 0.0), (0.15, 0.15), (0.3, 0.3)]
    with pytest.raises(ValueError, match="branch_dropout"):
        create_backbone("vit_tiny_patch16_224", num_classes=3, branch_dropout=1.5, model_kwargs=TINY)


def test_normalisation_comes_from_the_pretrained_config():
    model = create_backbone("vit_base_patch16_224.orig_in21k", num_classes=3, model_kwargs=dict(depth=1))
    assert data_config(model)["mean"] == (0.5, 0.5, 0.5)
    model = create_backbone("vit_tiny_patch16_224.augreg_in21k", num_classes=3, model_kwargs=TINY)
    assert data_config(model)["interpolation"] == "bicubic"


def test_an_unknown_name_gets_timms_close_matches_in_one_line():
    with pytest.raises(ValueError, match=r"backbone.name='vit_small_patch14_dino' is not a timm model; close matches: "
                       r".*vit_small_patch14_dinov2.lvd142m") as error:  # fmt: skip
        create_backbone("vit_small_patch14_dino", num_classes=3)
    assert "\n" not in str(error.value)


def test_the_timm_option_inherits_nothing_model_specific(make_cfg):
    cfg = make_cfg("backbone=timm", "backbone.name=vit_small_patch14_dinov2.lvd142m", "backbone.pretrained=false",
                   "data.image_size=28", "+backbone.model_kwargs.depth=1")  # fmt: skip
    model = build_backbone(cfg)
    assert model.patch_embed.patch_size == (14, 14)  # the model's own, not vit_tiny's 8
    assert data_config(model)["mean"] == timm.data.IMAGENET_DEFAULT_MEAN  # dinov2's, from its pretrained config
    assert timm_name(model) == "vit_small_patch14_dinov2.lvd142m"
    assert semantic_identity(cfg)["config"]["backbone.weights"] == "random-init"


def test_a_patch_size_from_another_option_is_not_silently_resampled():
    with pytest.raises(ValueError, match="patch_size=8 differs from the pretrained 14 .* backbone=timm"):
        create_backbone("vit_small_patch14_dinov2.lvd142m", 3, pretrained=True, model_kwargs={"patch_size": 8})


def test_the_weights_source_is_recorded(tmp_path, make_cfg):
    """The run record takes the weights source from the one function, from the config: a file by its name, the hub
    id of timm's pretrained tag, or a random init."""
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = create_backbone("vit_tiny_patch16_224", 3, weights_file=str(tmp_path / "weights.pth"), model_kwargs=TINY)
    assert timm_name(model).split(".")[0] == "vit_tiny_patch16_224"  # timm's default tag of the architecture
    cfg = make_cfg(f"backbone.weights_file={tmp_path / 'weights.pth'}")
    assert semantic_identity(cfg)["config"]["backbone.weights"] == "file:weights.pth"
    assert weights_source("vit_tiny_patch16_224", weights_file=str(tmp_path / "weights.pth")) == "file:weights.pth"
    hub_id = timm.models.get_pretrained_cfg("vit_base_patch16_224.orig_in21k").hf_hub_id
    assert weights_source("vit_base_patch16_224.orig_in21k", pretrained=True) == f"hub:{hub_id}"
    assert weights_source("vit_base_patch16_224.orig_in21k") == "random-init"
