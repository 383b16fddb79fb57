"""VPT: Jia et al., "Visual Prompt Tuning", ECCV 2022 (arXiv 2203.12119).

``p`` learnable prompt tokens ``P ∈ R^{p×D}`` are inserted after the cls token (§3.2)::

    VPT-Shallow:  [x₁, Z₁, E₁] = L₁([x₀, P, E₀]),       [x_i, Z_i, E_i] = L_i([x_{i-1}, Z_{i-1}, E_{i-1}])
    VPT-Deep:     [x_i, _,  E_i] = L_i([x_{i-1}, P_{i-1}, E_{i-1}])    for every layer i = 1 … N

Shallow prompts enter once and are carried through; deep prompts are a new set at every block, replacing the
previous block's prompt outputs. The prompt outputs are dropped after the last block, before the final norm and the
pooling, so the head sees exactly the tokens it sees without prompts (cls pooling, and ``global_pool='avg'``
averages the patch tokens only).

Not mergeable (the extra tokens are attended at inference: sequence length N + p, attention cost grows with
(N + p)²) and not identity at init (the prompts change every attention output).

Implementation: one wrapper around the model's ``blocks`` Sequential (``wraps_any_module``); timm's forward is not
patched. The prompts are method-level parameters built from the model's geometry (depth, width, patch size, number
of prefix tokens) in ``create_shared``; the wrapper references them.

Parameter counts (ViT-B/16, D = 768, 12 blocks): shallow ``p·768``, deep ``12·p·768`` (e.g. p = 50: 38,400 and
460,800; + 76,900 with a 100-class head). The VTAB-1k rows of RLRR-P/HTA-P (VPT-Shallow 0.11 M, VPT-Deep 0.60 M) and
FGVC (0.25 M, 0.85 M) average over per-task prompt lengths and include the heads; those lengths were not available,
so the rows are not reproduced. Subtracting the mean heads (VTAB 38,045; FGVC 180,407) implies mean lengths of
about 94 (shallow) / 61 (deep) on VTAB-1k and 91 / 73 on FGVC.

Choices:
    * ``num_prompts`` defaults to 10 (VPT searches p ∈ {1, 5, 10, 50, 100, 200} per task; pass the task's length
      as a config value).
    * Init as the official code: uniform(±√(6 / (C·patch_area + D))), Xavier with the patch's fan-in (C = 3
      channels, patch 16: ±0.0625 on ViT-B/16).
    * ``dropout`` on the prompt embeddings, default 0.1 (the official config's default is 0.0; 0.1 is the
      value NOAH's VPT runs use).
    * Prompts sit after all prefix tokens (cls and any register tokens), per ``model.num_prefix_tokens``.
    * timm's ``set_grad_checkpointing`` (``checkpoint_seq``) and the masked ``forward_features(attn_mask=...)`` path
      iterate over ``blocks`` and are not supported with VPT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_int, check_probability
from peftlab.methods.layers import SHARED, AdapterLayer


@register_method("vpt_shallow")
@dataclass
class VptConfig(MethodConfig):
    """VPT-Shallow: ``num_prompts`` learnable tokens inserted after the cls token at the input of the first block.

    Args:
        num_prompts: prompt length ``p``.
        dropout: dropout probability on the prompt embeddings.
    """

    identity_at_init: ClassVar[bool] = False
    wraps_any_module: ClassVar[bool] = True
    #: a new set of prompts at every block (VPT-Deep) instead of once at the input (VPT-Shallow)
    deep: ClassVar[bool] = False

    targets: list[str] = field(default_factory=lambda: ["blocks"])
    num_prompts: int = 10
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.num_prompts, "num_prompts")
        check_probability(self.dropout, "dropout")

    def create_shared(self, model: nn.Module, targets: list[str]) -> nn.Module:
        return self.create_prompts(prompt_geometry(model, self.name, self.deep))

    def create_prompts(self, geometry: PromptGeometry) -> nn.Module:
        """The shared module that holds (or generates) the prompts: any module with ``prompts()`` returning
        ``(sets, p, D)`` and a ``num_prefix_tokens`` attribute. Variants that generate prompts override this."""
        return VptPrompts(geometry, self.num_prompts)

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module) -> nn.Module:
        if not isinstance(base, nn.Sequential):
            raise TypeError(
                f"method {self.name!r} wraps the Sequential of transformer blocks ('blocks'); "
                f"{name!r} is a {type(base).__name__}"
            )
        return PromptedBlocks(base, shared, self.deep, self.dropout)


@register_method("vpt_deep")
@dataclass
class VptDeepConfig(VptConfig):
    """VPT-Deep: a new set of ``num_prompts`` learnable tokens at the input of every block."""

    deep: ClassVar[bool] = True


@dataclass(frozen=True)
class PromptGeometry:
    """What prompts depend on in the model: how many sets (1, or one per block), width, the patch's fan-in (for the
    init) and the number of prefix tokens (cls, registers) the prompts follow."""

    num_sets: int
    dim: int
    patch_fan_in: int
    num_prefix_tokens: int


def prompt_geometry(model: nn.Module, method: str, deep: bool) -> PromptGeometry:
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if not isinstance(blocks, nn.Sequential) or patch_embed is None:
        raise TypeError(
            f"method {method!r} needs a timm VisionTransformer (blocks Sequential and patch_embed); "
            f"got {type(model).__name__}"
        )
    return PromptGeometry(
        num_sets=len(blocks) if deep else 1,
        dim=model.embed_dim,
        patch_fan_in=patch_embed.proj.in_channels * math.prod(patch_embed.patch_size),
        num_prefix_tokens=getattr(model, "num_prefix_tokens", 1),
    )


class VptPrompts(nn.Module):
    """The prompt embeddings ``(sets, p, D)``: one set (shallow) or one per block (deep)."""

    def __init__(self, geometry: PromptGeometry, num_prompts: int) -> None:
        super().__init__()
        self.num_prefix_tokens = geometry.num_prefix_tokens
        self.patch_fan_in = geometry.patch_fan_in
        self.vpt_prompts = nn.Parameter(torch.empty(geometry.num_sets, num_prompts, geometry.dim))
        self.reset_parameters()

    def prompts(self) -> Tensor:
        return self.vpt_prompts

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = math.sqrt(6.0 / (self.patch_fan_in + self.vpt_prompts.shape[-1]))
        nn.init.uniform_(self.vpt_prompts, -bound, bound)


class PromptedBlocks(AdapterLayer):
    """The frozen transformer blocks run on ``[prefix, prompts, patches]``; prompt outputs are removed at the end."""

    mergeable: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Sequential, prompts: nn.Module, deep: bool, dropout: float = 0.0) -> None:
        super().__init__(base_layer)
        object.__setattr__(self, "_prompts", prompts)  # owned by model.peft_shared, not registered here
        self.deep = deep
        self.prompt_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        prompts = self._prompts.prompts()
        prefix = self._prompts.num_prefix_tokens
        x = functional.vpt_insert_prompts(x, self.prompt_dropout(prompts[0]), prefix)
        for i, block in enumerate(self.base_layer):
            if self.deep and i > 0:
                x = functional.vpt_replace_prompts(x, self.prompt_dropout(prompts[i]), prefix)
            x = block(x)
        return functional.vpt_remove_prompts(x, prompts.shape[1], prefix)

    def extra_repr(self) -> str:
        return f"deep={self.deep}, prompts from model.{SHARED}"
