"""LoRA: paper parameter count, the formula on separate q/k/v weights, init, dropout, validation, peft parity."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from peftlab.methods.lora import LoraConfig
from tests.helpers import ATOL, DIM, HEAD_100, RTOL, assert_invalid, count_on, images, method_yaml, perturb, tiny_vit
from tests.methods.equations import lora_update

#: RLRR-P Table 2 / HTA-P Table 1, "LoRA" row: 0.29 M on VTAB-1k (head excluded) = r 8 on W_q, W_v of 12 blocks,
#: 12 · 2 · 8 · (768 + 768)
LORA_VIT_B16 = 294_912
LORA_TABLE_M = 0.29


def test_parameter_count_matches_paper_on_vit_b16():
    assert count_on(LoraConfig())["trainable"] == LORA_VIT_B16
    assert round(LORA_VIT_B16 / 1e6, 2) == LORA_TABLE_M
    assert count_on(LoraConfig(), num_classes=100)["trainable"] == LORA_VIT_B16 + HEAD_100


def with_weights(base, adapted, weights: dict[str, torch.Tensor]):
    """``base`` with the given dense weights and the (perturbed) head of ``adapted``."""
    reference = copy.deepcopy(base)
    with torch.no_grad():
        for name, weight in {**weights, "head.weight": adapted.head.weight, "head.bias": adapted.head.bias}.items():
            reference.get_parameter(name).copy_(weight)
    return reference


def test_forward_equals_formula_on_separate_q_and_v():
    base = tiny_vit()
    rank, alpha = 4, 6.0
    model = LoraConfig(rank=rank, alpha=alpha).apply(copy.deepcopy(base)).eval()
    perturb(model)
    weights = {}
    for i, block in enumerate(base.blocks):
        w_q, w_k, w_v = block.attn.qkv.weight.detach().split(DIM)
        parts = model.blocks[i].attn.qkv.parts
        w_q = w_q + lora_update(parts["q"], alpha, rank)
        w_v = w_v + lora_update(parts["v"], alpha, rank)
        weights[f"blocks.{i}.attn.qkv.weight"] = torch.cat([w_q, w_k, w_v])
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), with_weights(base, model, weights)(x), atol=ATOL, rtol=RTOL)


def test_forward_equals_formula_on_k_proj_and_fc2():
    base = tiny_vit()
    rank, alpha = 2, 2.0
    model = LoraConfig(targets=["attn.k", "attn.proj", "mlp.fc2"], rank=rank, alpha=alpha)
    model = model.apply(copy.deepcopy(base)).eval()
    perturb(model)
    weights = {}
    for i, block in enumerate(base.blocks):
        w_q, w_k, w_v = block.attn.qkv.weight.detach().split(DIM)
        w_k = w_k + lora_update(model.blocks[i].attn.qkv.parts["k"], alpha, rank)
        weights[f"blocks.{i}.attn.qkv.weight"] = torch.cat([w_q, w_k, w_v])
        for name in ("attn.proj", "mlp.fc2"):
            layer = model.blocks[i].get_submodule(name)
            weights[f"blocks.{i}.{name}.weight"] = base.blocks[i].get_submodule(name).weight + lora_update(
                layer, alpha, rank
            )
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), with_weights(base, model, weights)(x), atol=ATOL, rtol=RTOL)


def test_init_is_kaiming_a_and_zero_b():
    model = LoraConfig().apply(tiny_vit())
    layer = model.blocks[0].attn.qkv.parts["q"]
    assert torch.count_nonzero(layer.lora_b) == 0
    bound = 1 / math.sqrt(DIM)  # kaiming_uniform_(a=√5) on fan_in = in_features
    assert 0 < layer.lora_a.abs().max() <= bound
    assert layer.lora_a.shape == (8, DIM) and layer.lora_b.shape == (DIM, 8)


def test_alpha_defaults_to_rank():
    assert LoraConfig(rank=16).scale == 1.0
    assert LoraConfig(rank=16, alpha=32).scale == 2.0


def test_dropout_acts_on_the_lora_input_only():
    model = LoraConfig(dropout=0.5).apply(tiny_vit())
    perturb(model)
    layer = model.blocks[0].attn.qkv.parts["v"].train()
    x = torch.randn(2, 5, DIM)
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)
    expected = layer.base_layer(x) + dropped @ layer.lora_a.T @ layer.lora_b.T
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
    layer.eval()
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.merged_weight(), layer.base_layer.bias))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rank": 0}, "rank=0 is invalid: expected an integer >= 1"),
        ({"rank": 2.5}, "rank=2.5 is invalid: expected an integer >= 1"),
        ({"alpha": 0}, "alpha=0 is invalid: expected a number > 0"),
        ({"dropout": 1.0}, r"dropout=1.0 is invalid: expected a probability in \[0, 1\)"),
        ({"dropout": -0.1}, "dropout=-0.1 is invalid"),
    ],
)
def test_invalid_options_name_the_option(options, message):
    assert_invalid(LoraConfig, options, message)


def test_non_linear_target_is_refused_with_its_name():
    with pytest.raises(TypeError, match="'blocks.0.norm1' is a LayerNorm"):
        LoraConfig(targets=["blocks.0.norm1"]).apply(tiny_vit())


def test_yaml_gives_the_default_config():
    config = method_yaml("lora")
    assert config == LoraConfig()


def test_matches_huggingface_peft_on_a_full_linear():
    peft = pytest.importorskip("peft")
    base = tiny_vit()
    ours = LoraConfig(targets=["mlp.fc1"], rank=4, alpha=8, train_head=False).apply(copy.deepcopy(base)).eval()
    perturb(ours)
    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["fc1"]), copy.deepcopy(base)
    ).eval()
    with torch.no_grad():
        for ours_block, theirs_block in zip(ours.blocks, theirs.blocks, strict=True):
            theirs_block.mlp.fc1.lora_A["default"].weight.copy_(ours_block.mlp.fc1.lora_a)
            theirs_block.mlp.fc1.lora_B["default"].weight.copy_(ours_block.mlp.fc1.lora_b)
        x = images()
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=RTOL)
