"""Reading a run back from its checkpoint: the training config travels inside the ``.ckpt`` file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from peftlab.module import PREFIX
from peftlab.options import migrate_moved_keys


class CheckpointError(ValueError):
    """A checkpoint file that cannot (or must not) be loaded: corrupt, truncated, or holding arbitrary objects."""


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of a file from outside, restricted to tensors and plain containers (``weights_only=True``): a
    crafted pickle cannot run code. Every failure is one CheckpointError line naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a class or function to call: what weights_only exists to refuse
            raise CheckpointError(
                f"{path} holds Python objects other than tensors and plain containers; refused, since loading it "
                f"could run arbitrary code. Use a {what} written by peftlab (or re-save only its state_dict)"
            ) from None
        raise CheckpointError(_unreadable(path, what, err)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as err:
        raise CheckpointError(_unreadable(path, what, err)) from None


def _unreadable(path: Path, what: str, err: BaseException) -> str:
    size = path.stat().st_size
    reason = "it is empty" if size == 0 else f"{size} bytes, {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return f"{path} is not a readable {what} ({reason}): it is truncated or corrupt; copy it again or retrain"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. Pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, dict) or "config" not in (checkpoint.get("peftlab") or {}):
        raise CheckpointError(
            f"{path} is not a peftlab checkpoint (no training config inside); was it made by peftlab.train?"
        )
    return checkpoint


def run_config(checkpoint: dict[str, Any], overrides: list[str] | None = None) -> DictConfig:
    """The training config stored in ``checkpoint`` with dotlist ``overrides`` (e.g. ``data.root=/x``) applied."""
    cfg = migrate_moved_keys(OmegaConf.create(checkpoint["peftlab"]["config"]))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trainable tensors of the wrapped model (without the LightningModule's ``model.`` prefix)."""
    return {k[len(PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
