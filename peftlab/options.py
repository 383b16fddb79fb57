"""Every run option checked before any compute: one ``ConfigError`` naming the option, the allowed values and the
fix (the CLI prints it as one ``error:`` line and exits 2). Also the one rule for a warm-up longer than the run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from peftlab.protocol import EPOCHS

log = logging.getLogger("peftlab")

GPU_ACCELERATORS = ("gpu", "cuda")


class ConfigError(ValueError):
    """A config value is invalid; the message names the option and the allowed values."""


#: keys that moved to the group that owns them: old key -> new key
MOVED_KEYS = {
    "optim.label_smoothing": "module.label_smoothing",
    "data.epochs": "trainer.max_epochs",
    "data.warmup_epochs": "optim.warmup_epochs",
}


def check_moved_keys(overrides: Sequence[str]) -> None:
    """A command-line override of a moved key (``optim.label_smoothing=0.1``) names its new key, before Hydra's own
    "not in struct" error."""
    for override in overrides:
        key, _, value = str(override).partition("=")
        new = MOVED_KEYS.get(key.lstrip("+~"))
        if new:
            raise ConfigError(f"{key.lstrip('+~')} has moved to {new}: use {new}={value}")


def moved_keys_in(cfg: DictConfig) -> list[tuple[str, str, DictConfig, str]]:
    """``(old key, new key, its group node, key in the group)`` of every moved key ``cfg`` still sets."""
    found = []
    for old, new in MOVED_KEYS.items():
        group, _, key = old.partition(".")
        node = cfg.get(group)
        if node is not None and key in node:
            found.append((old, new, node, key))
    return found


def migrate_moved_keys(cfg: DictConfig) -> DictConfig:
    """A config saved before the keys moved (a checkpoint's run config), with each moved value under its new key."""
    for _, new, node, key in moved_keys_in(cfg):
        with open_dict(cfg):
            value = node.pop(key)
            if OmegaConf.select(cfg, new) is None:
                OmegaConf.update(cfg, new, value, force_add=True)
    return cfg


def check_options(cfg: DictConfig) -> None:
    """Raise a ConfigError for the first invalid run option (data, optimisation, trainer, seed)."""
    if moved := moved_keys_in(cfg):  # in a config file (an experiment, local/default.yaml)
        old, new, _, _ = moved[0]
        raise ConfigError(f"{old} has moved to {new}: set {new} in your config instead")
    _check_int(cfg.get("seed"), "seed", minimum=0, example="seed=42")
    _check_int(cfg.data.get("batch_size"), "data.batch_size", minimum=1, example="data.batch_size=32")
    _check_int(cfg.data.get("eval_batch_size"), "data.eval_batch_size", minimum=1, example="data.eval_batch_size=128")
    _check_int(cfg.trainer.get("max_epochs"), "trainer.max_epochs", minimum=0, example="trainer.max_epochs=100")
    optim = cfg.optim
    check_optim(**{key: optim.get(key) for key in OPTIM_RANGES if key in optim or key in ("lr", "weight_decay")})
    smoothing = (cfg.get("module") or {}).get("label_smoothing", 0.0)
    _check_number(smoothing, "module.label_smoothing", "a number in [0, 1)", lambda v: 0 <= v < 1, "0.1")
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))


#: the ranges of the optim group's numbers: ``key: (expected, test, example)``
OPTIM_RANGES = {
    "lr": ("a number > 0", lambda v: v > 0, "1e-3"),
    "weight_decay": ("a number >= 0", lambda v: v >= 0, "1e-4 or 0"),
    "warmup_epochs": ("a number >= 0", lambda v: v >= 0, "10"),
    "head_lr_scale": ("a number > 0 (1: the same lr as the rest)", lambda v: v > 0, "1"),
    "layer_decay": ("a number in (0, 1], or null for none", lambda v: 0 < v <= 1, "0.65"),
}


def check_optim(**values: Any) -> None:
    """Raise a ConfigError for the first optim value out of its range (:data:`OPTIM_RANGES`); ``layer_decay`` may be
    None. The one check of these options: before any compute (:func:`check_options`) and when a recipe is built."""
    for key, value in values.items():
        if not (key == "layer_decay" and value is None):
            expected, ok, example = OPTIM_RANGES[key]
            _check_number(value, f"optim.{key}", expected, ok, example)


def is_number(value: Any) -> bool:
    """An int or float, not a bool (YAML's true/false are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(value: Any, option: str, minimum: int, example: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ConfigError(f"{option}={value!r} is invalid: expected an integer >= {minimum} (e.g. {example})")


def _check_number(value: Any, option: str, expected: str, ok: Any, example: str) -> None:
    if not (is_number(value) and ok(value)):
        raise ConfigError(f"{option}={value!r} is invalid: expected {expected} (e.g. {option}={example})")


def check_accelerator(accelerator: str) -> None:
    import torch

    if accelerator.lower() in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu) needs a CUDA GPU, but none is visible "
            "(torch.cuda.is_available() is false): use trainer=cpu, or trainer.accelerator=auto to take a GPU when "
            "there is one (check CUDA_VISIBLE_DEVICES and the driver otherwise)"
        )


def check_targets(method: Any) -> None:
    """A method that adapts layers (it implements ``create_layer``) with no target would silently train the head
    alone."""
    from peftlab.methods import MethodConfig

    if not method.targets and type(method).create_layer is not MethodConfig.create_layer:
        raise ConfigError(
            f"method.targets=[] leaves method {method.name!r} nothing to adapt (only the head would train): give layer "
            f"patterns (e.g. method.targets=[attn.q,attn.v]; the defaults are in conf/method/{method.name}.yaml), "
            "or use method=linear to train the head alone"
        )


def effective_warmup_epochs(cfg: DictConfig, warn: bool = True) -> float:
    """The warm-up actually used. A warm-up that is not shorter than the run (``trainer.max_epochs=5`` with the
    papers' 10 warm-up epochs) would never reach the cosine decay: it is scaled to the same fraction of the run as
    in the protocol (10 of 100 epochs -> 0.5 of 5), with a warning; the schedule used is recorded in results.json.
    A warm-up that is not shorter than the protocol itself is refused."""
    warmup, epochs = float(cfg.optim.get("warmup_epochs", 0)), cfg.trainer.get("max_epochs")
    if not epochs or warmup < epochs:
        return warmup
    protocol = EPOCHS
    if warmup >= protocol:
        raise ConfigError(
            f"optim.warmup_epochs={warmup:g} is not shorter than the run (trainer.max_epochs={epochs}, protocol "
            f"{protocol} epochs): the learning rate would never decay. Set optim.warmup_epochs below "
            f"trainer.max_epochs (e.g. optim.warmup_epochs={epochs / 10:g})"
        )
    scaled = warmup * epochs / protocol
    if not warn:
        return scaled
    log.warning(
        "optim.warmup_epochs=%g is not shorter than trainer.max_epochs=%d: warm-up scaled to %.3g epochs (the "
        "protocol's %g of %d epochs) so the cosine decay still happens; set optim.warmup_epochs below "
        "trainer.max_epochs to choose it yourself",
        warmup,
        epochs,
        scaled,
        warmup,
        protocol,
    )
    return scaled
