"""The evaluation protocol in one place: which split trains and which evaluates, under which name the evaluation is
logged, and which number is reported.

- ``search``: train on train800 (VTAB-1k) / train (FGVC), evaluate on val200 / val. Reported: final-epoch ``val/acc``.
  The only split hyperparameters may be selected on.
- ``final``: train on train800val200 / train+val, evaluate on test. Reported: final-epoch ``test/acc``.

The per-epoch evaluation during training measures the same split, so it is logged under the same name (on
``final`` the per-epoch curve is ``test/acc``, never ``val/acc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEARCH, FINAL = "search", "final"
#: the training length of the VTAB-1k and FGVC protocols (RLRR-P/HTA-P §4.1), the trainer group's default; a
#: warm-up longer than a shortened run keeps its fraction of this (``options.effective_warmup_epochs``)
EPOCHS = 100
SPLITS = (SEARCH, FINAL)
#: split files read by each protocol: (train files, eval files)
VTAB_PROTOCOL = {SEARCH: (("train800",), ("val200",)), FINAL: (("train800val200",), ("test",))}
FGVC_PROTOCOL = {SEARCH: (("train",), ("val",)), FINAL: (("train", "val"), ("test",))}


@dataclass(frozen=True)
class Protocol:
    """One protocol split: the stage its evaluation runs as (``val`` or ``test``) and the reported metric."""

    split: str
    stage: str

    @property
    def metric(self) -> str:
        """The number tables and selections read: final-epoch accuracy on the eval split."""
        return f"{self.stage}/acc"

    @property
    def selects(self) -> bool:
        """Whether results of this split may select hyperparameters (only validation accuracy may)."""
        return self.split == SEARCH


PROTOCOLS = {SEARCH: Protocol(SEARCH, "val"), FINAL: Protocol(FINAL, "test")}
SEARCH_METRIC = PROTOCOLS[SEARCH].metric


def check_split_name(split: str) -> None:
    """Raises ValueError unless ``split`` is ``search`` or ``final``."""
    if split not in SPLITS:
        raise ValueError(
            f"data.split={split!r} is not a protocol; use 'search' (train800 -> val200 / train -> val) "
            "or 'final' (train800val200 -> test / train+val -> test)"
        )


def protocol(split: str) -> Protocol:
    check_split_name(split)
    return PROTOCOLS[split]


def reported_metric(split: str) -> str:
    return protocol(split).metric


def evaluate(trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None) -> dict[str, float]:
    """Evaluate once on the protocol's eval split: ``val/*`` when searching, ``test/*`` when final."""
    stage = protocol(datamodule.split).stage
    run = trainer.validate if stage == "val" else trainer.test
    metrics: dict[str, float] = {}
    for out in run(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True):
        metrics.update({k: float(v) for k, v in out.items()})
    return metrics
