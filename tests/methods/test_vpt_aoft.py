"""VPT-Deep+AOFT: parameter count against the reported figures, the generated prompts written out densely, the
forward as VPT-Deep with those prompts, init, float32 generation, validation."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods.layers import SHARED
from peftlab.methods.vpt import VptDeepConfig
from peftlab.methods.vpt_aoft import VptDeepAOFTConfig
from tests.helpers import ATOL, AVERAGE_HEAD, DIM, HEAD_100, RTOL, count_on, images, method_yaml, perturb, tiny_vit
from tests.methods.equations import dense_q

#: one 768-d generator vector per block of ViT-B/16 (docs/methods.md §3.4): 12 · 768
VIT_B16 = 9_216
#: AOFT-P as reprinted by secondary summaries (docs/methods.md §3.3, [S]), head included: 0.05 M VTAB-1k, 0.15 M FGVC
REPORTED_M = {"vtab": 0.05, "fgvc": 0.15}


@pytest.mark.parametrize("num_prompts", [1, 10, 50])
def test_count_is_one_vector_per_block_whatever_the_prompt_length(num_prompts):
    counts = count_on(VptDeepAOFTConfig(num_prompts=num_prompts), num_classes=100)
    assert counts["trainable_without_head"] == VIT_B16
    assert counts["trainable"] == VIT_B16 + HEAD_100


def test_count_reproduces_vtab_but_not_fgvc():
    assert round((VIT_B16 + AVERAGE_HEAD["vtab"]) / 1e6, 2) == REPORTED_M["vtab"]
    # unexplained: the FGVC heads alone are 0.18 M, more than the reported total (documented in the module)
    assert round(AVERAGE_HEAD["fgvc"] / 1e6, 2) > REPORTED_M["fgvc"]
    assert round((VIT_B16 + AVERAGE_HEAD["fgvc"]) / 1e6, 2) == 0.19


def adapted(num_prompts: int = 3, base=None):
    base = tiny_vit() if base is None else base
    return VptDeepAOFTConfig(num_prompts=num_prompts).apply(copy.deepcopy(base)).eval()


def test_prompts_are_the_first_columns_of_the_generator():
    model = adapted(num_prompts=5)
    perturb(model)
    shared = getattr(model, SHARED)
    prompts = shared.prompts()
    assert prompts.shape == (2, 5, DIM)
    for i, q in enumerate(shared.vpt_aoft_q.detach()):
        torch.testing.assert_close(prompts[i], dense_q(q)[:, :5].T, atol=ATOL, rtol=RTOL)


def test_forward_is_vpt_deep_with_the_generated_prompts():
    base = tiny_vit()
    model = adapted(num_prompts=4, base=base)
    perturb(model, scale=0.5)
    reference = VptDeepConfig(num_prompts=4).apply(copy.deepcopy(base)).eval()
    with torch.no_grad():
        reference.get_submodule(SHARED).vpt_prompts.copy_(model.get_submodule(SHARED).prompts())
        reference.head.load_state_dict(model.head.state_dict())
        x = images()
        torch.testing.assert_close(model(x), reference(x), atol=ATOL, rtol=RTOL)


def test_prompts_start_orthonormal_and_distinct_per_block():
    prompts = adapted(num_prompts=8).get_submodule(SHARED).prompts()
    for block in prompts:
        torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=block.dtype), atol=1e-6, rtol=0)
    assert not torch.allclose(prompts[0], prompts[1])


def test_generator_runs_in_float32_under_autocast():
    model = VptDeepAOFTConfig().apply(tiny_vit()).float()  # method tests default to float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.get_submodule(SHARED).prompts().dtype == torch.float32
        assert torch.isfinite(model(images().float())).all()


def test_prompt_length_above_the_width_is_refused():
    with pytest.raises(ValueError, match=rf"num_prompts={DIM + 1} is invalid: expected at most {DIM}"):
        VptDeepAOFTConfig(num_prompts=DIM + 1).apply(tiny_vit())


def test_yaml_builds_the_defaults():
    config = method_yaml("vpt_deep_aoft")
    assert isinstance(config, VptDeepAOFTConfig)
    assert (config.num_prompts, config.dropout, config.targets) == (10, 0.1, ["blocks"])
