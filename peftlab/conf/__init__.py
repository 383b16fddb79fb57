"""The shipped Hydra configs. Entry points find them through Hydra's package search path (``pkg://peftlab.conf``),
so they work from a git checkout and from an installed wheel alike. Per-machine overrides (``local/default.yaml``)
and your own config groups live in the user config directory (:func:`user_config_dir`), which the Hydra
search-path plugin in ``hydra_plugins/peftlab_searchpath`` adds after these configs when it exists."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_PATH = "pkg://peftlab.conf"
CONFIG_DIR = Path(__file__).resolve().parent
USER_CONFIG_ENV = "PEFTLAB_CONFIG_DIR"
#: how many jobs share this process's device: set by ``hydra/launcher=parallel`` (its ``jobs_per_device``) for each job
JOBS_PER_DEVICE_ENV = "PEFTLAB_JOBS_PER_DEVICE"


def user_config_dir() -> Path | None:
    """``$PEFTLAB_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/peftlab`` (``~/.config/peftlab``); None when set to ''."""
    configured = os.environ.get(USER_CONFIG_ENV)
    if configured is not None:
        return Path(configured).expanduser() if configured else None
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "peftlab"


def register_resolvers() -> None:
    """The ``catalog.*`` and ``folder.*`` OmegaConf resolvers the shipped configs use, so that task facts are read
    from :mod:`peftlab.data.catalog` (their one source) instead of being copied into the yaml files."""
    resolvers = {
        "catalog.num_classes": lambda dataset, task: _catalog().benchmark_task(dataset, task).num_classes,
        "catalog.group": lambda dataset, task: _catalog().benchmark_task(dataset, task).group,
        "catalog.data_options": lambda dataset: _catalog().data_options(dataset),
        "folder.num_classes": lambda root: _folder().count_class_folders(root),
        "peftlab.help_groups": config_groups_help,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def config_groups_help() -> str:
    """One line per config group (shipped and user config dir) with its options; private entries (``_base``,
    ``_vtab1k``) and Hydra's own groups are left out."""
    groups: dict[str, set[str]] = {}
    for folder in filter(None, (CONFIG_DIR, user_config_dir())):
        for path in folder.rglob("*.yaml") if folder.is_dir() else ():
            relative = path.relative_to(folder)
            if len(relative.parts) > 1 and relative.parts[0] != "hydra" and not path.stem.startswith("_"):
                groups.setdefault(relative.parent.as_posix(), set()).add(path.stem)
    return "\n".join(f"{group}: {', '.join(sorted(options))}" for group, options in sorted(groups.items()))


def _catalog():
    from peftlab.data import catalog

    return catalog


def _folder():
    from peftlab.data import folder

    return folder


register_resolvers()
