"""W&B as a dashboard: each job's run carries the resolved config (nested, so parallel coordinates and sweep views
work), a name with the overrides that distinguish it, group = sweep (or study) / experiment, job_type = the protocol
split, tags for split and sweep, and the reported number in its summary."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from peftlab.identity import semantic_identity, semantic_overrides

NAME_CHARS = 120


def wandb_settings(cfg: DictConfig, method_name: str) -> dict[str, Any]:
    """Keyword arguments for ``WandbLogger`` (explicit ``logger.wandb.name/group`` settings win)."""
    wandb_cfg = cfg.logger.wandb
    split, sweep = str(cfg.data.split), sweep_name(cfg)
    identity = semantic_identity(cfg, method_name)
    tags = [*wandb_cfg.get("tags", []), f"method:{method_name}", f"task:{cfg.data.task}", f"seed:{cfg.seed}",
            f"split:{split}", *([f"sweep:{sweep}"] if sweep else [])]  # fmt: skip
    config = OmegaConf.to_container(cfg, resolve=True)
    config["identity"] = {"hash": identity["hash"], "per_task": identity["per_task"]}
    return {
        "group": wandb_cfg.get("group") or (f"{sweep}/{cfg.experiment_name}" if sweep else str(cfg.experiment_name)),
        "job_type": wandb_cfg.get("job_type") or split,
        "tags": tags,
        "name": wandb_cfg.get("name") or run_name(cfg, method_name),
        "config": config,
    }


def sweep_name(cfg: DictConfig) -> str | None:
    """The sweep (``sweep=...``) or Optuna search (``search=...``) this job belongs to, if any."""
    for group in ("sweep", "search"):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and node.get("name"):
            return f"{'optuna-' if group == 'search' else ''}{node.name}"
    return None


def run_name(cfg: DictConfig, method_name: str) -> str:
    """``<method>-<task>-s<seed>`` plus the job's semantic overrides (``lr=0.01,weight_decay=0``)."""
    base = f"{method_name}-{cfg.data.task}-s{cfg.seed}"
    distinguishing = [o for o in semantic_overrides(job_overrides()) if not o.startswith(("seed=", "method="))]
    if not distinguishing:
        return base
    short = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (o.partition("=") for o in distinguishing))
    return f"{base}-{short}"[:NAME_CHARS]


def job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def log_summary(record: Any) -> dict[str, Any] | None:
    """Put the reported number in the W&B run summary; returns the run's project/id/url for ``results.json``."""
    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return None
    run = wandb.run
    run.summary.update({
        "reported/metric": record.reported.metric, "reported/value": record.reported.value,
        record.reported.metric: record.reported.value, "status": record.status, "identity": record.identity.hash,
    })  # fmt: skip
    return {"project": run.project, "id": run.id, "name": run.name, "url": run.url}
