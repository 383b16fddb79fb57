"""``python -m peftlab.export ckpt_path=... out=model.safetensors``: write the merged (plain timm) model.

Mergeable methods fold into the frozen weights, so the exported model has exactly timm's architecture and zero
inference overhead; its output is checked against the adapted model before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from peftlab.api import CONFIG_ATTRIBUTE, save_adapter
from peftlab.backbones import data_config
from peftlab.build import build_datamodule, build_method, build_model
from peftlab.checkpoint import load_checkpoint, model_state, run_config
from peftlab.conf import CONFIG_PATH
from peftlab.methods import NotMergeableError
from peftlab.methods.inject import merge_and_unload
from peftlab.methods.state import load_trainable_state_dict
from peftlab.results import atomic_write_text, umask_mode
from peftlab.utils import run_cli

log = logging.getLogger("peftlab")


def export(cfg: DictConfig) -> Path:
    out = Path(cfg.out).expanduser().resolve()
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another out= path (exports are never overwritten)")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    run_cfg = run_config(checkpoint, cfg.overrides)
    method = build_method(run_cfg)
    model = build_model(run_cfg, method).eval()
    load_trainable_state_dict(model, model_state(checkpoint))
    if cfg.get("adapter"):
        setattr(model, CONFIG_ATTRIBUTE, method)
        print(f"exported the {method.name} adapter to {save_adapter(model, out)}", flush=True)
        return out
    preprocessing = eval_preprocessing(run_cfg, model)
    if cfg.merge:
        model = merge_checked(model, image_size=run_cfg.data.image_size)
    model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}), **preprocessing}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {"timm_name": str(run_cfg.backbone.name), "merged": str(bool(cfg.merge))}
    atomic_save_file(tensors, out, {**metadata, "pretrained_cfg": json.dumps(preprocessing)})
    info = export_info(run_cfg, method.name, cfg.merge, preprocessing)
    atomic_write_text(out.with_suffix(".json"), json.dumps(info, indent=2))
    print(f"exported {'merged' if cfg.merge else 'adapted'} {method.name} model to {out}", flush=True)
    return out


class ExportError(ValueError):
    """The model cannot be exported as asked."""


def atomic_save_file(tensors: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """safetensors through a temp file and a rename (no half-written export), with the umask's file mode."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        os.close(fd)
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, umask_mode())  # mkstemp's 0600 otherwise
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@torch.no_grad()
def merge_checked(model: torch.nn.Module, image_size: int, atol: float = 1e-4) -> torch.nn.Module:
    """Merge, then verify on a random batch that the merged model computes what the adapted model computed."""
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    expected = model(x)
    try:
        merged = merge_and_unload(model)
    except NotMergeableError as err:
        raise ExportError(str(err)) from None
    err = (merged(x) - expected).abs().max().item()
    if err > atol * max(1.0, expected.abs().max().item()):
        raise RuntimeError(f"merged model differs from the adapted model by {err:.3g}; refusing to export")
    return merged


def eval_preprocessing(run_cfg: DictConfig, model: torch.nn.Module) -> dict[str, Any]:
    """The run's evaluation transform as timm pretrained-config keys (input size, mean/std, interpolation, crop), so
    that ``timm.data.resolve_data_config`` + ``create_transform`` on the exported model reproduce it."""
    datamodule = build_datamodule(run_cfg)
    norm = data_config(model)
    datamodule.use_normalization(norm["mean"], norm["std"])
    return {**datamodule.timm_data_config(), "num_classes": int(run_cfg.data.num_classes)}


def export_info(run_cfg: DictConfig, method: str, merged: bool, preprocessing: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(run_cfg.backbone.get("model_kwargs") or {})
    kwargs.setdefault("img_size", run_cfg.data.image_size)  # the backbone was built at the task's input size
    return {
        "timm_name": run_cfg.backbone.name,
        "num_classes": run_cfg.data.num_classes,
        "model_kwargs": kwargs,
        "method": method,
        "merged": bool(merged),
        "pretrained_cfg": preprocessing,
        "load_with": "timm.create_model(timm_name, pretrained=True, num_classes=num_classes, "
        "pretrained_cfg_overlay=dict(pretrained_cfg, file=<this .safetensors>, custom_load=False), **model_kwargs); "
        "then timm.data.create_transform(**timm.data.resolve_data_config(model=model)) is the evaluation transform"
        if merged
        else "peftlab: rebuild the method, then load",
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: export(cfg))


if __name__ == "__main__":
    main()
