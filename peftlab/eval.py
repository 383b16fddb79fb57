"""``python -m peftlab.eval ckpt_path=<run>/checkpoints/last.ckpt``: evaluate a saved run on its eval split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from peftlab.build import build
from peftlab.checkpoint import load_checkpoint, run_config
from peftlab.conf import CONFIG_PATH
from peftlab.protocol import evaluate as evaluate_protocol_split
from peftlab.results import atomic_write_text, now
from peftlab.utils import run_cli

log = logging.getLogger("peftlab")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the run stored in ``cfg.ckpt_path`` (plus ``cfg.overrides``), load its weights and evaluate."""
    ckpt_path = str(Path(cfg.ckpt_path).expanduser().resolve())
    run_cfg = run_config(load_checkpoint(ckpt_path), cfg.overrides)
    run_cfg.paths.output_dir = str(Path(cfg.paths.output_dir).resolve())
    run_cfg.callbacks = None
    built = build(run_cfg, loggers=False)
    metrics = evaluate_protocol_split(built.trainer, built.module, built.datamodule, ckpt_path=ckpt_path)
    results = {"ckpt_path": ckpt_path, "split": built.datamodule.split, "metrics": metrics, "evaluated_at": now()}
    out = Path(run_cfg.paths.output_dir) / "eval_results.json"
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print("\n".join([*(f"{k}: {v:.4f}" for k, v in sorted(metrics.items())), f"written to {out}"]), flush=True)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(lambda: evaluate(cfg))


if __name__ == "__main__":
    main()
