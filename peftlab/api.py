"""peftlab as a library, in the style of Hugging Face peft, on any timm model and outside Hydra and Lightning::

import timm, peftlab
model = timm.create_model("vit_base_patch16_224.augreg_in21k", pretrained=True, num_classes=10)
model = peftlab.get_peft_model(model, "rlrr")          # options as on the CLI: method.<option>=... -> option=...
peftlab.print_trainable_parameters(model)
...  # your training loop
peftlab.save_adapter(model, "my_adapter")              # only the method's tensors and the head + its config
fresh = timm.create_model("vit_base_patch16_224.augreg_in21k", pretrained=True, num_classes=10)
model = peftlab.load_adapter(fresh, "my_adapter")      # strict: every tensor, nothing else, same shapes
plain = peftlab.merge_and_unload(model)                # a plain timm model, zero inference overhead
"""

from __future__ import annotations

import difflib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from peftlab.backbones import timm_name
from peftlab.conf import CONFIG_DIR
from peftlab.methods import MethodConfig, get_method, list_methods
from peftlab.methods.inject import merge_and_unload as _merge_and_unload
from peftlab.methods.state import count_parameters, load_trainable_state_dict, trainable_state_dict

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CONFIG_ATTRIBUTE = "peft_config"


def method_config(method: str, **options: Any) -> MethodConfig:
    """The method's config as the CLI builds it: the shipped ``method/<name>.yaml`` defaults with ``options`` on top,
    validated by the method (an unknown option names the method's options)."""
    if method not in list_methods():
        close = difflib.get_close_matches(method, list_methods(), n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"methods: {', '.join(list_methods())}"
        raise ValueError(f"unknown method {method!r}; {hint}")
    cls = get_method(method)
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{method} has no option {unknown[0]!r}; its options: {', '.join(allowed)}")
    shipped = CONFIG_DIR / "method" / f"{method}.yaml"
    defaults = OmegaConf.to_container(OmegaConf.load(shipped)) if shipped.is_file() else {}
    defaults = {k: v for k, v in defaults.items() if k in allowed}
    return cls(**{**defaults, **options})


def get_peft_model(model: nn.Module, method: str | MethodConfig, **options: Any) -> nn.Module:
    """Inject ``method`` (a registered name with its options, or a config) into ``model`` in place: only the
    method's parameters and the head train. Returns the model, which remembers its config for :func:`save_adapter`."""
    config = method if isinstance(method, MethodConfig) else method_config(method, **options)
    if isinstance(method, MethodConfig) and options:
        raise TypeError("pass options either in the MethodConfig or as keywords, not both")
    config.apply(model)
    setattr(model, CONFIG_ATTRIBUTE, config)
    return model


def print_trainable_parameters(model: nn.Module) -> dict[str, int]:
    """Prints and returns the trainable and total parameter counts (and the trainable ones without the head)."""
    counts = count_parameters(model)
    share = 100 * counts["trainable"] / max(1, counts["total"])
    print(
        f"trainable params: {counts['trainable']:,} || all params: {counts['total']:,} || trainable%: {share:.4f} "
        f"|| without head: {counts['trainable_without_head']:,}"
    )
    return counts


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Writes ``<path>/adapter_model.safetensors`` (only the tensors that train: the method's and the head) and
    ``<path>/adapter_config.json`` (the method, its options and the model it was trained on). Returns ``path``."""
    config = _config_of(model)
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in trainable_state_dict(model).items()}
    save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"method": config.name})
    info = {
        "method": config.name,
        "options": {k: v for k, v in config.describe().items() if k != "name"},
        "base_model": timm_name(model),
        "num_classes": _num_classes(model),
        "format": "peftlab adapter v1",
    }
    (path / ADAPTER_CONFIG).write_text(json.dumps(info, indent=2) + "\n")
    return path


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Injects the saved method into a fresh timm ``model`` of the same architecture and loads its tensors. Strict:
    the saved tensors must be exactly the adapted model's trainable tensors, with the same shapes."""
    path = Path(path).expanduser()
    if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not an adapter folder: expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    info = json.loads((path / ADAPTER_CONFIG).read_text())
    if info.get("num_classes") not in (None, _num_classes(model)):
        raise ValueError(
            f"the adapter was saved with a {info['num_classes']}-class head but the model has {_num_classes(model)}: "
            f"create it with num_classes={info['num_classes']}"
        )
    get_peft_model(model, info["method"], **info["options"])
    state = load_file(str(path / ADAPTER_WEIGHTS))
    _check_shapes(model, state, info.get("base_model"))
    load_trainable_state_dict(model, state)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Folds the method into the frozen weights and returns the plain timm model (raises for methods that add
    computation, e.g. prompts and adapters)."""
    merged = _merge_and_unload(model)
    if hasattr(merged, CONFIG_ATTRIBUTE):
        delattr(merged, CONFIG_ATTRIBUTE)
    return merged


def _config_of(model: nn.Module) -> MethodConfig:
    config = getattr(model, CONFIG_ATTRIBUTE, None)
    if not isinstance(config, MethodConfig):
        raise ValueError("this model has no peftlab method: create it with peftlab.get_peft_model(model, ...)")
    return config


def _num_classes(model: nn.Module) -> int | None:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return getattr(head, "out_features", None)


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], base_model: str | None) -> None:
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(
            f"adapter tensors do not fit this model ({len(wrong)} shape mismatch(es), e.g. {wrong[0]}): "
            f"load it onto the architecture it was saved from ({base_model})"
        )
