"""Many machines on one study: ``searchcore worker`` processes on a PostgreSQL study, recording into an
``mlflow server`` whose backend store is PostgreSQL; both started and torn down here, each test in
databases of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from layout import check_layout

from searchcore.engine.api import run_search
from searchcore.engine.backends.ray import free_port
from searchcore.engine.backends.storage import open_storage
from searchcore.engine.results import ATTR_SPACE
from searchcore.engine.settings import Settings

psycopg2 = pytest.importorskip("psycopg2")

TINY_SPACE = """\
name: tiny
dataset: digits
backbone: seed-cnn
plugins:
  kernel: {choices: [3, 5]}
objectives: [val_accuracy]
budget: {trials: 40, epochs: 1}
search: {sampler: tpe, pruner: none, seed: 0}
train: {batch_size: 256}
"""


@pytest.fixture
def pg_databases() -> Iterator[Callable[[], str]]:
    """Create throwaway PostgreSQL databases on demand; all dropped afterwards."""
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    except psycopg2.OperationalError as e:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {e}")
    admin.autocommit = True
    made: list[str] = []

    def create() -> str:
        name = f"sc_{uuid.uuid4().hex[:12]}"
        admin.cursor().execute(f"CREATE DATABASE {name}")
        made.append(name)
        return name

    yield create
    for name in made:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def mlflow_server(tmp_path: Path, pg_databases: Callable[[], str]) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 and a free port, runs in PostgreSQL, artifacts served by the server."""
    db = pg_databases()
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}",
           "--artifacts-destination", str(tmp_path / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _pg(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


@pytest.mark.slow
def test_four_workers_finish_a_forty_trial_study_exactly(tmp_path: Path, pg_databases: Callable[[], str], mlflow_server: str) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    storage = _pg(pg_databases())
    common = ["--storage", storage, "--name", "dist"]
    search = subprocess.Popen([sys.executable, "-m", "searchcore.cli", "search", str(space), *common, "--tracking-uri", mlflow_server,
                               "--threads", "1", "--no-register", "--no-baseline", "-q"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    workers: list[subprocess.Popen] = []
    try:
        while search.poll() is None:  # workers join once the search has created the study
            try:
                if ATTR_SPACE in optuna.load_study(study_name="dist", storage=open_storage(storage)).user_attrs:
                    break
            except KeyError:
                pass
            time.sleep(0.5)
        workers = [subprocess.Popen([sys.executable, "-m", "searchcore.cli", "worker", *common, "--threads", "1"], cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [(p, p.communicate(timeout=500)[1]) for p in [search, *workers]]
    finally:
        for p in [search, *workers]:
            if p.poll() is None:
                p.kill()
    for p, err in outs:
        assert p.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="dist", storage=open_storage(storage))
    trials = study.get_trials()
    assert len(trials) == 40, "the budget is the study's total: no worker over-ran it"
    assert all(t.state.is_finished() for t in trials)
    assert sorted(t.number for t in trials) == list(range(40))
    assert len({t.user_attrs["pid"] for t in trials}) >= 3, "the workers shared the trials"
    check_layout(mlflow_server, "dist", 40)


def test_a_dead_workers_running_trial_is_failed_and_retried(tmp_path: Path, pg_databases: Callable[[], str]) -> None:
    from searchcore.engine.backends.optuna import ATTR_REQUEUED
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare
    from searchcore.plugins.host import get_host

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    storage, tracking = _pg(pg_databases()), f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_search(space, Settings(trials=2, epochs=1, storage=storage, tracking_uri=tracking, name="hb", progress=False, register=False,
                               baseline=False))
    # a worker on another machine took a trial and died: its heartbeat stopped an hour ago
    study = optuna.load_study(study_name="hb", storage=open_storage(storage))
    lost = study.ask()
    prepare(load_space(space), get_host(), 1).space.sample(lost)
    lost.set_user_attr("host", "another-machine")
    lost.set_user_attr("pid", 1)
    lost.set_user_attr("heartbeat", time.time() - 3600)
    study.set_user_attr("budget", 3)

    done = subprocess.run([sys.executable, "-m", "searchcore.cli", "worker", "--storage", storage, "--name", "hb", "--threads", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = {t.number: t for t in optuna.load_study(study_name="hb", storage=open_storage(storage)).get_trials()}
    assert trials[lost.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials.values() if t.user_attrs.get(ATTR_REQUEUED) == lost.number]
    assert len(retries) == 1 and retries[0].state.is_finished() and retries[0].params == trials[lost.number].params
    assert len(trials) == 4, "two trials, the lost one, its retry: the budget of 3 counts the retry, not the lost trial"
    layout = check_layout(tracking, "hb", 4)
    assert layout.children[lost.number].data.tags["searchcore.state"] == "FAILED"
    assert "interrupted" in layout.children[lost.number].data.tags["searchcore.reason"]
