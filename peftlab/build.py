"""``build(cfg)``: the one place that turns a composed config into data, model and trainer (train and eval share it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf
from torch import nn

from peftlab.backbones import check_model_name, data_config, patch_size_from_name
from peftlab.callbacks import is_progress_bar, progress_callback
from peftlab.dashboard import wandb_settings
from peftlab.methods import MethodConfig
from peftlab.module import ClassificationModule
from peftlab.optim import OptimRecipe
from peftlab.options import ConfigError, check_options, check_targets, effective_warmup_epochs
from peftlab.protocol import protocol
from peftlab.results import AtomicCheckpointIO
from peftlab.utils import USER_ERRORS

log = logging.getLogger("peftlab")

#: trainer-group keys that configure peftlab rather than ``lightning.Trainer``
TRAINER_EXTRAS = ("compile",)
#: ``trainer.compile`` values besides true/false: ``torch.compile`` modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class Built:
    datamodule: L.LightningDataModule
    method: MethodConfig
    module: ClassificationModule
    trainer: L.Trainer

    @property
    def model(self) -> nn.Module:
        return self.module.model


def build(cfg: DictConfig, loggers: bool = True) -> Built:
    """Build datamodule, method, LightningModule and Trainer from ``cfg``."""
    check_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.check_protocol()  # a missing or malformed dataset stops here, before any weights are loaded
    method = build_method(cfg)
    model = build_model(cfg, method)
    norm = data_config(model)
    datamodule.use_normalization(norm["mean"], norm["std"])
    recipe = build_recipe(cfg, warmup_epochs=effective_warmup_epochs(cfg))
    loss_options = create(cfg.get("module") or {})
    module = ClassificationModule(model=model, num_classes=cfg.data.num_classes, recipe=recipe, **loss_options)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    module.eval_stage = protocol(cfg.data.split).stage
    if mode := compile_mode(cfg.trainer.get("compile")):
        compile_in_place(module.model, mode)
    trainer = build_trainer(cfg, method, with_loggers=loggers)
    return Built(datamodule=datamodule, method=method, module=module, trainer=trainer)


def validate(cfg: DictConfig) -> None:
    """Every cheap check of ``cfg`` (options, cross-group facts, the method's options), before anything is written."""
    check_config(cfg)
    compile_mode(cfg.trainer.get("compile"))
    build_method(cfg)
    build_recipe(cfg, warmup_epochs=effective_warmup_epochs(cfg, warn=False))


def create(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises input errors (bad values) as themselves, not wrapped by Hydra."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def build_datamodule(cfg: DictConfig, **kwargs: Any) -> L.LightningDataModule:
    return create(cfg.data, **kwargs)


def build_recipe(cfg: DictConfig, **kwargs: Any) -> OptimRecipe:
    """The ``optim`` group as one :class:`OptimRecipe` (``kwargs`` replace its keys, e.g. the effective warm-up)."""
    return OptimRecipe(**{**create(cfg.optim), **kwargs})


def build_backbone(cfg: DictConfig) -> nn.Module:
    """The ``backbone`` group's model, with the task's head size and input size from the ``data`` group."""
    return create(cfg.backbone, num_classes=cfg.data.num_classes, image_size=cfg.data.get("image_size"))


def build_method(cfg: DictConfig) -> MethodConfig:
    method = create(cfg.method)
    if not isinstance(method, MethodConfig):
        raise ConfigError(f"method config must instantiate a peftlab MethodConfig, got {type(method).__name__}")
    check_targets(method)
    return method


def build_model(cfg: DictConfig, method: MethodConfig) -> nn.Module:
    """Backbone from timm with the method injected. Seeded, so that a random-init backbone (and the method's init)
    is the same in train, eval and export: checkpoints hold only the trainable tensors."""
    torch.manual_seed(cfg.seed)
    return method.apply(build_backbone(cfg))


def check_config(cfg: DictConfig) -> None:
    """Cheap checks of every option and across groups that would otherwise fail late or silently."""
    check_options(cfg)
    num_classes = cfg.data.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"data.num_classes={num_classes!r} is invalid: expected an integer >= 2")
    check_model_name(cfg.backbone.name)
    kwargs = cfg.backbone.get("model_kwargs") or {}
    patch = kwargs.get("patch_size") or patch_size_from_name(cfg.backbone.name)
    size = cfg.data.get("image_size")
    if patch and size and size % patch:
        raise ConfigError(
            f"data.image_size={size} is not divisible by the backbone's patch size {patch}: "
            f"use a multiple of {patch} (e.g. {size - size % patch or patch})"
        )


def compile_mode(value: Any) -> str | None:
    """``trainer.compile`` as a ``torch.compile`` mode: false/null → None (eager), true → ``default``, or a mode name
    (``reduce-overhead`` adds CUDA graphs on a GPU: one launch per step instead of one per kernel)."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        allowed = ", ".join(("true", "false", *COMPILE_MODES))
        raise ConfigError(
            f"trainer.compile={value!r} is invalid: expected one of {allowed} (e.g. trainer.compile=true)"
        )
    return value


def compile_in_place(model: nn.Module, mode: str = "default") -> None:
    """``nn.Module.compile`` (parameter names, hence checkpoints, stay unchanged). Dynamo's caches are reset first: jobs
    that run one after another in one process (Hydra's basic launcher) would otherwise each add recompilations of the
    same timm code until its recompile limit, after which it silently runs eager."""
    torch._dynamo.reset()
    try:
        model.compile(mode=mode)
    except Exception as err:  # noqa: BLE001 - any backend failure means: run eager
        log.warning("torch.compile unavailable (%s); running eagerly", err)


def build_trainer(cfg: DictConfig, method: MethodConfig, with_loggers: bool = True) -> L.Trainer:
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs = {k: v for k, v in trainer_cfg.items() if k not in TRAINER_EXTRAS}
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if not any(is_progress_bar(cb) for cb in callbacks):
        bar = progress_callback()
        callbacks.append(bar)
        trainer_kwargs["enable_progress_bar"] = is_progress_bar(bar)
    loggers = build_loggers(cfg, method) if with_loggers else []
    if not loggers:  # nothing to monitor into
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    plugins = [*(trainer_kwargs.pop("plugins", None) or []), AtomicCheckpointIO()]  # atomic under every strategy
    return instantiate(trainer_kwargs, callbacks=callbacks, logger=loggers or False, plugins=plugins, _convert_="all")


def build_loggers(cfg: DictConfig, method: MethodConfig) -> list[Any]:
    """Loggers from the ``logger`` group; a W&B run gets the resolved config, name, group, job type and tags
    (``dashboard.py``)."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        try:
            if logger_cfg._target_.endswith("WandbLogger"):  # called directly: `config` is instantiate's own argument
                kwargs = OmegaConf.to_container(logger_cfg, resolve=True)
                logger_class = get_class(kwargs.pop("_target_"))
                loggers.append(logger_class(**{**kwargs, **wandb_settings(cfg, method.name)}))
            else:
                loggers.append(instantiate(logger_cfg, _convert_="all"))
        except ModuleNotFoundError as err:
            raise ConfigError(f"logger={name} needs the package {err.name!r}: pip install {err.name}") from err
    return loggers


def instantiate_dict(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` (entries set to null are skipped)."""
    if not group:
        return []
    return [create(c) for c in group.values() if c is not None and "_target_" in c]
