"""Issue #5, point 5: the MLflow tracking server stops answering mid-search.

The search goes on (the Optuna storage keeps every trial), warns once and still ends normally;
``searchcore sync NAME`` (run in-process) later writes the missing runs exactly once (a second sync writes none),
replaces a run the outage cut short, and closes the parent run the search could not close.

Real components: an ``mlflow server`` subprocess on a free 127.0.0.1 port with a SQLite backend,
killed (its whole process group, ``kill -9``) while a trial is held mid-training by the faulty
plugin's gate, then restarted on the same backend for the sync.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import plugins_faulty as pf
import pytest
from mlflow.tracking import MlflowClient

import searchcore.plugins.host as host_module
from searchcore.cli import main
from searchcore.track.tracking import HTTP_DEFAULTS

BUDGET = 6
WAIT_S = 600.0  # a ceiling for a wedged process, not a performance assertion


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], what: str, *procs: subprocess.Popen) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{p.args[:4]} exited ({p.returncode}) before {what}")
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}")


class Server:
    """``mlflow server`` on 127.0.0.1, in its own process group so all its workers die together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", (self.root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        log = (self.root / f"server-{port}.log").open("w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=pf.subprocess_env())
        wait_for(lambda: answering(self.url), "the MLflow server to answer", self.proc)
        return self.url

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = Server(tmp_path)
    yield s
    s.kill()


@pytest.mark.slow
def test_search_survives_a_tracking_outage_and_sync_writes_the_missing_runs_once(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(host_module, "_HOST", host_module._HOST)  # the in-process sync below loads its own host; put this one back
    for var, value in HTTP_DEFAULTS.items():  # what an http Tracker sets in this process: undone after the test
        monkeypatch.setenv(var, value)
    url = server.start()
    space = tmp_path / "space.yaml"
    space.write_text(pf.space_yaml(["hang"], trials=BUDGET))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    gate = tmp_path / "gate"
    gate.write_text("3")  # three trials train through; the fourth is held mid-training, however fast the machine
    env = pf.subprocess_env(SEARCHCORE_FAULTY_GATE=str(gate))
    cmd = pf.searchcore_cmd("search", str(space), "--name", "outage", "--storage", storage, "--tracking-uri", url,
                            "--no-baseline", "--no-register", "--quiet")
    err = tmp_path / "search.err"
    search = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err.open("w"), text=True, start_new_session=True)
    try:
        # Three trials recorded, the next one held mid-training: now the server dies.
        wait_for(Path(f"{gate}.hanging").exists, "a trial held mid-training", search)
        wait_for(lambda: len(pf.trial_runs(url, "outage")) >= 3, "three trial runs in MLflow", search)
        before = set(pf.trial_runs(url, "outage"))
        server.kill()
        assert not answering(url)
        gate.unlink()
        out, _ = search.communicate(timeout=WAIT_S)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
    stderr = err.read_text()
    assert search.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.count("is not answering") == 1  # warned once, not once per trial
    assert f"search 'outage': {BUDGET} complete" in out  # the search went on and finished its budget
    trials = optuna.load_study(study_name="outage", storage=storage).get_trials()
    assert len(trials) == BUDGET and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    # The server is back (same backend store): `searchcore sync` writes what is missing, exactly once.
    url = server.start()
    missing = BUDGET - len(before)
    capsys.readouterr()
    assert main(["sync", "outage", "--storage", storage, "--tracking-uri", url]) == 0
    written = int(capsys.readouterr().out.split("wrote ")[1].split()[0])
    assert written >= missing >= 1  # (a run the outage cut short is written again, after its stub is deleted)
    assert main(["sync", "outage", "--storage", storage, "--tracking-uri", url]) == 0
    assert "wrote 0 " in capsys.readouterr().out

    runs = pf.trial_runs(url, "outage")
    assert sorted(runs) == list(range(BUDGET))
    assert all(len(r) == 1 and r[0].info.status == "FINISHED" for r in runs.values())  # no duplicate, none cut short
    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("outage")
    parents = client.search_runs([exp.experiment_id], "tags.`searchcore.kind` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the parent run the search could not close
    assert all(r.info.status != "RUNNING" for r in client.search_runs([exp.experiment_id]))


@pytest.mark.parametrize("where", ["", "no/such/folder/mlflow.db"])
def test_a_sqlite_tracking_uri_mlflow_cannot_open_fails_at_once_in_one_line(where: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder, or a file in a missing folder: one line at once (MLflow would retry for ~100 s and log its own warning)."""
    from searchcore.errors import UsageError
    from searchcore.track.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^tracking URI sqlite:///\S+: \S+ is (a folder|in a folder).*; use sqlite:///FILE or http://HOST:PORT$"):
        Tracker(f"sqlite:///{where}")  # searchcore's own check: MLflow's engine retries are never reached
    assert capfd.readouterr() == ("", "")
