"""Optuna search: ``python -m peftlab.search optuna [train overrides] search=<space>`` (``pip install
peftlab[search]``).

The search space is a config (``conf/search/*.yaml``: ``search.space`` maps config keys to distributions); the
objective is the protocol's validation accuracy (``data.split=search``: final-epoch ``val/acc``), never test.
The study is stored persistently (an Optuna journal file by default, or ``search.storage=sqlite:///...``): a killed
search resumes where it stopped when the same command is run again, and several workers (e.g. a SLURM array running
the same command) share one study until ``search.n_trials`` trials have finished. Each trial is a normal run dir
(``<search.dir>/trial-NNNN``) with its ``results.json``; ``python -m peftlab.search select <search.dir>`` hands the
best configuration over to the final runs. With ``search.pruner=median`` a trial whose per-epoch val/acc falls
below the median of earlier trials stops early; its record gets status ``partial`` (never counted).

Why not Hydra's Optuna sweeper plugin: hydra-optuna-sweeper 1.3.0 (the latest) pins ``optuna<3``; Optuna 2.10's
SQL storage fails under SQLAlchemy 2 (``AssertionError`` in ``get_current_version``), so no persistent study.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from peftlab.conf import CONFIG_DIR
from peftlab.options import check_moved_keys
from peftlab.protocol import SEARCH, SEARCH_METRIC
from peftlab.results import PARTIAL, RunRecord

DISTRIBUTIONS = ("float", "int", "categorical")
_CURRENT: dict[str, Any] = {"trial": None}


class SearchConfigError(ValueError):
    """The search config is invalid; the message names the option, what was expected and the fix."""


def optuna_module() -> Any:
    try:
        import optuna
    except ModuleNotFoundError as err:
        raise SearchConfigError("the Optuna search needs optuna: pip install 'peftlab[search]'") from err
    return optuna


# ------------------------------------------------------------------------------------------------------ config


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """Compose ``train.yaml`` with ``overrides`` as the CLI would (Hydra's runtime set, so group choices and
    ``${hydra:...}`` resolve), minus the ``hydra`` node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def normalize(argv: Sequence[str]) -> list[str]:
    """``search=x`` selects the (optional) search group: ``+search=x``."""
    return [f"+{arg}" if arg.startswith("search=") else arg for arg in argv]


def check_search(cfg: DictConfig) -> None:
    """Every problem of the search config as one ``ValueError`` naming the option (before any training)."""
    search = cfg.get("search")
    if search is None or not search.get("space"):
        raise SearchConfigError("no search space: select one with search=<name> (e.g. search=lr_wd, conf/search/)")
    if cfg.data.split != SEARCH:
        raise SearchConfigError(
            f"data.split={cfg.data.split}: the objective is {SEARCH_METRIC} on the search split, never test; "
            "remove the data.split override"
        )
    if not isinstance(search.n_trials, int) or search.n_trials < 1:
        raise SearchConfigError(f"search.n_trials={search.n_trials!r}: expected an integer >= 1")
    if search.pruner not in ("median", "none"):
        raise SearchConfigError(f"search.pruner={search.pruner!r}: expected median or none")
    for key, spec in space(cfg).items():
        check_distribution(cfg, key, spec)


def space(cfg: DictConfig) -> dict[str, DictConfig]:
    """``search.space`` as ``{dotted config key: distribution}`` (a distribution is a node with a ``type``)."""
    found: dict[str, DictConfig] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, DictConfig) and "type" not in node:
            for key, child in node.items():
                walk(child, f"{prefix}.{key}" if prefix else str(key))
        else:
            found[prefix] = node

    walk(cfg.search.space, "")
    return found


def check_distribution(cfg: DictConfig, key: str, spec: Any) -> None:
    where = f"search.space.{key}"
    if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
        raise SearchConfigError(f"{where}: the config has no {key!r}; search keys of the selected method/optim")
    kind = spec.get("type") if isinstance(spec, DictConfig) else None
    if kind not in DISTRIBUTIONS:
        raise SearchConfigError(f"{where}.type={kind!r}: expected one of {', '.join(DISTRIBUTIONS)}")
    if kind == "categorical":
        if not spec.get("choices"):
            raise SearchConfigError(f"{where}.choices: expected a non-empty list")
        return
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) for v in (low, high)) or low >= high:
        raise SearchConfigError(f"{where}: expected numbers low < high, got low={low!r}, high={high!r}")
    if spec.get("log") and low <= 0:
        raise SearchConfigError(f"{where}: log=true needs low > 0, got {low!r}")


def suggest(trial: Any, key: str, spec: DictConfig) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(key, list(spec.choices))
    if spec.type == "int":
        return trial.suggest_int(key, int(spec.low), int(spec.high), log=bool(spec.get("log", False)))
    return trial.suggest_float(key, float(spec.low), float(spec.high), log=bool(spec.get("log", False)))


# ------------------------------------------------------------------------------------------------------ study


def open_study(cfg: DictConfig) -> Any:
    """Create or load the study (resume, or join other workers)."""
    optuna = optuna_module()
    search = cfg.search
    directory = Path(search.dir)
    directory.mkdir(parents=True, exist_ok=True)
    storage = search.storage
    if not storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(directory / "study.journal")))
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials)
        if search.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage,
        study_name=str(search.study_name),
        direction=str(search.direction),
        pruner=pruner,
        load_if_exists=True,
    )
    # a resumed study (or a later worker) must not replay the first samples: offset the seed by the trials so far;
    # workers started at the same moment need their own search.seed (e.g. search.seed=$SLURM_ARRAY_TASK_ID)
    study.sampler = optuna.samplers.TPESampler(seed=int(search.seed) + len(study.trials))
    return study


class PruningCallback(L.Callback):
    """Reports each epoch's val/acc to the current Optuna trial and stops the run when the pruner says so."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trial = _CURRENT["trial"]
        value = trainer.callback_metrics.get(SEARCH_METRIC)
        if trial is None or trainer.sanity_checking or value is None:
            return
        trial.report(float(value), step=trainer.current_epoch)
        if trial.should_prune():
            optuna = optuna_module()
            raise optuna.TrialPruned(f"pruned by Optuna at epoch {trainer.current_epoch} ({SEARCH_METRIC} {value:.4f})")


def objective(overrides: Sequence[str], base: DictConfig) -> Any:
    from peftlab.train import train

    optuna = optuna_module()

    def run_trial(trial: Any) -> float:
        params = {key: suggest(trial, key, spec) for key, spec in space(base).items()}
        cfg = compose_run([*overrides, *(f"{k}={v}" for k, v in params.items())])
        run_dir = Path(base.search.dir) / f"trial-{trial.number:04d}"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            if base.search.pruner != "none":
                cfg.callbacks = {
                    **(cfg.get("callbacks") or {}),
                    "optuna_pruning": {"_target_": f"{__name__}.PruningCallback"},
                }
        trial.set_user_attr("run_dir", str(run_dir))
        _CURRENT["trial"] = trial
        try:
            record = train(cfg)
        except optuna.TrialPruned as pruned:
            mark_pruned(run_dir, str(pruned))
            raise
        finally:
            _CURRENT["trial"] = None
        trial.set_user_attr("identity", record.identity.hash)
        if record.reported.metric != SEARCH_METRIC or record.reported.value is None:
            raise RuntimeError(f"{run_dir}: no {SEARCH_METRIC} was computed (status {record.status})")
        return float(record.reported.value)

    return run_trial


def mark_pruned(run_dir: Path, reason: str) -> None:
    """A pruned trial stopped early: its record becomes ``partial`` (never counted), not ``failed``."""
    record = RunRecord.load(run_dir)
    record.status, record.error = PARTIAL, reason
    record.save(run_dir)


def finished(study: Any) -> int:
    optuna = optuna_module()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_search(argv: Sequence[str]) -> Any:
    """Run (or resume, or join) the study until ``search.n_trials`` trials have finished; returns the study."""
    optuna = optuna_module()
    overrides = normalize(argv)
    check_moved_keys(overrides)
    base = compose_run(overrides)
    check_search(base)
    study = open_study(base)
    target = int(base.search.n_trials)
    if finished(study) < target:
        stop = optuna.study.MaxTrialsCallback(
            target, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        study.optimize(objective(overrides, base), callbacks=[stop], catch=(Exception,))
    report(study, base)
    return study


def report(study: Any, cfg: DictConfig) -> None:
    print(f"study {study.study_name}: {finished(study)} of {cfg.search.n_trials} trials finished", file=sys.stderr)
    try:
        best = study.best_trial
    except ValueError:
        print("no complete trial yet", file=sys.stderr)
        return
    print(
        f"best {SEARCH_METRIC} {best.value:.4f} with {best.params} ({best.user_attrs.get('run_dir')})", file=sys.stderr
    )
    print(f"hand-off: python -m peftlab.search select {cfg.search.dir}", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    from peftlab.utils import run_cli

    run_cli(lambda: run_search(argv))
    return 0
