"""The local search end to end: real training on digits, real SQLite/PostgreSQL study storage,
a real MLflow store, the registered model loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import torch
from mlflow.tracking import MlflowClient

from searchcore.arch.spec import decode, from_json
from searchcore.cli import main
from searchcore.engine.api import run_search
from searchcore.engine.backends.storage import open_storage
from searchcore.engine.settings import Settings
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def _runs(client: MlflowClient, name: str) -> list:
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_end_to_end_layout_and_registered_model(workdir: Path, small_space: Path) -> None:
    result = run_search(small_space, Settings(trials=6, epochs=3, name="e2e", progress=False, baseline=True))
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{workdir / 'searchcore.db'}")
    trials = study.get_trials()
    assert len(trials) == 6
    states = {t.number: t.state.name for t in trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED"}

    client = _client(workdir)
    runs = _runs(client, "e2e")
    parents = [r for r in runs if r.data.tags.get("searchcore.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("searchcore.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["config.epochs"] == "3"
    assert "plugins.kernel" in parent.data.params and "searchcore_version" in parent.data.params
    assert parent.data.params["sampler"] == "NoRepeat(TPESampler)"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"space.yaml", "config.json"}
    by_number = {int(r.data.tags["searchcore.trial"]): r for r in children}
    assert sorted(by_number) == list(range(6))
    for number, run in by_number.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        state = states[number]
        assert run.data.tags["searchcore.state"] == state
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[state]
        trial = study.trials[number]
        assert {k: str(v) for k, v in trial.params.items()} == run.data.params
        spec_path = client.download_artifacts(run.info.run_id, "spec.json", str(workdir))
        spec = from_json(Path(spec_path).read_text())
        assert decode(run.data.tags["searchcore.spec"]) == spec
        model = build(spec)
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        epochs = len(trial.intermediate_values)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, epochs + 1))
        for key in ("train_loss", "lr", "epoch_seconds"):
            assert len(client.get_metric_history(run.info.run_id, key)) == epochs
        if state == "COMPLETE":
            assert epochs == 3
            assert run.data.metrics["params"] > 0
        else:
            assert epochs < 3

    # the best architecture: retrained, tested, logged and registered under the search's name
    assert result.best and result.best[0].model_uri == "models:/e2e/1"
    mv = client.get_model_version("e2e", "1")
    logged_test = float(mv.tags["test_accuracy"])
    assert abs(logged_test - result.best[0].test_accuracy) < 1e-4
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    model = mlflow.pytorch.load_model("models:/e2e/1")
    from searchcore.train.data import load_digits

    splits = load_digits(None, None, False, 0, 0.2, 0.2)
    with torch.no_grad():
        acc = (model(splits.test_x).argmax(1) == splits.test_y).float().mean().item()
    assert abs(acc - logged_test) < 1e-3
    assert decode(mv.tags["searchcore.spec"]) == result.best[0].spec
    assert result.baseline_test_accuracy is not None and 0.1 < result.baseline_test_accuracy <= 1.0


def test_pruned_trials_are_pruned_in_optuna_and_mlflow(workdir: Path, small_space: Path) -> None:
    run_search(small_space, Settings(trials=10, epochs=3, name="prune", progress=False, register=False, baseline=False, pruner="median"))
    study = optuna.load_study(study_name="prune", storage=f"sqlite:///{workdir / 'searchcore.db'}")
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner with 10 trials x 3 epochs and seed 0 prunes at least one trial"
    runs = {int(r.data.tags["searchcore.trial"]): r for r in _runs(_client(workdir), "prune") if r.data.tags.get("searchcore.kind") == "trial"}
    for number in pruned:
        assert runs[number].data.tags["searchcore.state"] == "PRUNED"
        assert runs[number].info.status == "KILLED"


def test_resume_continues_to_the_total_budget(workdir: Path, small_space: Path) -> None:
    assert main(["search", str(small_space), "--trials", "3", "--epochs", "1", "--name", "resume", "--no-register", "--no-baseline", "-q"]) == 0
    storage = f"sqlite:///{workdir / 'searchcore.db'}"
    first = [(t.number, t.params, t.values) for t in optuna.load_study(study_name="resume", storage=storage).trials]
    assert len(first) == 3
    assert main(["search", str(small_space), "--trials", "6", "--epochs", "1", "--name", "resume", "--no-register", "--no-baseline", "-q"]) == 0
    trials = optuna.load_study(study_name="resume", storage=storage).trials
    assert len(trials) == 6
    assert [(t.number, t.params, t.values) for t in trials[:3]] == first
    # no finished architecture proposed twice by the resumed sampler
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == len(params)
    # the same command once more does nothing
    assert main(["search", str(small_space), "--trials", "6", "--epochs", "1", "--name", "resume", "--no-register", "--no-baseline", "-q"]) == 0
    assert len(optuna.load_study(study_name="resume", storage=storage).trials) == 6
    children = [r for r in _runs(_client(workdir), "resume") if r.data.tags.get("searchcore.kind") == "trial"]
    assert sorted(int(r.data.tags["searchcore.trial"]) for r in children) == list(range(6))


def test_two_workers_on_the_default_local_storage(workdir: Path, small_space: Path) -> None:
    assert main(["search", str(small_space), "--trials", "6", "--epochs", "1", "--workers", "2", "--name", "two", "--no-register", "--no-baseline", "-q"]) == 0
    study = optuna.load_study(study_name="two", storage=open_storage(f"journal:///{workdir / 'searchcore.journal'}"))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(study.trials) == 6 and len(finished) == 6
    # trials ran in this process and the spawned worker (which may start after small trials are done)
    assert 1 <= len({t.user_attrs["pid"] for t in study.trials}) <= 2


def test_two_workers_on_postgresql(workdir: Path, small_space: Path, pg_url: str) -> None:
    assert main(["search", str(small_space), "--trials", "6", "--epochs", "1", "--workers", "2", "--storage", pg_url,
                 "--name", "pg", "--no-register", "--no-baseline", "-q"]) == 0
    study = optuna.load_study(study_name="pg", storage=open_storage(pg_url))
    assert len(study.trials) == 6
    assert all(t.state.is_finished() for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert 1 <= len({t.user_attrs["pid"] for t in study.trials}) <= 2


def test_multi_objective_search_records_the_pareto_front(workdir: Path, small_space: Path) -> None:
    text = small_space.read_text().replace("objectives: [val_accuracy]", "objectives: [val_accuracy, params]").replace("sampler: tpe", "sampler: auto")
    small_space.write_text(text)
    result = run_search(small_space, Settings(trials=5, epochs=1, name="mo", progress=False, baseline=False))
    assert result.objectives == ["val_accuracy", "params"] and result.directions == ["maximize", "minimize"]
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{workdir / 'searchcore.db'}")
    front = {t.number for t in study.best_trials}
    assert {a.trial for a in result.best} == front
    # no architecture on the front is dominated by a completed trial
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for a in result.best:
        acc, params = a.values
        assert not any(t.values[0] >= acc and t.values[1] <= params and (t.values[0] > acc or t.values[1] < params) for t in done)
    client = _client(workdir)
    parent = next(r for r in _runs(client, "mo") if r.data.tags.get("searchcore.kind") == "search")
    assert parent.data.params["sampler"] == "NSGAIISampler"  # 'auto' picks NSGA-II for several objectives
    path = client.download_artifacts(parent.info.run_id, "pareto_front.json", str(workdir))
    recorded = json.loads(Path(path).read_text())
    assert {a["trial"] for a in recorded["architectures"]} == front
    versions = client.search_model_versions("name='mo'")
    assert len(versions) == len(front)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_trial_that_trained_all_its_epochs_is_complete_whatever_the_pruner_says(workdir: Path, small_space: Path, one_thread: None) -> None:
    from searchcore.engine.backends import optuna as ob
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare
    from searchcore.plugins.host import get_host

    def run(epochs: int) -> list[optuna.trial.FrozenTrial]:
        cfg = load_space(small_space)
        cfg.epochs = epochs
        url = f"sqlite:///{workdir / f'prune{epochs}.db'}"
        study = ob.create_or_load("p", url, ["maximize"], optuna.samplers.RandomSampler(seed=0), _AlwaysPrune())
        ob.work(study, url, prepare(cfg, get_host(), 1), budget=3, fail_fast=0)
        return study.get_trials()

    assert [(t.state, t.last_step) for t in run(2)] == [(optuna.trial.TrialState.PRUNED, 1)] * 3  # stopped early: pruned
    assert [(t.state, t.last_step) for t in run(1)] == [(optuna.trial.TrialState.COMPLETE, 1)] * 3  # nothing left to save
