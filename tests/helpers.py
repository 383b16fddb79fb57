"""Small shared helpers for tests: tiny real timm ViTs, the one documented tolerance, parameter counts on the
papers' backbones."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from peftlab.conf import CONFIG_DIR
from peftlab.methods.state import count_parameters

#: the one tolerance for equivalence checks (formula vs implementation, merged vs adapted). Method tests run in
#: float64 (``tests/methods/conftest.py``): rounding over a tiny ViT's few thousand operations stays below ~1e-12
#: (eps 2.2e-16), while a wrong sign or a missing term moves outputs by ≥ 1e-3 (parameters are perturbed by 0.1).
ATOL = RTOL = 1e-8

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)
DIM = TINY_VIT["embed_dim"]  # tiny_vit width

#: a 100-class head on ViT-B/16: 768 · 100 + 100
HEAD_100 = 76_900
#: the benchmark's average head, mean of (D + 1) · C over its tasks (docs/methods.md, "Conventions"); the tables' counts
#: include it. VTAB-1k (19 tasks) and FGVC (5) on ViT-B/16 (D = 768), VTAB-1k on ViT-L/16 (D = 1024).
AVERAGE_HEAD = {"vtab": 38_045, "fgvc": 180_407, "vtab_large": 50_711}

METHOD_CONF = CONFIG_DIR / "method"
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_experiment(name: str):
    """``experiments/<name>.py`` (a script, not a package module) loaded fresh as the module ``peftlab_<name>``, the
    name the scripts use for each other (registered in ``sys.modules``: dataclasses resolve their module there)."""
    spec = importlib.util.spec_from_file_location(f"peftlab_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_vit(num_classes: int = 5, seed: int = 0, **overrides) -> nn.Module:
    """A 2-block ViT of timm's own VisionTransformer class, randomly initialised (biases and norms included)."""
    torch.manual_seed(seed)
    kwargs = {**TINY_VIT, **overrides}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, **kwargs)
    with torch.no_grad():  # timm zero-inits biases and sets LN to identity; randomise so tests see every term
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def vit_b16(num_classes: int = 0) -> nn.Module:
    """The papers' ViT-B/16 architecture (random init: only shapes matter for parameter counts)."""
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes)


def vit_l16(num_classes: int = 0) -> nn.Module:
    return timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=num_classes)


def count_on(config, num_classes: int = 0, factory: Callable[[int], nn.Module] = vit_b16) -> dict[str, int]:
    """``count_parameters`` of ``config`` applied to ``factory(num_classes)`` (ViT-B/16 by default), built and
    adapted on the meta device: the real shapes, no memory and no init time."""
    with torch.device("meta"):
        return count_parameters(config.apply(factory(num_classes)))


def assert_invalid(config_cls: type, overrides: dict, message: str) -> None:
    """``config_cls(**overrides)`` raises a ValueError whose message matches the regex ``message``."""
    with pytest.raises(ValueError, match=message):
        config_cls(**overrides)


def method_yaml(name: str):
    """The method config that ``peftlab/conf/method/<name>.yaml`` instantiates."""
    return instantiate(OmegaConf.load(METHOD_CONF / f"{name}.yaml"))


def images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb(model: nn.Module, scale: float = 0.1, seed: int = 2) -> None:
    """Add random noise to every trainable parameter, so no method sits at a trivial point."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p))


@torch.no_grad()
def with_qv_weights(
    base: nn.Module, model: nn.Module, new_weight: Callable[[torch.Tensor, nn.Module], torch.Tensor]
) -> nn.Module:
    """A copy of ``base`` whose fused qkv weights hold ``new_weight(w, layer)`` in the q and v rows (``w`` the base's
    rows, ``layer`` the adapted ``parts["q"]`` / ``parts["v"]`` of ``model``), k unchanged, with ``model``'s head."""
    reference = copy.deepcopy(base)
    reference.head.load_state_dict(model.head.state_dict())
    for block, adapted, ref in zip(base.blocks, model.blocks, reference.blocks, strict=True):
        w_q, w_k, w_v = block.attn.qkv.weight.chunk(3)
        parts = adapted.attn.qkv.parts
        ref.attn.qkv.weight.copy_(torch.cat([new_weight(w_q, parts["q"]), w_k, new_weight(w_v, parts["v"])]))
    return reference


def without_dropout(name: str):
    """Method ``name``'s default config with its dropout off, for comparisons that two dropout draws would spoil (a
    compiled step draws other masks than the eager one; the fused and per-part paths draw theirs in other orders)."""
    from peftlab.methods import get_method

    config = get_method(name)
    return config(dropout=0.0) if "dropout" in config.__dataclass_fields__ else config()


def assert_fused_qkv_equals_parts(model: nn.Module, qkv: nn.Module) -> None:
    """``qkv`` (a fused-qkv wrapper of ``model``) on its one-GEMM path computes what each of its q, k, v parts computes
    on its own (their own ``forward``): outputs, and the gradients of the layer's and the method's shared trainable
    tensors."""
    from peftlab.methods.layers import SHARED

    x = torch.randn(2, 5, qkv.base_layer.in_features)
    fused = qkv._qkv_forward(x)
    assert fused is not None, "the one-GEMM qkv path declined (the parts ran on their own)"
    alone = torch.cat([part(x) for part in qkv.parts.values()], dim=-1)
    torch.testing.assert_close(fused, alone, atol=ATOL, rtol=RTOL)
    params = [p for p in qkv.parameters() if p.requires_grad]
    if hasattr(model, SHARED):
        params += [p for p in getattr(model, SHARED).parameters() if p.requires_grad]
    weights = torch.randn_like(fused)
    got = torch.autograd.grad((fused * weights).sum(), params, allow_unused=True)
    expected = torch.autograd.grad((alone * weights).sum(), params, allow_unused=True)
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        if e is None:
            assert g is None or not g.any(), f"parameter {index}: gradient only on the fused path"
        else:
            torch.testing.assert_close(g, e, atol=ATOL, rtol=RTOL, msg=f"parameter {index}")


@torch.no_grad()
def assert_train_dropout(model: nn.Module) -> None:
    """In eval mode two forwards agree exactly; in train mode, with different dropout masks, they differ."""
    x = images()
    model.eval()
    torch.testing.assert_close(model(x), model(x), atol=0, rtol=0)
    model.train()
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(x))
