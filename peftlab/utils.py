"""Small runtime helpers: memory accounting and logger teardown."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from typing import Any

import torch


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    """Peak CUDA memory allocated when on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def finish_wandb() -> None:
    """Close the W&B run of this job (in a Hydra multirun, every job must get its own run)."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()


#: exceptions that mean "the input is wrong": shown as one clear message, without a traceback
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, FloatingPointError, TypeError)


def run_cli(main: Callable[[], Any]) -> Any:
    """Run a CLI body; input errors print their message (no traceback unless PEFTLAB_DEBUG=1) and exit with 2."""
    try:
        return main()
    except USER_ERRORS as err:
        if os.environ.get("PEFTLAB_DEBUG"):
            raise
        print(f"error: {error_message(err)}\n(set PEFTLAB_DEBUG=1 to see the traceback)", file=sys.stderr, flush=True)
        sys.exit(2)


def error_message(err: BaseException) -> str:
    """The user-facing text of an input error: a config resolver's own error without OmegaConf's wrapping."""
    from omegaconf.errors import InterpolationResolutionError

    while isinstance(err, InterpolationResolutionError) and isinstance(err.__context__, USER_ERRORS):
        err = err.__context__
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)
