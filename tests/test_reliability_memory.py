"""Issue #5, point 4: memory over a long search, and ``--isolate``.

* 100 consecutive trials in one worker grow its RSS by less than 100 MB: no leaked models,
  optimizers or graphs. Each model carries a 4 MB parameter (16 MB with its
  gradient and Adam state), so a leak would show; the same
  measure on a plugin that does leak its model proves it would.
* ``--isolate`` runs each trial in a fresh process of its own process group and kills the whole
  group (the trial and what it started) when the trial ends, is pruned, or the search stops;
  pruning still works through the pipe, and failures come back with the trial's traceback.

The RSS is read by the faulty plugin at the start of every trial, inside the real
``searchcore search`` process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import plugins_faulty as pf
import pytest
import torch

import searchcore.plugins.host as host_module
from searchcore.engine.config import load_space
from searchcore.engine.isolate import IsolatedRunner
from searchcore.engine.runner import prepare
from searchcore.plugins.host import configure
from searchcore.space import ParamsTrial
from searchcore.train.outcome import COMPLETE, FAILED, PRUNED, Pruned

MB = 1024 * 1024
WAIT_S = 600.0  # a ceiling for a wedged process, not a performance assertion


def rss_over_trials(tmp_path: Path, trigger: str, trials: int, ballast: int) -> list[int]:
    """RSS of a real search process at the start of each of its trials."""
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml([trigger], trials=trials, ballast=ballast, val=0.5, test=0.45))
    rss = tmp_path / "rss.txt"
    cmd = pf.searchcore_cmd("search", str(space), "--name", "rss", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
                            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-baseline", "--no-register", "--quiet")
    done = subprocess.run(cmd, env=pf.subprocess_env(SEARCHCORE_FAULTY_RSS=str(rss)), capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    values = [int(line) for line in rss.read_text().split()]
    assert len(values) >= trials  # (work after the last trial, a report, may read it again)
    return values[:trials]


@pytest.mark.slow
def test_100_trials_in_one_worker_grow_rss_by_less_than_100_mb(tmp_path: Path) -> None:
    # Trial 0 warms up (lazy imports, allocator pools); then 100 trials run between two readings.
    rss = rss_over_trials(tmp_path, "ok", trials=102, ballast=1_000_000)
    growth = rss[101] - rss[1]
    print(f"RSS at trial 1 {rss[1] / MB:.0f} MB, at trial 101 {rss[101] / MB:.0f} MB: {growth / MB:+.1f} MB over 100 trials "
          f"({(rss[101] - rss[0]) / MB:+.1f} MB counting the first trial)")
    assert growth < 100 * MB


def test_the_rss_measure_sees_a_leaked_model(tmp_path: Path) -> None:
    # The same measure on a plugin that keeps every model alive (32 MB each): it must fail the bound.
    rss = rss_over_trials(tmp_path, "leak", trials=6, ballast=8_000_000)
    assert rss[5] - rss[1] > 100 * MB  # four leaked models


# --- --isolate ---------------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """Dead, or a zombie waiting to be reaped (it holds no memory and runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not all(gone(p) for p in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"processes still alive: {[p for p in pids if not gone(p)]}")
        time.sleep(0.1)


def spawned(pids_file: Path) -> list[int]:
    """``[trial process, its grandchild]`` pids the faulty block wrote."""
    return [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []


@pytest.fixture
def faulty_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setattr(host_module, "_HOST", None)
    for var in ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE", "SEARCHCORE_FAULTY_OFF"):
        monkeypatch.delenv(var, raising=False)
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("SEARCHCORE_FAULTY_PIDS", str(pids))
    configure([pf.NAME])
    yield pids


def isolated_runner(tmp_path: Path, triggers: list[str], epochs: int) -> IsolatedRunner:
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(triggers, trials=1, epochs=epochs))
    return IsolatedRunner(prepare(load_space(space), host_module.get_host(), 1))


def params(trigger: str) -> ParamsTrial:
    return ParamsTrial({"kernel.s1": 3, "kernel.s2": 5, pf.TRIGGER: trigger})


def test_isolated_trial_matches_in_process_and_its_group_is_killed_when_it_ends(tmp_path: Path, faulty_host: Path) -> None:
    runner = isolated_runner(tmp_path, ["spawn", "ok"], epochs=2)
    seen: list[int] = []
    out = runner.run(params("spawn"), 0, lambda epoch, metrics: seen.append(epoch))
    assert out.state == COMPLETE, out.traceback
    assert seen == [1, 2] and [h["epoch"] for h in out.history] == [1, 2]  # every epoch came back through the pipe
    trial_pid, grandchild = spawned(faulty_host)
    assert trial_pid != os.getpid()  # it trained in another process
    wait_gone([trial_pid, grandchild])  # the grandchild the plugin started dies with the trial's group
    # The same trial in-process gives the same metrics: isolation changes where, not what.
    threads = torch.get_num_threads()
    try:
        local = prepare(runner.cfg, runner.host, 1).run(params("ok"), 0, lambda e, m: None)
    finally:
        torch.set_num_threads(threads)
    assert local.state == COMPLETE, local.traceback
    assert out.metrics["val_accuracy"] == local.metrics["val_accuracy"]


def test_pruning_an_isolated_trial_kills_its_process_group(tmp_path: Path, faulty_host: Path) -> None:
    runner = isolated_runner(tmp_path, ["spawn"], epochs=3)

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        raise Pruned(f"pruned at epoch {epoch}")

    out = runner.run(params("spawn"), 0, prune)
    assert out.state == PRUNED and out.reason == "pruned at epoch 1"
    assert [h["epoch"] for h in out.history] == [1]  # the trial waited; it did not run ahead
    wait_gone(spawned(faulty_host))


@pytest.mark.parametrize(("trigger", "state", "reason"), [
    ("forward", FAILED, "RuntimeError: faulty block: forward failed"),
    ("oom", FAILED, "out of memory"),
])
def test_isolated_failures_come_back_with_reason_and_traceback(tmp_path: Path, faulty_host: Path, trigger: str, state: str, reason: str) -> None:
    runner = isolated_runner(tmp_path, [trigger], epochs=1)
    out = runner.run(params(trigger), 0, lambda e, m: None)
    assert out.state == state and out.reason.startswith(reason)
    if state == FAILED:
        assert "plugins_faulty.py" in out.traceback and "in forward" in out.traceback  # the trial process's own traceback


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_stopping_an_isolated_search_kills_the_trial_group(tmp_path: Path, stop: signal.Signals) -> None:
    """Ctrl-C: the search kills the group. kill -9 of the search: the trial notices its control
    pipe close and kills its own group. Either way nothing of the trial survives the search."""
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(["hang"], trials=2))
    gate, pids = tmp_path / "gate", tmp_path / "pids.txt"
    gate.touch()
    env = pf.subprocess_env(SEARCHCORE_FAULTY_GATE=str(gate), SEARCHCORE_FAULTY_PIDS=str(pids))
    cmd = pf.searchcore_cmd("search", str(space), "--isolate", "--name", "iso", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
                            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-baseline", "--no-register", "--quiet")
    search = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not Path(f"{gate}.hanging").exists():
            assert search.poll() is None, search.stderr.read() if search.stderr else ""
            assert time.monotonic() < deadline, "no trial reached its training"
            time.sleep(0.1)
        trial_pid, grandchild = spawned(pids)
        assert trial_pid != search.pid and os.getpgid(trial_pid) == trial_pid  # a group of its own
        search.send_signal(stop)
        code = search.wait(timeout=WAIT_S)
        assert code == (130 if stop == signal.SIGINT else -signal.SIGKILL)
        wait_gone([trial_pid, grandchild])
    finally:
        if search.poll() is None:
            search.kill()
        gate.unlink(missing_ok=True)
    study = optuna.load_study(study_name="iso", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 1  # stopped during its first trial: nothing more was started
