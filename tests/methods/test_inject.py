"""The shared mechanism itself, exercised with a minimal additive layer defined here (not registered)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from peftlab.methods.base import MethodConfig
from peftlab.methods.inject import find_targets, inject, merge_and_unload
from peftlab.methods.layers import SHARED, AdapterLayer, FusedQKV, LinearSlice, NotMergeableError
from peftlab.methods.state import count_parameters
from tests.helpers import ATOL, RTOL, images, perturb, tiny_vit


class AddDelta(AdapterLayer):
    def __init__(self, base):
        super().__init__(base)
        self.delta = nn.Parameter(torch.zeros_like(base.weight))

    def merged_weight(self):
        return self.base_layer.weight + self.delta


class Opaque(AdapterLayer):
    mergeable = False

    def forward(self, x):
        return self.base_layer(x)


@dataclass
class DeltaConfig(MethodConfig):
    opaque: bool = False

    def create_layer(self, name, base, shared):
        return Opaque(base) if self.opaque else AddDelta(base)


@dataclass
class SharedConfig(MethodConfig):
    """Records what ``create_layer`` receives, to check that the shared module is passed explicitly."""

    def create_shared(self, model, targets):
        return nn.ParameterDict({"scale": nn.Parameter(torch.ones(len(targets)))})

    def create_layer(self, name, base, shared):
        layer = AddDelta(base)
        layer.received = shared
        return layer


def test_patterns_glob_suffix_regex_and_exclude():
    model = tiny_vit()
    assert find_targets(model, ["attn.proj"]) == ["blocks.0.attn.proj", "blocks.1.attn.proj"]
    assert find_targets(model, ["blocks.*.mlp.fc?"], exclude=["blocks.0.*"]) == ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]
    assert find_targets(model, [r"re:blocks\.1\.attn\.(q|v)"]) == ["blocks.1.attn.q", "blocks.1.attn.v"]


def test_unmatched_pattern_lists_available_names():
    with pytest.raises(ValueError, match=r"matches no layer.*blocks\.\*\.attn\.qkv"):
        find_targets(tiny_vit(), ["attn.query"])


def test_qkv_slices_get_independent_layers_and_merge():
    base = tiny_vit()
    model = inject(copy.deepcopy(base), DeltaConfig(targets=["attn.q", "attn.v"]))
    qkv = model.blocks[0].attn.qkv
    assert isinstance(qkv, FusedQKV)
    assert isinstance(qkv.parts["k"], LinearSlice) and isinstance(qkv.parts["q"], AddDelta)
    assert qkv.parts["q"].delta.shape == (64, 64)
    assert count_parameters(model)["trainable_without_head"] == 2 * 2 * 64 * 64
    perturb(model)
    x = images()
    with torch.no_grad():
        expected = model(x)
        k_rows = slice(64, 128)
        torch.testing.assert_close(qkv.merged_weight()[k_rows], base.blocks[0].attn.qkv.weight[k_rows])
        merged = merge_and_unload(model)
        assert isinstance(merged.blocks[0].attn.qkv, nn.Linear)
        torch.testing.assert_close(merged(x), expected, atol=ATOL, rtol=RTOL)


def test_state_dict_has_no_duplicate_slice_weights():
    model = inject(tiny_vit(), DeltaConfig(targets=["attn.q"]))
    keys = list(model.state_dict())
    assert "blocks.0.attn.qkv.base_layer.weight" in keys
    assert not any(k.startswith("blocks.0.attn.qkv.parts.k") for k in keys)


def test_whole_and_slice_targets_conflict():
    with pytest.raises(ValueError, match="both as a whole and by its q/k/v slices"):
        inject(tiny_vit(), DeltaConfig(targets=["attn.qkv", "attn.q"]))


def test_not_mergeable_is_refused_before_any_change():
    model = inject(tiny_vit(), DeltaConfig(targets=["attn.proj", "mlp.fc1"], opaque=True))
    with pytest.raises(NotMergeableError, match="Opaque"):
        merge_and_unload(model)
    assert isinstance(model.blocks[0].attn.proj, Opaque)


def test_double_injection_is_refused():
    model = inject(tiny_vit(), DeltaConfig(targets=["attn.proj"]))
    with pytest.raises(RuntimeError, match="already has an injected method"):
        inject(model, DeltaConfig(targets=["attn.proj"]))


def test_non_finite_merge_is_refused():
    model = inject(tiny_vit(), DeltaConfig(targets=["attn.proj"]))
    with torch.no_grad():
        model.blocks[0].attn.proj.delta[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        merge_and_unload(model)


def test_create_layer_receives_the_shared_module_and_the_config_keeps_no_state():
    config = SharedConfig(targets=["attn.proj"])
    before = dict(vars(config))
    model = inject(tiny_vit(), config)
    shared = model.get_submodule(SHARED)
    assert shared["scale"].shape == (2,)
    assert all(model.blocks[i].attn.proj.received is shared for i in range(2))
    assert vars(config) == before


def test_methods_without_shared_parameters_get_none():
    model = inject(tiny_vit(), SharedConfig.__bases__[0](targets=[]))
    assert not hasattr(model, SHARED)
