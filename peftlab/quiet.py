"""First contact stays quiet: the libraries' start-up chatter (Lightning's hardware lines and promotional tips, seed
messages) and deprecation notices about their own internals are hidden; peftlab's own log lines, warnings about the
user's setup and every error still show. ``PEFTLAB_VERBOSE=1`` keeps everything."""

from __future__ import annotations

import logging
import os
import warnings

#: loggers of libraries whose INFO lines are not about the user's run ("GPU available", "Tip: ...", "Seed set")
CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
#: warnings about library internals the user cannot act on
INTERNAL_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch deprecates what Lightning's pytree code uses
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # small tasks log per epoch
)


def quiet_libraries() -> None:
    """Raise the chatty libraries' log level to WARNING and ignore the internal warnings (unless PEFTLAB_VERBOSE)."""
    if os.environ.get("PEFTLAB_VERBOSE"):
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
