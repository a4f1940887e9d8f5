"""Issue #5, points 2 and 3: a plugin bug, a diverging trial or an out-of-memory error fails (or
prunes) only its own trial, with the reason as a tag and the traceback as an artifact; the
search goes on. The first K trials failing alike stop the search early, and says so; once the
bug is fixed the same command carries on.

Real searches on real stores (SQLite study, SQLite MLflow), faults injected by
``tests/plugins_faulty.py``. Trials are enqueued so each fault meets a known trial number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import plugins_faulty as pf
import pytest
from mlflow.tracking import MlflowClient

import searchcore.plugins.host as host_module
from searchcore.cli import main
from searchcore.engine.api import search
from searchcore.plugins.host import configure

FAULTS = ["transform", "ok", "build", "forward", "nan", "oom", "ok"]
REASONS = {
    "transform": "plugin 'plugins_faulty' (package (development)): searchcore_transform raised ValueError: faulty transform: boom",
    "build": "RuntimeError: faulty block: build failed",
    "forward": "RuntimeError: faulty block: forward failed",
    "oom": "out of memory",
}
TRACEBACK_TEXT = {
    "transform": "faulty transform: boom",
    "build": "faulty block: build failed",
    "forward": "faulty block: forward failed",
    "oom": "CUDA out of memory. Tried to allocate 20.00 GiB",
}
S = optuna.trial.TrialState


@pytest.fixture(scope="module")
def faulty_host() -> Iterator[Any]:
    """The plugin host with the faulty plugin loaded; the previous host is put back afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(host_module, "_HOST", None)
        for var in ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE", "SEARCHCORE_FAULTY_OFF"):
            mp.delenv(var, raising=False)
        yield configure([pf.NAME])


@pytest.fixture(scope="module")
def faults_search(tmp_path_factory: pytest.TempPathFactory, faulty_host: Any) -> dict[str, Any]:
    """One search whose trials meet every fault in turn (enqueued), run once for the tests below."""
    root = tmp_path_factory.mktemp("faults")
    space = root / "space.yaml"
    space.write_text(pf.space_yaml(["ok", "transform", "build", "forward", "nan", "oom"], trials=len(FAULTS)))
    storage, tracking = f"sqlite:///{root / 'study.db'}", f"sqlite:///{root / 'mlflow.db'}"
    study = optuna.create_study(study_name="faults", storage=storage, direction="maximize")
    for fault in FAULTS:
        study.enqueue_trial({pf.TRIGGER: fault})
    pf.LIVE_AT_TRANSFORM.clear()
    result = search(space, name="faults", storage=storage, tracking_uri=tracking, register=False, baseline=False, progress=False, plots=False)
    trials = optuna.load_study(study_name="faults", storage=storage).get_trials()
    return {"result": result, "trials": trials, "tracking": tracking, "root": root, "live": list(pf.LIVE_AT_TRANSFORM)}


def _artifact(tracking: str, run_id: str, name: str, dst: Path) -> str:
    path = MlflowClient(tracking_uri=tracking).download_artifacts(run_id, name, str(dst))
    return Path(path).read_text()


def test_each_plugin_fault_fails_only_its_trial_and_the_search_goes_on(faults_search: dict[str, Any]) -> None:
    trials = faults_search["trials"]
    assert [t.params[pf.TRIGGER] for t in trials] == FAULTS  # every trial ran, in the enqueued order
    assert faults_search["result"].stopped_reason == ""  # different errors: no early stop
    for t, fault in zip(trials, FAULTS):
        if fault in REASONS:
            assert t.state == S.FAIL, (fault, t.state)
            assert t.user_attrs["reason"] == REASONS[fault]
        elif fault == "ok":
            assert t.state == S.COMPLETE and t.value is not None


def test_failed_trials_carry_reason_tag_and_traceback_artifact_in_mlflow(faults_search: dict[str, Any], tmp_path: Path) -> None:
    runs = pf.trial_runs(faults_search["tracking"], "faults")
    assert sorted(runs) == list(range(len(FAULTS)))
    assert all(len(r) == 1 for r in runs.values())  # one run per trial, no duplicate
    for number, fault in enumerate(FAULTS):
        run = runs[number][0]
        if fault in REASONS:
            assert run.info.status == "FAILED"
            assert run.data.tags["searchcore.reason"] == REASONS[fault]
            assert "\n" not in run.data.tags["searchcore.reason"]
            tb = _artifact(faults_search["tracking"], run.info.run_id, "traceback.txt", tmp_path / str(number))
            assert "Traceback (most recent call last)" in tb and TRACEBACK_TEXT[fault] in tb
        elif fault == "ok":
            assert run.info.status == "FINISHED" and "searchcore.reason" not in run.data.tags


def test_a_diverging_trial_is_pruned_with_reason_diverged(faults_search: dict[str, Any]) -> None:
    number = FAULTS.index("nan")
    t = faults_search["trials"][number]
    assert t.state == S.PRUNED
    assert t.user_attrs["reason"].startswith("diverged")
    run = pf.trial_runs(faults_search["tracking"], "faults")[number][0]
    assert run.info.status == "KILLED" and run.data.tags["searchcore.reason"].startswith("diverged")


def test_out_of_memory_fails_the_trial_frees_its_model_and_the_next_trial_runs(faults_search: dict[str, Any]) -> None:
    number = FAULTS.index("oom")
    trials = faults_search["trials"]
    assert trials[number].state == S.FAIL and trials[number].user_attrs["reason"] == "out of memory"
    assert trials[number + 1].state == S.COMPLETE
    # At the start of every trial no model of an earlier trial is still alive: not after a
    # failure, not after the out-of-memory error (whose traceback referenced the model).
    assert len(faults_search["live"]) == len(FAULTS) and set(faults_search["live"]) == {0}


def test_a_sampler_that_raises_fails_only_that_trial(tmp_path: Path, faulty_host: Any) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(["ok"], trials=4, sampler="faulty-random"))
    storage, tracking = f"sqlite:///{tmp_path / 'study.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    search(space, name="sampling", storage=storage, tracking_uri=tracking, register=False, baseline=False, progress=False, plots=False)
    trials = optuna.load_study(study_name="sampling", storage=storage).get_trials()
    assert [t.state for t in trials] == [S.COMPLETE, S.FAIL, S.COMPLETE, S.FAIL]
    assert {t.user_attrs["reason"] for t in trials if t.state == S.FAIL} == {"RuntimeError: faulty sampler: boom"}
    runs = pf.trial_runs(tracking, "sampling")
    assert [runs[n][0].info.status for n in range(4)] == ["FINISHED", "FAILED", "FINISHED", "FAILED"]
    tb = _artifact(tracking, runs[1][0].info.run_id, "traceback.txt", tmp_path / "tb")
    assert "sample_independent" in tb and "faulty sampler: boom" in tb


def test_identical_failures_stop_the_search_early_and_a_fixed_plugin_resumes_it(
    tmp_path: Path, faulty_host: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(["transform"], trials=8))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--plugin", pf.NAME, "search", str(space), "--name", "ff", "--storage", storage,
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-baseline", "--no-register", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"stopped early: the first 5 trials all failed with: {REASONS['transform']}" in out
    trials = optuna.load_study(study_name="ff", storage=storage).get_trials()
    assert len(trials) == 5 and all(t.state == S.FAIL for t in trials)  # 3 trials of the budget left unburnt

    monkeypatch.setenv("SEARCHCORE_FAULTY_OFF", "1")  # the plugin's bug is fixed; the same command again
    assert main(argv) == 0
    assert "stopped early" not in capsys.readouterr().out
    trials = optuna.load_study(study_name="ff", storage=storage).get_trials()
    assert [t.state for t in trials] == [S.FAIL] * 5 + [S.COMPLETE] * 3  # the budget is the total: 8
