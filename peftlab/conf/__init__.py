"""The shipped Hydra configs. Entry points find them through Hydra's package search path (``pkg://peftlab.conf``),
so they work from a git checkout and from an installed wheel alike. Per-machine overrides (``local/default.yaml``)
and your own config groups live in the user config directory (:func:`user_config_dir`), which the Hydra
search-path plugin in ``hydra_plugins/peftlab_searchpath`` adds after these configs when it exists."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_PATH = "pkg://peftlab.conf"
CONFIG_DIR = Path(__file__).resolve().parent
USER_CONFIG_ENV = "PEFTLAB_CONFIG_DIR"


def user_config_dir() -> Path | None:
    """``$PEFTLAB_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/peftlab`` (``~/.config/peftlab``); None when set to ''."""
    configured = os.environ.get(USER_CONFIG_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "peftlab"
