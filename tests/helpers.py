"""Small shared helpers for tests: tiny real timm ViTs and the one documented tolerance."""

from __future__ import annotations

import timm
import torch
from torch import nn

#: the one tolerance for float32 equivalence checks (formula vs implementation, merged vs adapted)
ATOL = RTOL = 1e-5

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0)


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


def images(batch: int = 3, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb(model: nn.Module, scale: float = 0.1, seed: int = 2) -> None:
    """Add random noise to every trainable parameter, so no method sits at a trivial point."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p))
