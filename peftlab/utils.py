"""Small runtime helpers: memory accounting and logger teardown."""

from __future__ import annotations

import errno
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


#: write failures that are the environment's, not a bug: one line naming the path and the fix
DISK_ERRORS = {
    errno.ENOSPC: "The disk is full: free space or write elsewhere (paths.log_dir / PEFTLAB_LOGS, hydra.run.dir).",
    errno.EROFS: "The file system is read-only: write elsewhere (paths.log_dir / PEFTLAB_LOGS, hydra.run.dir).",
    errno.EACCES: "Permission denied: write to a directory you own (paths.log_dir / PEFTLAB_LOGS, hydra.run.dir).",
    errno.EDQUOT: "The disk quota is exceeded: free space or write elsewhere (paths.log_dir, hydra.run.dir).",
}

#: exceptions that mean "the input is wrong": shown as one clear message, without a traceback
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, FloatingPointError, TypeError)


def run_cli(main: Callable[[], Any]) -> Any:
    """Run a CLI body; input errors print their message (no traceback unless PEFTLAB_DEBUG=1) and exit with 2; a
    run stopped by a signal exits with 128 + signum (130 for SIGINT, 143 for SIGTERM), as schedulers expect."""
    from peftlab.lifecycle import Interrupted
    from peftlab.quiet import quiet_libraries

    quiet_libraries()
    try:
        return main()
    except Interrupted as err:
        print(f"interrupted by {err}: last.ckpt is kept; rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except USER_ERRORS as err:
        if os.environ.get("PEFTLAB_DEBUG"):
            raise
        print(f"error: {error_message(err)}\n(set PEFTLAB_DEBUG=1 to see the traceback)", file=sys.stderr, flush=True)
        sys.exit(2)
    except OSError as err:
        if err.errno not in DISK_ERRORS or os.environ.get("PEFTLAB_DEBUG"):
            raise
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: cannot write{where}: {err.strerror}. {DISK_ERRORS[err.errno]}", file=sys.stderr, flush=True)
        sys.exit(2)


def error_message(err: BaseException) -> str:
    """The user-facing text of an input error: a config resolver's own error without OmegaConf's wrapping."""
    from omegaconf.errors import InterpolationResolutionError

    while isinstance(err, InterpolationResolutionError) and isinstance(err.__context__, USER_ERRORS):
        err = err.__context__
    return err.args[0] if isinstance(err, KeyError) and err.args else str(err)
