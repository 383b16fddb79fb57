"""The Optuna search (``python -m peftlab.search optuna``) on the demo with a tiny budget: trials are normal run
dirs on the search split, the study persists (a second invocation continues it), a bad search config fails before
any training, pruned trials are recorded as partial, and the study hands over through ``search select``."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from peftlab.results import RESULTS_FILE, RunRecord  # noqa: E402
from peftlab.search import main as search_main  # noqa: E402
from peftlab.tune import _CURRENT, PruningCallback, mark_pruned, run_search  # noqa: E402

TINY = ["method=linear", "trainer.max_epochs=1", "+backbone.model_kwargs.depth=2", "logger=none", "callbacks=none"]


def args(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", "search=lr_wd", *extra]


@pytest.mark.parametrize(
    "extra, message",
    [(["+search.space.optim.nope={type: float, low: 0.1, high: 1}"], "search.space.optim.nope"),
     (["data.split=final"], "never test"),
     (["search.space.optim.lr.low=0"], "log=true needs low > 0"),
     (["search.space.optim.lr.type=uniform"], "search.space.optim.lr.type='uniform'"),
     (["search.n_trials=0"], "search.n_trials=0")],
)  # fmt: skip
def test_a_bad_search_config_fails_before_any_training(tmp_path, data_dir, extra, message):
    with pytest.raises(ValueError, match=message):
        run_search(args(tmp_path, data_dir, *extra))
    assert not list((tmp_path / "logs").rglob(RESULTS_FILE))


@pytest.mark.slow
def test_study_runs_trials_as_run_dirs_resumes_and_hands_over(tmp_path, data_dir, capsys):
    study = run_search(args(tmp_path, data_dir, "search.n_trials=1", "search.pruner=none"))
    directory = tmp_path / "logs" / "optuna" / "lr_wd" / "default" / "demo"
    records = [RunRecord.load(p) for p in sorted(directory.rglob(RESULTS_FILE))]
    assert len(records) == 1 and (directory / "study.journal").is_file()
    assert all(r.counted() and r.experiment.split == "search" and r.reported.metric == "val/acc" for r in records)
    assert {t.value for t in study.trials} == {r.reported.value for r in records}  # the objective is val/acc
    assert {t.params["optim.lr"] for t in study.trials} == {r.identity.config["optim.lr"] for r in records}

    again = run_search(args(tmp_path, data_dir, "search.n_trials=2", "search.pruner=none"))  # resumes the study
    assert len(again.trials) == 2 and len(list(directory.rglob(RESULTS_FILE))) == 2
    assert again.trials[0].params != again.trials[1].params  # a resumed study does not replay its first sample

    capsys.readouterr()
    assert search_main(["select", str(directory)]) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1]
    assert "method=linear" in command and "+method_data=demo_selected" in command and "data=demo" in command


class FakeTrial:
    def __init__(self, prune: bool):
        self.prune, self.reported = prune, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune


def test_pruning_reports_val_acc_and_a_pruned_run_is_partial(tmp_path):
    import torch

    class Trainer:
        sanity_checking, current_epoch = False, 3
        callback_metrics = {"val/acc": torch.tensor(0.25)}

    trial = FakeTrial(prune=True)
    _CURRENT["trial"] = trial
    try:
        with pytest.raises(optuna.TrialPruned, match="epoch 3"):
            PruningCallback().on_validation_epoch_end(Trainer(), None)
    finally:
        _CURRENT["trial"] = None
    assert trial.reported == [(3, 0.25)]
    RunRecord(status="failed", error="TrialPruned").save(tmp_path)
    mark_pruned(tmp_path, "pruned by Optuna at epoch 3")
    record = RunRecord.load(tmp_path)
    assert record.status == "partial" and not record.counted()
