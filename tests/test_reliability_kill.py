"""Issue #5, point 1: ``kill -9`` of a search mid-trial, then the same command again.

Every finished trial is kept; the interrupted trial is FAILED in Optuna and in MLflow (no run
left RUNNING); its parameters are re-queued once (a re-queued trial that is killed again is not
re-queued a second time); and the budget is the search's total across restarts. Plain Optuna on
SQLite, killed the same way, leaves the interrupted trial RUNNING forever and runs a full budget
again on restart.

Real processes (``python -m searchcore.cli search``), a real SQLite study and MLflow store. The
trial to kill is made to wait inside its training forward pass by the faulty plugin's gate file,
so the kill lands mid-trial every time, without sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import plugins_faulty as pf
import pytest
from mlflow.tracking import MlflowClient

from searchcore.engine.backends.optuna import ATTR_REQUEUED, interrupted

S = optuna.trial.TrialState
BUDGET = 6
WAIT_S = 600.0  # a ceiling for a wedged run, not a performance assertion


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen, what: str, log: Path) -> Any:
    """Poll until ``condition()`` is truthy; fail with the process's output if it exits or wedges first."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the search exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}:\n{log.read_text()[-3000:]}")


def trials(storage: str) -> list[Any]:
    try:
        return optuna.load_study(study_name="kill", storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the search has not created its study yet
        return []


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_mid_trial_then_rerun_loses_nothing_and_keeps_the_budget(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(["hang"], trials=BUDGET))
    storage, tracking = f"sqlite:///{tmp_path / 'study.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    gate = tmp_path / "gate"
    hanging = Path(f"{gate}.hanging")
    env = pf.subprocess_env(SEARCHCORE_FAULTY_GATE=str(gate))
    cmd = pf.searchcore_cmd("search", str(space), "--name", "kill", "--storage", storage, "--tracking-uri", tracking,
                            "--no-baseline", "--no-register", "--quiet")

    # 1. Run until three trials are complete, then hold the next one inside its training and kill -9.
    gate.write_text("3")  # three trials train through, the fourth is held: the same on any machine
    a = start(cmd, env, tmp_path / "a.log")
    wait_for(hanging.exists, a, "a trial held mid-training", tmp_path / "a.log")
    assert sum(t.state == S.COMPLETE for t in trials(storage)) == 3
    kill9(a)
    before = {t.number: (t.state, t.values, t.params) for t in trials(storage) if t.state.is_finished()}
    running = [t for t in trials(storage) if t.state == S.RUNNING]
    assert len(running) == 1  # what plain Optuna would leave behind for ever
    first = running[0]
    # MLflow writes are asynchronous, so a kill can also land before a finished trial's run is
    # written, or in the middle of writing it. Make both happen: one run missing, one cut short.
    client = MlflowClient(tracking_uri=tracking)
    done = sorted(n for n, (state, _, _) in before.items() if state == S.COMPLETE)
    runs = pf.trial_runs(tracking, "kill")
    for run in runs.get(done[0], []):  # (if the kill already beat the write, it is missing anyway)
        client.delete_run(run.info.run_id)
    for run in runs.get(done[1], []):
        client.update_run(run.info.run_id, status="RUNNING")

    # 2. The same command: the interrupted trial is failed and its params re-queued; the re-queued
    #    trial is held too, and killed again.
    hanging.unlink()
    gate.write_text("")  # from now on the first trial to train is held
    b = start(cmd, env, tmp_path / "b.log")
    wait_for(hanging.exists, b, "the re-queued trial held mid-training", tmp_path / "b.log")
    kill9(b)
    now = {t.number: t for t in trials(storage)}
    assert now[first.number].state == S.FAIL
    second = [t for t in now.values() if t.state == S.RUNNING]
    assert len(second) == 1 and second[0].user_attrs[ATTR_REQUEUED] == first.number
    assert second[0].params == first.params
    second_number = second[0].number

    # 3. The same command once more, with the gate gone: it finishes the budget.
    gate.unlink()
    hanging.unlink()
    c = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert c.returncode == 0, c.stderr[-3000:]
    assert "2 interrupted" in c.stdout

    final = trials(storage)
    by_number = {t.number: t for t in final}
    assert all(t.state.is_finished() for t in final)  # nothing RUNNING or WAITING
    for number, (state, values, params) in before.items():  # every finished trial kept as it was
        assert (by_number[number].state, by_number[number].values, by_number[number].params) == (state, values, params)
    study = optuna.load_study(study_name="kill", storage=storage)
    assert interrupted(study) == {first.number, second_number}
    assert by_number[first.number].state == S.FAIL and by_number[second_number].state == S.FAIL
    requeued = [t.number for t in final if ATTR_REQUEUED in t.user_attrs]
    assert requeued == [second_number]  # re-queued once: the re-queued trial's own death is not re-queued again
    counted = [t for t in final if t.number not in interrupted(study)]
    assert len(counted) == BUDGET and len(final) == BUDGET + 2  # the budget is the total across three processes

    print(f"killed after {len(before)} finished trials (trial {first.number} RUNNING), again in re-queued trial {second_number}; "
          f"final: {len(final)} trials, {len(counted)} counted ({sum(t.state == S.COMPLETE for t in counted)} complete), "
          f"2 interrupted FAILED, 0 RUNNING")
    # MLflow: exactly one run per trial, none RUNNING; the interrupted ones FAILED with the reason.
    runs = pf.trial_runs(tracking, "kill")
    assert sorted(runs) == sorted(by_number)
    assert all(len(r) == 1 for r in runs.values())
    status = {S.COMPLETE: "FINISHED", S.PRUNED: "KILLED", S.FAIL: "FAILED"}
    for number, (run,) in runs.items():
        assert run.info.status == status[by_number[number].state], number
    for number in (first.number, second_number):
        assert runs[number][0].data.tags["searchcore.reason"].startswith("interrupted")
    exp = client.get_experiment_by_name("kill")
    assert {r.info.status for r in client.search_runs([exp.experiment_id])} <= {"FINISHED", "KILLED", "FAILED"}
