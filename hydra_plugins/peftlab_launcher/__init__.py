"""peftlab's Hydra launcher plugin (``hydra/launcher=parallel``): see :mod:`.parallel_launcher`."""
