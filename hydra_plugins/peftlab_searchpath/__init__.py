"""Adds the peftlab user config directory (per-machine ``local/default.yaml``, your own config groups) to the
search path of peftlab's Hydra apps, after the shipped configs, when that directory exists."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class PeftlabUserConfig(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(_is_peftlab(entry.path or "") for entry in search_path.get_path()):
            return
        from peftlab.conf import user_config_dir

        directory = user_config_dir()
        if directory is not None and directory.is_dir():
            search_path.append(provider="peftlab-user", path=f"file://{directory.resolve()}")


def _is_peftlab(path: str) -> bool:
    return path.rstrip("/").endswith(("peftlab.conf", "peftlab/conf"))
