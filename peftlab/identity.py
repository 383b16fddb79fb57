"""Run identity: the semantic configuration of a run (what determines its numbers), a short hash of it, and sweep
directory names built from semantic overrides only.

Semantic: the method and all its options, the backbone's timm model name and weights source, the data task,
benchmark, protocol split and preprocessing, the optimiser and schedule, the loss options (module), the epochs and the
seed. Not semantic: paths, loggers, callbacks, progress display, launcher and device settings, data-loading mechanics
(workers, caches).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

#: config nodes that define a run's result; everything else (paths, logger, callbacks, hydra, ...) does not
SEMANTIC_NODES = ("method", "backbone", "data", "optim", "module")
#: keys inside the semantic nodes that do not change the numbers (where files live, how they are loaded)
NOT_SEMANTIC = frozenset({
    "data.root", "data.num_workers", "data.cache", "data.cache_device", "data.cache_max_gb", "data.pin_memory",
    "data.generate_demo", "data.eval_batch_size", "backbone.weights_file", "optim.optimizer.fused",
})  # fmt: skip
#: the trainer options that change the numbers (devices, strategy, logging cadence do not)
SEMANTIC_TRAINER = (
    "max_epochs", "precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
    "limit_train_batches", "overfit_batches", "fast_dev_run",
)  # fmt: skip
#: identity keys fixed by the task: a report row (a configuration) spans tasks, so these never split rows
#: (``backbone.num_classes``: in records written before the backbone took it from the data group)
TASK_KEYS = frozenset({"data.task", "data.num_classes", "data.group", "backbone.num_classes"})
#: override keys that never name a sweep job dir: these groups with everything under them ...
NOT_SEMANTIC_GROUPS = frozenset({"hydra", "logger", "callbacks", "paths", "local", "sweep", "search"})
#: ... and these keys themselves (``data=vtab1k/dtd`` is in the path as the task; ``data.lr=`` is semantic)
NOT_SEMANTIC_KEYS = frozenset({"experiment", "data", "tags", "task_name", "experiment_name", "ckpt_path", "test"})
NOT_SEMANTIC_TRAINER_OVERRIDES = frozenset({
    "accelerator", "devices", "strategy", "num_nodes", "enable_progress_bar", "log_every_n_steps",
    "enable_model_summary", "default_root_dir", "compile", "benchmark", "deterministic",
})  # fmt: skip
HASH_CHARS = 10
_ALIAS = re.compile(r"^\$\{[^:${}]+\}$")  # a plain reference to another key, e.g. ${..lr} or ${data.image_size}
_PER_TASK = "${method_data."


def semantic_identity(cfg: DictConfig, method_name: str | None = None) -> dict[str, Any]:
    """``{"config": {dotted key: value}, "per_task": [keys chosen per task by method_data], "hash": ...}``."""
    flat: dict[str, Any] = {}
    per_task: list[str] = []
    for node in SEMANTIC_NODES:
        if cfg.get(node) is not None:
            _flatten(cfg[node], node, flat, per_task)
    trainer = cfg.get("trainer") or {}
    for key in SEMANTIC_TRAINER:
        if key in trainer:
            flat[f"trainer.{key}"] = _plain(trainer[key])
    flat["seed"] = cfg.get("seed")
    if method_name:
        flat["method.name"] = method_name
    backbone = cfg.get("backbone") or {}
    flat["backbone.weights"] = _weights_source(backbone)
    method_data = cfg.get("method_data")
    if method_data is not None and method_data.get("name"):
        flat["method_data.name"] = str(method_data.name)
    config = dict(sorted(flat.items()))
    return {"config": config, "per_task": sorted(per_task), "hash": identity_hash(config)}


def _weights_source(backbone: Any) -> str:
    from peftlab.backbones import weights_source  # timm, only when a run's identity is taken

    return weights_source(str(backbone.get("name")), bool(backbone.get("pretrained")), backbone.get("weights_file"))


def same_configuration(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a recorded identity (possibly written by an older peftlab) is the configuration ``wanted`` describes:
    moved keys (``options.MOVED_KEYS``) are read under their new names (where the new key is recorded too, as the
    demo's ``trainer.max_epochs`` next to ``data.epochs``, it already holds the value), and an old ``pretrained``
    weights source matches any hub source."""
    from peftlab.options import MOVED_KEYS

    old = dict(recorded)
    for key, new_key in MOVED_KEYS.items():
        if key in old:
            old.setdefault(new_key, old.pop(key))
    if old.get("backbone.weights") == "pretrained" and str(wanted.get("backbone.weights", "")).startswith("hub:"):
        old["backbone.weights"] = wanted["backbone.weights"]
    return old == wanted


def identity_hash(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _flatten(node: Any, prefix: str, out: dict[str, Any], per_task: list[str]) -> None:
    for key in node.keys() if isinstance(node, DictConfig) else []:
        dotted = f"{prefix}.{key}"
        if dotted in NOT_SEMANTIC or str(key) in ("_partial_", "_convert_"):
            continue
        raw = OmegaConf.to_container(node, resolve=False)[key] if OmegaConf.is_interpolation(node, key) else None
        if isinstance(raw, str) and _ALIAS.match(raw) and _PER_TASK not in raw:
            continue  # a copy of another key: recorded there
        if isinstance(raw, str) and _PER_TASK in raw:
            per_task.append(dotted)
        value = node[key]
        if isinstance(value, DictConfig):
            _flatten(value, dotted, out, per_task)
        else:
            out[dotted] = _plain(value)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


# ------------------------------------------------------------------------------------------------------ dir names


def semantic_overrides(overrides: list[str]) -> list[str]:
    """The overrides that change a run's result, as ``key=value`` (sorted), without ``+``/``~`` prefixes."""
    kept = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        parts = re.split(r"[./]", key)
        if parts[0] in NOT_SEMANTIC_GROUPS or key in NOT_SEMANTIC_KEYS or key in NOT_SEMANTIC:
            continue
        if parts[0] == "trainer" and len(parts) > 1 and parts[1] in NOT_SEMANTIC_TRAINER_OVERRIDES:
            continue
        kept.append(f"{key}={value}")
    return sorted(kept)


def job_dirname(overrides: list[str], max_chars: int = 60) -> str:
    """A stable, short, readable job dir name: ``lr=0.001,weight_decay=0,seed=1-<hash>`` from the semantic overrides
    (last key part only; cut at ``max_chars``); the hash of the full semantic overrides disambiguates."""
    kept = semantic_overrides(overrides)
    if not kept:
        return "defaults"
    readable = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (o.partition("=") for o in kept))
    readable = re.sub(r"[^A-Za-z0-9=,._+-]", "_", readable)[:max_chars]
    digest = hashlib.sha256("\n".join(kept).encode()).hexdigest()[:6]
    return f"{readable}-{digest}"


def register_resolvers() -> None:
    """``${peftlab.job_dir:${hydra.overrides.task}}`` for Hydra's sweep subdir (registered on import)."""
    if not OmegaConf.has_resolver("peftlab.job_dir"):
        OmegaConf.register_new_resolver("peftlab.job_dir", lambda overrides: job_dirname(list(overrides)))


register_resolvers()
