"""Every search runs the unimproved backbone first, and its best is never worse than that.

The searches use ``tests/plugins_blind.py``: a one-dimension space whose only improvement blinds the
network, so every drawn architecture but the baseline cannot learn, on any machine and seed (the
case of a budget too small for the space's draws to train, made certain)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import plugins_blind as pb
import pytest
from mlflow.tracking import MlflowClient

from searchcore.cli import main
from searchcore.engine.results import ATTR_BASELINE, Architecture, SearchResult, never_worse
from searchcore.track.mlflow_view import trial_note, trial_run_name

BLIND_SPACE = """\
name: blind
dataset: digits
backbone: seed-cnn
plugins:
  plugins_blind: {}
objectives: [val_accuracy]
budget: {trials: 3, epochs: 2}
search: {sampler: SAMPLER, pruner: hyperband, seed: 0}
"""
TESTS = str(Path(__file__).resolve().parent)


def _space(tmp_path: Path, sampler: str = "tpe") -> Path:
    path = tmp_path / "blind.yaml"
    path.write_text(BLIND_SPACE.replace("SAMPLER", sampler))
    return path


def _arch(trial: int, value: float) -> Architecture:
    return Architecture(trial, {}, {}, [value], {})


@pytest.mark.parametrize(("best", "base", "direction", "won"), [
    (0.90, 0.80, "maximize", False),  # a trial beat it: the search's winner stands
    (0.80, 0.90, "maximize", True),
    (0.85, 0.85, "maximize", True),  # a tie: the unimproved model
    (1.0e5, 2.0e5, "minimize", False),
    (3.0e5, 2.0e5, "minimize", True),
])
def test_the_baseline_replaces_a_winner_that_did_not_beat_it(best: float, base: float, direction: str, won: bool) -> None:
    result = SearchResult("s", "", "", None, ["m"], [direction], best=[_arch(3, best), _arch(5, best)], baseline=_arch(0, base))
    never_worse(result, [direction])
    assert result.baseline_won is won
    assert [a.trial for a in result.best] == ([0, 3, 5] if won else [3, 5])


def test_without_a_completed_baseline_or_with_several_objectives_nothing_changes() -> None:
    result = SearchResult("s", "", "", None, ["m"], ["maximize"], best=[_arch(3, 0.1)])
    never_worse(result, ["maximize"])  # the baseline trial was stopped or failed: nothing to compare with
    assert [a.trial for a in result.best] == [3] and not result.baseline_won
    result = SearchResult("s", "", "", None, ["m", "n"], ["maximize", "minimize"], best=[Architecture(3, {}, {}, [0.1, 9.0], {})],
                          baseline=Architecture(0, {}, {}, [0.9, 1.0], {}))
    never_worse(result, ["maximize", "minimize"])  # a Pareto front has no single winner to replace
    assert [a.trial for a in result.best] == [3] and not result.baseline_won


def test_the_baseline_trial_says_what_it_is_in_mlflow() -> None:
    assert trial_run_name(0, "COMPLETE", baseline=True) == "trial-0 (baseline)"
    assert trial_run_name(0, "PRUNED", "stopped", baseline=True) == "trial-0 (baseline, pruned)"
    assert trial_run_name(4, "PRUNED") == "trial-4 (pruned)"
    assert trial_note("COMPLETE") is None
    assert trial_note("COMPLETE", baseline=True).startswith("**Baseline**")
    assert "**Pruned**" in trial_note("PRUNED", "x", baseline=True)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_no_pruner_stops_the_baseline_trial(workdir: Path, small_space: Path, one_thread: None) -> None:
    from searchcore.engine.backends import optuna as ob
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare
    from searchcore.plugins.host import get_host

    cfg = load_space(small_space)
    cfg.epochs = 2
    runner = prepare(cfg, get_host(), 1)
    url = f"sqlite:///{workdir / 'p.db'}"
    study = ob.create_or_load("p", url, ["maximize"], optuna.samplers.RandomSampler(seed=0), _AlwaysPrune())
    study.enqueue_trial(runner.baseline_params)
    ob.work(study, url, runner, budget=3, fail_fast=0)
    states = [(t.state, t.last_step, runner.is_baseline(t.params)) for t in study.get_trials()]
    assert states[0] == (optuna.trial.TrialState.COMPLETE, 2, True)  # trained all its epochs
    assert states[1:] == [(optuna.trial.TrialState.PRUNED, 1, False)] * 2  # the others were stopped at the first


def _check_baseline_registered(workdir: Path, name: str, out: str) -> None:
    """The baseline is trial 0, it won, the summary says so in one line, and it is the registered model."""
    lines = [line for line in out.splitlines() if line.startswith("no trial beat the baseline")]
    assert len(lines) == 1, out
    assert "trial 0" in lines[0] and "the registered model" in lines[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = {r.data.tags.get("searchcore.trial"): r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("searchcore.kind") == "trial"}
    base = runs["0"]
    assert base.data.tags["searchcore.baseline"] == "true"
    assert base.data.params == {pb.ON: "False"}
    assert base.info.run_name == "trial-0 ★ best (baseline)"
    blind = [r for n, r in runs.items() if n != "0" and r.data.params.get(pb.ON) == "True"]
    assert blind, "the sampler drew the blinding improvement at least once"
    assert max(r.data.metrics["val_accuracy"] for r in blind) < 0.3 < base.data.metrics["val_accuracy"]
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].tags["trial"] == "0", versions
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("searchcore.kind") == "search")
    assert parent.data.metrics["best_test_accuracy"] == parent.data.metrics["baseline_test_accuracy"] > 0.5


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_an_optuna_search_whose_draws_cannot_learn_registers_the_baseline(workdir: Path, capsys: pytest.CaptureFixture,
                                                                       sampler: str) -> None:
    assert main(["--plugin", pb.NAME, "search", str(_space(workdir, sampler)), "--name", f"blind-{sampler}", "-q"]) == 0
    study = optuna.load_study(study_name=f"blind-{sampler}", storage=f"sqlite:///{workdir / 'searchcore.db'}")
    first = study.trials[0]
    assert first.params == {pb.ON: False} and first.user_attrs[ATTR_BASELINE] is True
    assert first.state == optuna.trial.TrialState.COMPLETE and len(study.trials) == 3
    _check_baseline_registered(workdir, f"blind-{sampler}", capsys.readouterr().out)


@pytest.mark.slow
def test_a_ray_search_whose_draws_cannot_learn_registers_the_baseline(workdir: Path, capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", TESTS)  # the Ray workers import the test plugin too
    args = ["--plugin", pb.NAME, "search", str(_space(workdir)), "--name", "blind-ray", "-q", "--backend", "ray",
            "--max-concurrent", "1", "--cpus-per-trial", "1"]
    assert main(args) == 0
    _check_baseline_registered(workdir, "blind-ray", capsys.readouterr().out)


def test_asha_records_the_baseline_but_never_stops_it() -> None:
    from ray.tune.schedulers import TrialScheduler

    from searchcore.engine.backends.ray import make_scheduler
    from searchcore.engine.backends.ray_trial import BASELINE_KEY

    scheduler = make_scheduler("asha", 9, False)
    good, base, poor = (SimpleNamespace(trial_id=i, config={}) for i in ("good", "base", "poor"))
    for t in (good, base, poor):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, good, {"training_iteration": 1, "val_accuracy": 0.9}) == TrialScheduler.CONTINUE
    row = {"training_iteration": 1, "val_accuracy": 0.1}
    assert scheduler.on_trial_result(None, base, {**row, BASELINE_KEY: 1.0}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, poor, row) == TrialScheduler.STOP
