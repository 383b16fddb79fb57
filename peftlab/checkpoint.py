"""Reading a run back from its checkpoint: the training config travels inside the ``.ckpt`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from peftlab.module import PREFIX


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. Pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "peftlab" not in checkpoint or "config" not in checkpoint["peftlab"]:
        raise ValueError(
            f"{path} is not a peftlab checkpoint (no training config inside); was it made by peftlab.train?"
        )
    return checkpoint


def run_config(checkpoint: dict[str, Any], overrides: list[str] | None = None) -> DictConfig:
    """The training config stored in ``checkpoint`` with dotlist ``overrides`` (e.g. ``data.root=/x``) applied."""
    cfg = OmegaConf.create(checkpoint["peftlab"]["config"])
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trainable tensors of the wrapped model (without the LightningModule's ``model.`` prefix)."""
    return {k[len(PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
