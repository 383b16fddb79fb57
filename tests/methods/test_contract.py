"""The contract battery, generated from the registry: every registered method must pass every test here."""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods import NotMergeableError, get_method, list_methods
from peftlab.methods.inject import head_parameters, merge_and_unload, top_level_adapters
from peftlab.methods.layers import SHARED, AdapterLayer
from peftlab.methods.state import load_trainable_state_dict, trainable_state_dict
from tests.helpers import ATOL, RTOL, assert_fused_qkv_equals_parts, images, perturb, tiny_vit, without_dropout

METHODS = list_methods()


def adapted(name: str, seed: int = 0):
    base = tiny_vit(seed=seed)
    model = get_method(name)().apply(copy.deepcopy(base))
    return base, model.eval()


def method_parameter_ids(model) -> set[int]:
    ids = {id(p) for m in model.modules() if isinstance(m, AdapterLayer) for p in m.adapter_parameters()}
    if hasattr(model, SHARED):
        ids |= {id(p) for p in getattr(model, SHARED).parameters()}
    return ids


@pytest.mark.parametrize("name", METHODS)
def test_identity_at_init(name):
    base, model = adapted(name)
    x = images()
    same = torch.allclose(model(x), base(x), atol=ATOL, rtol=RTOL)
    assert same == get_method(name).identity_at_init, (
        f"{name}: identity_at_init={get_method(name).identity_at_init} but output "
        f"{'equals' if same else 'differs from'} the base model at init"
    )


@pytest.mark.parametrize("name", METHODS)
def test_merge_equivalence(name):
    base, model = adapted(name)
    perturb(model)
    x = images()
    with torch.no_grad():
        expected = model(x)
    if not all(layer.mergeable for _, layer in top_level_adapters(model)):
        with pytest.raises(NotMergeableError, match="cannot be merged"):
            merge_and_unload(model)
        return
    merged = merge_and_unload(model)
    assert not any(isinstance(m, AdapterLayer) for m in merged.modules()), "merged model still has adapter layers"
    assert type(merged) is type(base)
    assert [n for n, _ in merged.named_parameters()] == [n for n, _ in base.named_parameters()], (
        "merged model must have exactly the plain timm parameter layout"
    )
    with torch.no_grad():
        out = merged(x)
        torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)
        assert not torch.allclose(out, base(x), atol=1e-4), "perturbed method should change the output"


@pytest.mark.parametrize("name", METHODS)
def test_only_method_parameters_train(name):
    base, model = adapted(name)
    perturb(model)
    cls = get_method(name)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    expected = method_parameter_ids(model) | {id(p) for p in head_parameters(model).parameters()}
    if cls.base_trainable:
        import fnmatch

        expected |= {
            id(p) for n, p in model.named_parameters() if any(fnmatch.fnmatchcase(n, pat) for pat in cls.base_trainable)
        }
    assert trainable == expected
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    target = torch.tensor([0, 1, 2])
    for step in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images(seed=step)), target)
        loss.backward()
        if step == 0:
            for n, p in model.named_parameters():
                if p.requires_grad:
                    assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {n} got no gradient"
                    assert p.grad.abs().sum() > 0, f"{name}: {n} got an all-zero gradient"
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), f"{name}: frozen parameter {n} changed"
        else:
            assert not torch.equal(p, trained_before[n]), f"{name}: trainable parameter {n} did not change"


@pytest.mark.parametrize("name", METHODS)
def test_trainable_state_dict_round_trip(name):
    _, model = adapted(name)
    perturb(model)
    state = trainable_state_dict(model)
    assert state and all(not v.requires_grad for v in state.values())
    _, fresh = adapted(name)
    load_trainable_state_dict(fresh, state)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    with pytest.raises(KeyError, match="does not match"):
        load_trainable_state_dict(fresh, {**state, "not.a.key": torch.zeros(1)})


@pytest.mark.parametrize("name", METHODS)
def test_every_method_documents_its_paper(name):
    import inspect

    module = inspect.getmodule(get_method(name))
    assert module.__doc__ and len(module.__doc__) > 40, f"{module.__name__} needs a docstring naming the paper"
    assert get_method(name).__doc__, f"{name} config needs a docstring"


@pytest.mark.parametrize("name", METHODS)
def test_config_keeps_no_state_between_calls(name):
    """create_shared's result reaches create_layer as an argument, never through the config object."""
    config = get_method(name)()
    before = copy.deepcopy(vars(config))
    config.apply(tiny_vit())
    assert vars(config) == before, f"{name}: apply() stored {sorted(set(vars(config)) - set(before))} on the config"


def strides_agree(grad: torch.Tensor, param: torch.Tensor) -> bool:
    """Autograd's gradient layout contract: equal strides in every dimension of size > 1."""
    return all(g == p for g, p, size in zip(grad.stride(), param.stride(), param.shape, strict=True) if size > 1)


@pytest.mark.parametrize("name", METHODS)
def test_gradients_arrive_in_each_parameters_layout(name):
    """Every trainable parameter receives its gradient in its own strides, so gradient accumulation keeps the tensor
    instead of copying it (a strided gradient costs an allocation and a copy kernel per parameter and step)."""
    _, model = adapted(name)
    model.train()
    strided = []
    for key, param in model.named_parameters():
        if param.requires_grad:
            report = f"{key} {tuple(param.shape)}: strides {param.stride()}, gradient"
            param.register_hook(
                lambda g, p=param, r=report: None if strides_agree(g, p) else strided.append(f"{r} {g.stride()}")
            )
    model(images()).square().mean().backward()
    assert not strided, f"{name}: gradients that gradient accumulation must copy: {strided}"


def fused_qkv_layers(model) -> list:
    """The fused-qkv wrappers of ``model`` whose adapted parts run their class's own one-GEMM ``qkv_forward``."""
    found = []
    for module in model.modules():
        parts = [p for p in getattr(module, "parts", {}).values() if isinstance(p, AdapterLayer)]
        if parts and len({type(p) for p in parts}) == 1 and hasattr(type(parts[0]), "qkv_forward"):
            found.append(module)
    return found


#: the methods whose q, k, v parts run one-GEMM paths over timm's fused qkv
QKV_METHODS = [name for name in METHODS if fused_qkv_layers(without_dropout(name).apply(tiny_vit(depth=1)))]


@pytest.mark.parametrize("name", QKV_METHODS)
def test_fused_qkv_path_equals_its_parts_alone_with_gradients(name):
    """A method's one-GEMM path over timm's fused qkv computes what each of its q, k, v parts computes on its own
    (their own ``forward``): outputs and the gradients of every trainable tensor of the layer, in training mode."""
    model = without_dropout(name).apply(tiny_vit())
    perturb(model)
    assert_fused_qkv_equals_parts(model, fused_qkv_layers(model.train())[0])
