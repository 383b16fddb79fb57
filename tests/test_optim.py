"""optim.py: parameter groups (weight decay declared by the methods, head lr, layer-wise lr decay) and the schedule."""

from __future__ import annotations

import dataclasses
import re
from functools import partial

import pytest
import torch

from peftlab.build import build_recipe
from peftlab.methods import get_method, list_methods
from peftlab.module import ClassificationModule
from peftlab.optim import OptimRecipe, parameter_groups, scale_learning_rates, warmup_cosine
from tests.helpers import tiny_vit

LR = 0.0123  # an lr no shipped recipe has

WD = 0.05


def group_of(groups: list[dict], model) -> dict[str, tuple[float, float]]:
    """``{parameter name: (weight decay, lr_scale)}`` of every grouped parameter."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["weight_decay"], g["lr_scale"]) for g in groups for p in g["params"]}


def adapted(method: str, **options):
    return get_method(method)(**options).apply(tiny_vit())


def no_decay_names(model) -> set[str]:
    return {n for n, (wd, _) in group_of(parameter_groups(model, WD), model).items() if wd == 0.0}


# The official RLRR code's parameter names (models/networks.py, github.com/zstarN70/RLRR) for each peftlab tensor,
# and its rule (``get_parameters``): names containing "bias" or "norm" get no weight decay.
OFFICIAL_RLRR_NAMES = [
    (r"blocks\.(\d+)\.attn\.qkv\.parts\.([qkv])\.rlrr_scale_in", "transformer.encoder.layer.{0}.attn.{1}.scale_col"),
    (r"blocks\.(\d+)\.attn\.qkv\.parts\.([qkv])\.rlrr_scale_out", "transformer.encoder.layer.{0}.attn.{1}.scale_line"),
    (r"blocks\.(\d+)\.attn\.qkv\.parts\.([qkv])\.rlrr_shift", "transformer.encoder.layer.{0}.attn.{1}.shift_bias"),
    (r"blocks\.(\d+)\.(attn\.proj|mlp\.fc1|mlp\.fc2)\.rlrr_scale_in", "transformer.encoder.layer.{0}.{1}.scale_col"),
    (r"blocks\.(\d+)\.(attn\.proj|mlp\.fc1|mlp\.fc2)\.rlrr_scale_out", "transformer.encoder.layer.{0}.{1}.scale_line"),
    (r"blocks\.(\d+)\.(attn\.proj|mlp\.fc1|mlp\.fc2)\.rlrr_shift", "transformer.encoder.layer.{0}.{1}.shift_bias"),
    (r"blocks\.(\d+)\.norm1\.ssf_(scale|shift)", "transformer.encoder.layer.{0}.ssf_{1}_attn_norm"),
    (r"blocks\.(\d+)\.norm2\.ssf_(scale|shift)", "transformer.encoder.layer.{0}.ssf_{1}_ffn_norm"),
    (r"patch_embed\.proj\.ssf_(scale|shift)", "transformer.embeddings.ssf_{0}_patch"),
    (r"norm\.ssf_(scale|shift)", "transformer.encoder.ssf_{0}_enc_norm"),
    (r"head\.(weight|bias)", "head.{0}"),
]


def official_rlrr_name(name: str) -> str:
    for pattern, official in OFFICIAL_RLRR_NAMES:
        match = re.fullmatch(pattern, name)
        if match:
            return official.format(*match.groups())
    raise AssertionError(f"no official counterpart for trainable tensor {name!r}")


def test_rlrr_weight_decay_groups_are_the_official_codes():
    model = adapted("rlrr")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    official = {n: official_rlrr_name(n) for n in trainable}
    expected = {n for n, o in official.items() if "bias" in o or "norm" in o}
    assert no_decay_names(model) == expected
    # the facts the issue names: every shift is exempt, the patch-embedding SSF is decayed
    assert all(n in expected for n in trainable if n.endswith("rlrr_shift"))
    assert not any(n.startswith("patch_embed.") for n in expected)


@pytest.mark.parametrize("name", list_methods())
def test_base_model_tensors_follow_the_one_default(name):
    """Trainable base-model tensors (head, BitFit biases, full fine-tuning): biases, norm affines, cls token and
    position embedding are not decayed, every other base tensor is."""
    model = adapted(name)
    exempt = no_decay_names(model)
    base = {n for n, p in model.named_parameters() if p.requires_grad and not _method_owned(n)}
    for n in base:
        leaf = n.rsplit(".", 1)[-1]
        expected_exempt = leaf == "bias" or re.search(r"(^|\.)norm\d?\.", n) or n in ("cls_token", "pos_embed")
        assert (n in exempt) == bool(expected_exempt), n


def _method_owned(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return name.startswith("peft_shared.") or "_" in leaf and leaf not in ("cls_token", "pos_embed")


@pytest.mark.parametrize(
    "method, exempt_leaves",
    [
        ("adapter", {"adapter_down_bias", "adapter_up_bias"}),
        ("arc", {"arc_bias"}),
        ("ssf", {"ssf_scale", "ssf_shift"}),  # only after LayerNorms
        ("lora", set()),
        ("hta", set()),
        ("vpt_deep", set()),
    ],
)
def test_methods_declare_their_exempt_tensors(method, exempt_leaves):
    model = adapted(method)
    exempt = {n.rsplit(".", 1)[-1] for n in no_decay_names(model) if _method_owned(n)}
    assert exempt == exempt_leaves
    if method == "ssf":
        assert all(re.search(r"norm\d?\.ssf_", n) for n in no_decay_names(model) if _method_owned(n))


def test_groups_cover_every_trainable_tensor_once():
    model = adapted("full")
    groups = parameter_groups(model, WD)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert {g["weight_decay"] for g in groups} == {WD, 0.0}


def test_defaults_keep_one_learning_rate():
    model = adapted("full")
    assert {scale for _, scale in group_of(parameter_groups(model, WD), model).values()} == {1.0}


def test_head_lr_scale_multiplies_only_the_head():
    model = adapted("lora")
    scales = {n: s for n, (_, s) in group_of(parameter_groups(model, WD, head_lr_scale=10.0), model).items()}
    assert {n for n, s in scales.items() if s == 10.0} == {"head.weight", "head.bias"}
    assert all(s == 1.0 for n, s in scales.items() if not n.startswith("head."))


def test_layer_decay_follows_depth():
    decay = 0.5
    model = adapted("full")  # tiny_vit: embeddings, 2 blocks, head -> layer ids 0..3
    scales = {n: s for n, (_, s) in group_of(parameter_groups(model, WD, layer_decay=decay), model).items()}
    assert scales["cls_token"] == scales["pos_embed"] == scales["patch_embed.proj.weight"] == decay**3
    assert all(s == decay**2 for n, s in scales.items() if n.startswith("blocks.0."))
    assert all(s == decay for n, s in scales.items() if n.startswith("blocks.1.") or n.startswith("norm."))
    assert scales["head.weight"] == scales["head.bias"] == 1.0


def test_layer_decay_reaches_method_tensors_inside_blocks():
    model = adapted("lora")
    scales = {n: s for n, (_, s) in group_of(parameter_groups(model, WD, layer_decay=0.5), model).items()}
    assert all(s == 0.25 for n, s in scales.items() if n.startswith("blocks.0."))


def test_declared_lr_scales_multiply(monkeypatch):
    from peftlab.methods.lora import LoraLayer

    monkeypatch.setattr(LoraLayer, "lr_scales", {"lora_b": 4.0})
    model = adapted("lora")
    scales = {n: s for n, (_, s) in group_of(parameter_groups(model, WD, head_lr_scale=2.0), model).items()}
    assert all(s == 4.0 for n, s in scales.items() if n.endswith("lora_b"))
    assert all(s == 1.0 for n, s in scales.items() if n.endswith("lora_a"))
    assert scales["head.weight"] == 2.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"head_lr_scale": 0.0}, r"optim.head_lr_scale=0.0 is invalid"),
        ({"layer_decay": 1.5}, r"optim.layer_decay=1.5 is invalid: expected a number in \(0, 1\]"),
        ({"layer_decay": 0}, r"optim.layer_decay=0 is invalid"),
        ({"weight_decay": -1.0}, r"optim.weight_decay=-1.0 is invalid"),
        ({"lr": 0}, r"optim.lr=0 is invalid"),
    ],
)
def test_bad_recipe_is_refused_when_the_recipe_is_built(options, message):
    with pytest.raises(ValueError, match=message):
        ClassificationModule(adapted("linear"), 5, OptimRecipe(optimizer=partial(torch.optim.AdamW), **options))


def test_module_applies_the_scales_and_the_schedule_keeps_them():
    lr = 1e-3
    recipe = OptimRecipe(optimizer=partial(torch.optim.AdamW), lr=lr, head_lr_scale=10.0, layer_decay=0.5)
    module = ClassificationModule(adapted("full"), 5, recipe)
    optimizer = module.configure_optimizers()
    lrs = sorted({round(g["lr"] / lr, 9) for g in optimizer.param_groups})
    assert lrs == [0.125, 0.25, 0.5, 10.0]
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=0)
    assert [g["lr"] for g in optimizer.param_groups] == [g["initial_lr"] for g in optimizer.param_groups]
    optimizer.step()
    schedule.step()
    assert all(g["lr"] < g["initial_lr"] for g in optimizer.param_groups)


def test_scale_learning_rates_without_scales_is_a_no_op():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert scale_learning_rates(optimizer).param_groups[0]["lr"] == 0.1


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=4, warmup_start_factor=0.0, min_lr_factor=0.1)
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lrs[10] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps > 0"):
        warmup_cosine(optimizer, total_steps=0, warmup_steps=0)


@pytest.mark.parametrize("optim", ["adamw", "sgd"])
def test_shipped_optim_groups_are_one_recipe_each(make_cfg, optim):
    """Every key of the group is an OptimRecipe field (nothing popped, nothing read by another group)."""
    cfg = make_cfg(f"optim={optim}", f"optim.lr={LR}")
    recipe = build_recipe(cfg)
    assert set(cfg.optim) == {f.name for f in dataclasses.fields(OptimRecipe)}
    assert recipe.head_lr_scale == 1.0 and recipe.layer_decay is None and recipe.lr == LR
    optimizer = recipe.create_optimizer(adapted("linear"))
    assert type(optimizer).__name__ == cfg.optim.optimizer._target_.rsplit(".", 1)[-1]
    assert {g["lr"] for g in optimizer.param_groups} == {LR}  # optim.lr reaches the optimizer


def test_layer_decay_from_the_command_line(make_cfg):
    from peftlab.build import build

    cfg = make_cfg("method=full", "optim.layer_decay=0.65", "optim.head_lr_scale=10")
    module = build(cfg, loggers=False).module
    assert (module.recipe.layer_decay, module.recipe.head_lr_scale) == (0.65, 10)
