"""AOFT: parameter counts against the reported figures, the generator and both variants written out densely, init,
float32 generation under autocast, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.aoft import AOFTAdapter, AOFTAdapterConfig, AOFTConfig
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
    with_qv_weights,
)
from tests.methods.equations import aoft_projections, aoft_weight, dense_q

#: AOFT-P main tables as reprinted by secondary summaries (docs/methods.md §3.3, [S]): LoRA+AOFT 0.22 M on FGVC;
#: Adapter+AOFT(*) 0.06 M on VTAB-1k and 0.20 M on FGVC, head included. Derived by hand (docs/methods.md §3.4):
#: LoRA+AOFT on W_q, W_v: 12 · 2 · (768 + 768) = 36,864; one FFN adapter per block: 12 · (768 + 768) = 18,432.
AOFT_VIT_B16 = 36_864
ADAPTER_VIT_B16 = 18_432
AOFT_TABLE_M = {"fgvc": 0.22}
ADAPTER_TABLE_M = {"vtab": 0.06, "fgvc": 0.20}
#: our zero-initialised scale λ (needed to start at ΔW = 0): one gate per module, or rank 8 values with use_scale
GATES = {"aoft": 24, "aoft_adapter": 12}
RANK = 8


@pytest.mark.parametrize("use_scale", [False, True])
@pytest.mark.parametrize(
    "config, derived, table",
    [(AOFTConfig, AOFT_VIT_B16, AOFT_TABLE_M), (AOFTAdapterConfig, ADAPTER_VIT_B16, ADAPTER_TABLE_M)],
    ids=["lora_aoft", "adapter_aoft"],
)
def test_count_matches_the_reported_figures(config, derived, table, use_scale):
    scales = GATES[config.name] * (RANK if use_scale else 1)
    counts = count_on(config(use_scale=use_scale), num_classes=100)
    assert counts["trainable_without_head"] == derived + scales
    assert counts["trainable"] == derived + scales + HEAD_100
    for bench, millions in table.items():  # the scales do not change the reported rounding
        assert round((derived + AVERAGE_HEAD[bench]) / 1e6, 2) == millions
        assert round((derived + scales + AVERAGE_HEAD[bench]) / 1e6, 2) == millions


@pytest.mark.parametrize("use_scale", [False, True])
def test_lora_aoft_forward_equals_the_formula_on_q_and_v(use_scale):
    base = tiny_vit()
    model = AOFTConfig(use_scale=use_scale).apply(copy.deepcopy(base)).eval()
    perturb(model)
    reference = with_qv_weights(base, model, lambda _, layer: aoft_weight(layer))  # aoft_weight reads W itself
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("position", ["parallel", "sequential"])
def test_adapter_aoft_forward_equals_the_formula(position):
    base = tiny_vit()
    model = AOFTAdapterConfig(use_scale=True, position=position).apply(copy.deepcopy(base)).eval()
    perturb(model)
    adapter = model.blocks[1].mlp
    assert isinstance(adapter, AOFTAdapter)
    down, scale, up = aoft_projections(adapter)
    x = torch.randn(2, 5, DIM)
    with torch.no_grad():
        mlp_out = base.blocks[1].mlp(x)
        source = x if position == "parallel" else mlp_out
        expected = mlp_out + (torch.nn.functional.gelu(source @ down) * scale) @ up.T
        torch.testing.assert_close(adapter(x), expected, atol=ATOL, rtol=RTOL)


def test_init_has_orthonormal_generators_and_a_zero_scale():
    layer = AOFTConfig().apply(tiny_vit()).blocks[0].attn.qkv.parts["v"]
    for q in (layer.aoft_q_down, layer.aoft_q_up):
        q = q.detach()
        assert torch.allclose(q.norm(), torch.tensor(1.0)) and 0.5 < q[0] < 0.9
        basis = dense_q(q)
        torch.testing.assert_close(basis.T @ basis, torch.eye(DIM), atol=ATOL, rtol=RTOL)
    assert torch.equal(layer.aoft_scale, torch.zeros(1))
    torch.testing.assert_close(layer.merged_weight(), layer.base_layer.weight, atol=0, rtol=0)


@pytest.mark.float32
def test_generators_run_in_float32_under_bf16_autocast():
    for config in (AOFTConfig(), AOFTAdapterConfig()):
        base = tiny_vit()
        model = config.apply(copy.deepcopy(base)).eval()
        perturb(model)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images()).float()
        with torch.no_grad():
            full = model(images())
        assert torch.isfinite(low).all()
        torch.testing.assert_close(low, full, atol=0.02 * full.abs().max().item(), rtol=0.02)


@pytest.mark.parametrize(
    "config, kwargs, message",
    [
        (AOFTConfig, {"rank": 0}, "rank=0 is invalid: expected an integer >= 1"),
        (AOFTConfig, {"rank": 2.5}, "rank=2.5 is invalid"),
        (AOFTConfig, {"use_scale": "yes"}, "use_scale='yes' is invalid: expected true or false"),
        (AOFTAdapterConfig, {"activation": "tanh"}, "activation='tanh' is invalid: expected one of gelu, relu"),
        (AOFTAdapterConfig, {"position": "middle"}, "position='middle' is invalid: expected one of parallel"),
    ],
)
def test_invalid_options_are_named(config, kwargs, message):
    assert_invalid(config, kwargs, message)


def test_rank_above_the_width_is_refused_with_the_limit():
    with pytest.raises(ValueError, match="rank=65 is invalid: expected at most 64, the width"):
        AOFTConfig(rank=65).apply(tiny_vit())


def test_hydra_configs_instantiate_the_defaults():
    assert method_yaml("aoft") == AOFTConfig()
    assert method_yaml("aoft_adapter") == AOFTAdapterConfig()
