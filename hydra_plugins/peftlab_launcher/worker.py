"""One job of :class:`~hydra_plugins.peftlab_launcher.parallel_launcher.ParallelLauncher` in its own process:
``python -m hydra_plugins.peftlab_launcher.worker <payload> <result>``."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle


def main(payload: str, result: str) -> None:
    launcher, overrides, num, state = cloudpickle.loads(Path(payload).read_bytes())
    outcome = launcher(overrides, num, state)
    partial = Path(f"{result}.partial")
    partial.write_bytes(cloudpickle.dumps(outcome))
    partial.replace(result)


if __name__ == "__main__":
    main(*sys.argv[1:3])
