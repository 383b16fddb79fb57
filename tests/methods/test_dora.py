"""DoRA: parameter count, Eq. 5 on separate q/k/v weights, magnitude init, the detached norm, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.dora import DoraConfig
from tests.helpers import (
    ATOL,
    HEAD_100,
    RTOL,
    assert_fused_qkv_equals_parts,
    assert_invalid,
    count_on,
    images,
    method_yaml,
    perturb,
    tiny_vit,
    with_qv_weights,
)
from tests.methods.equations import dora_weight

#: No DoRA row exists for ViT-B/16 on VTAB-1k/FGVC in the RLRR/HTA tables (the DoRA paper reports LLaMA, VL-BART and
#: LLaVA). Derived: the LoRA row's 294,912 (r 8 on W_q, W_v of 12 blocks; 0.29 M in RLRR-P Table 2) plus one
#: magnitude entry per output unit of each adapted matrix, 12 · 2 · 768 = 18,432.
DORA_VIT_B16 = 294_912 + 18_432


def test_parameter_count_on_vit_b16():
    assert count_on(DoraConfig())["trainable"] == DORA_VIT_B16 == 313_344
    assert count_on(DoraConfig(), num_classes=100)["trainable"] == DORA_VIT_B16 + HEAD_100


def test_forward_equals_formula_on_separate_q_and_v():
    base = tiny_vit()
    rank, alpha = 4, 6.0
    model = DoraConfig(rank=rank, alpha=alpha, train_head=False).apply(copy.deepcopy(base)).eval()
    perturb(model)
    reference = with_qv_weights(base, model, lambda w, layer: dora_weight(w, layer, alpha, rank))
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=RTOL)


def test_magnitude_starts_at_the_row_norms_of_a_non_square_weight():
    base = tiny_vit()
    model = DoraConfig(targets=["mlp.fc1"]).apply(copy.deepcopy(base))
    layer = model.blocks[0].mlp.fc1
    w0 = base.blocks[0].mlp.fc1.weight  # (128, 64): one magnitude per output unit
    assert layer.dora_magnitude.shape == (w0.shape[0],)
    torch.testing.assert_close(layer.dora_magnitude, w0.pow(2).sum(dim=1).sqrt())
    assert torch.count_nonzero(layer.lora_b) == 0
    torch.testing.assert_close(layer.merged_weight(), w0, atol=ATOL, rtol=RTOL)


def test_detached_norm_changes_gradients_not_outputs():
    outputs, grads = [], []
    for detach in (True, False):
        model = DoraConfig(detach_norm=detach).apply(tiny_vit())
        perturb(model)
        out = model(images())
        out.square().sum().backward()
        layer = model.blocks[0].attn.qkv.parts["q"]
        outputs.append(out.detach())
        grads.append((layer.dora_magnitude.grad, layer.lora_b.grad))
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0][0], grads[1][0])  # the magnitude's gradient does not pass through the norm
    assert not torch.allclose(grads[0][1], grads[1][1])


def test_fused_qkv_path_equals_each_part_on_its_own_with_the_norm_not_detached():
    """The one-GEMM qkv path (every block's ΔW and norm at once) computes what each DoRA part computes alone (Eq. 5 per
    weight, :meth:`DoraLayer.forward`), outputs and every gradient, also when the norm's gradient flows (the default,
    detached, is in the contract battery's ``test_fused_qkv_path_equals_its_parts_alone_with_gradients``)."""
    model = DoraConfig(rank=4, alpha=6.0, detach_norm=False).apply(tiny_vit())
    perturb(model)
    assert_fused_qkv_equals_parts(model, model.blocks[0].attn.qkv)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"detach_norm": "yes"}, "detach_norm='yes' is invalid: expected true or false"),
        ({"rank": 0}, "rank=0 is invalid: expected an integer >= 1"),
        ({"dropout": 1.5}, "dropout=1.5 is invalid"),
    ],
)
def test_invalid_options_name_the_option(options, message):
    assert_invalid(DoraConfig, options, message)


def test_non_linear_target_is_refused_with_its_name():
    with pytest.raises(TypeError, match="method 'dora' adapts Linear layers"):
        DoraConfig(targets=["patch_embed.proj"]).apply(tiny_vit())


def test_yaml_gives_the_default_config():
    assert method_yaml("dora") == DoraConfig()
