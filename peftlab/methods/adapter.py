"""Bottleneck adapters on the MLP of every block: sequential Adapter and parallel AdaptFormer.

* ``adapter``: Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019 (arXiv 1902.00751), in the
  one-adapter-per-block form the ViT baselines use (VPT's "Pfeiffer" adapter, NOAH's Adapter-8, FacT Table 1):
  after the MLP, ``MLP'(x) = h + up(act(down(h)))`` with ``h = MLP(x)``.
* ``adaptformer``: Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition",
  NeurIPS 2022 (arXiv 2205.13535), §3.2: in parallel to the MLP, ``MLP'(x) = MLP(x) + s·up(ReLU(down(x)))`` with a
  fixed ``s = 0.1``, where ``x`` is the block's LayerNorm output (the MLP's input), as written in the paper.

Both wrap ``blocks.*.mlp`` (a timm ``Mlp``) and are **not mergeable**: the non-linear bottleneck stays at inference
(overhead: about ``2·D·h`` multiply-adds per token and block, 12,288 at ``D = 768, h = 8``, under 1% of a block).

Parameter counts on ViT-B/16 (12 blocks, D = 768), bottleneck ``h``: ``12·(D·h + h + h·D + D)``.
    * ``h = 8``: 156,768 → 0.16 M, the Adapter and AdaptFormer rows of FacT Table 1 / HTA-P Table 1 (VTAB-1k,
      head excluded; FacT §4.1: "hidden dimension h of Adapter and AdaptFormer ... set to 8", following NOAH).
    * ``h = 12``: 230,544; plus the mean FGVC head (180,407) = 410,951 → 0.41 M, the FGVC Adapter row of RLRR-P
      Table 3; plus the mean VTAB head (38,045) = 268,589 → 0.27 M, RLRR-P Table 2's VPT-paper Adapter row. ``h = 12``
      is VPT's reduction factor 64 (768 / 64); derived from the counts, not stated in those tables.

Choices:
    * ``up`` is zero-initialised, so the adapted model starts exactly at the pretrained one (Houlsby §2.1's
      near-identity init; AdaptFormer's up-projection is zero too). ``down`` is Xavier-uniform with zero bias, the
      init FacT (appendix B.5) and NOAH use; they Xavier-init ``up`` as well, which is not identity at start. VPT's
      own adapter zero-inits both layers, which blocks the gradient (FacT B.5); not reproduced.
    * Activation: GELU for ``adapter`` (VPT's adapter; NOAH uses QuickGELU, selectable), ReLU for AdaptFormer.
    * ``dropout`` (default 0) acts on the bottleneck activation, where NOAH and AdaptFormer put it.
    * ``style`` and ``scale`` are options of one config, so ``adapter`` with ``style=parallel`` gives the parallel
      adapter of He et al. (ICLR 2022) with GELU; ``adaptformer`` only changes the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from peftlab.methods import functional, register_method
from peftlab.methods.base import MethodConfig, check_choice, check_int, check_positive, check_probability
from peftlab.methods.layers import AdapterLayer

STYLES = ("sequential", "parallel")


class QuickGELU(nn.Module):
    """``x·σ(1.702 x)``, the GELU approximation of CLIP, used by NOAH's adapter."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU, "relu": nn.ReLU}


@register_method("adapter")
@dataclass
class AdapterConfig(MethodConfig):
    """Bottleneck adapter on every block's MLP (sequential: after it, as in the VPT/NOAH/FacT baselines).

    Args:
        style: ``sequential`` (``h + s·up(act(down(h)))``, ``h = MLP(x)``) or ``parallel``
            (``MLP(x) + s·up(act(down(x)))``).
        bottleneck: hidden width ``h`` of the bottleneck.
        scale: fixed factor ``s`` on the adapter branch.
        activation: ``gelu``, ``quick_gelu`` or ``relu``.
        dropout: dropout probability on the bottleneck activation.
    """

    wraps_any_module: ClassVar[bool] = True

    targets: list[str] = field(default_factory=lambda: ["blocks.*.mlp"])
    style: str = "sequential"
    bottleneck: int = 8
    scale: float = 1.0
    activation: str = "gelu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.style, "style", STYLES)
        check_int(self.bottleneck, "bottleneck")
        check_positive(self.scale, "scale")
        check_choice(self.activation, "activation", tuple(ACTIVATIONS))
        check_probability(self.dropout, "dropout")

    def create_layer(self, name: str, base: nn.Module, shared: nn.Module | None) -> nn.Module:
        if not all(isinstance(getattr(base, fc, None), nn.Linear) for fc in ("fc1", "fc2")):
            raise TypeError(
                f"method {self.name!r} wraps MLP modules with fc1/fc2 Linear layers (timm Mlp, e.g. 'blocks.*.mlp'); "
                f"{name!r} is a {type(base).__name__}"
            )
        return BottleneckAdapter(
            base, self.bottleneck, self.style, self.scale, ACTIVATIONS[self.activation](), self.dropout
        )


@register_method("adaptformer")
@dataclass
class AdaptFormerConfig(AdapterConfig):
    """AdaptFormer: a ReLU bottleneck in parallel to every block's MLP, scaled by a fixed ``s = 0.1``."""

    style: str = "parallel"
    scale: float = 0.1
    activation: str = "relu"


class BottleneckAdapter(AdapterLayer):
    """A frozen MLP plus a trainable ``D → h → D`` bottleneck, sequential (after the MLP) or parallel (beside it)."""

    mergeable: ClassVar[bool] = False
    no_decay = ("adapter_down_bias", "adapter_up_bias")  # biases, like every bias of the backbone

    def __init__(
        self,
        base_layer: nn.Module,
        bottleneck: int,
        style: str = "sequential",
        scale: float = 1.0,
        activation: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base_layer)
        self.style = style
        self.scale = scale
        in_dim = base_layer.fc2.out_features if style == "sequential" else base_layer.fc1.in_features
        out_dim = base_layer.fc2.out_features
        weight = base_layer.fc1.weight
        self.adapter_down_weight = nn.Parameter(weight.new_empty(bottleneck, in_dim))
        self.adapter_down_bias = nn.Parameter(weight.new_empty(bottleneck))
        self.adapter_up_weight = nn.Parameter(weight.new_empty(out_dim, bottleneck))
        self.adapter_up_bias = nn.Parameter(weight.new_empty(out_dim))
        act = nn.GELU() if activation is None else activation
        self.adapter_act = nn.Sequential(act, nn.Dropout(dropout)) if dropout > 0 else act
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.adapter_down_weight)
        nn.init.zeros_(self.adapter_down_bias)
        nn.init.zeros_(self.adapter_up_weight)
        nn.init.zeros_(self.adapter_up_bias)

    def branch(self, x: Tensor) -> Tensor:
        """``s·up(act(down(x)))``."""
        down = (self.adapter_down_weight, self.adapter_down_bias)
        up = (self.adapter_up_weight, self.adapter_up_bias)
        return self.scale * functional.bottleneck_adapter(x, *down, *up, self.adapter_act)

    def forward(self, x: Tensor) -> Tensor:
        h = self.base_layer(x)
        return h + self.branch(h if self.style == "sequential" else x)

    def extra_repr(self) -> str:
        return f"style={self.style}, bottleneck={self.adapter_down_weight.shape[0]}, scale={self.scale:g}"
