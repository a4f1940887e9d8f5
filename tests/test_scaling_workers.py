"""``searchcore search --workers 2`` on one machine: the spawned worker joins the search and every
worker process trains with the configured thread count (issue #6, parallel scaling).

No timings are asserted: the evaluator below makes each trial wait until two different processes
have started trials, so the test needs the spawned worker to join while the search still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from searchcore.cli import main
from searchcore.engine.backends.storage import open_storage
from searchcore.plugins.host import configure

PROBE = '''\
"""Test plugin: an evaluator that records each trial's process and thread settings."""
import os
import time
from pathlib import Path

import searchcore

ROOT = Path(os.environ["SCALING_PROBE_DIR"])


def probe(spec, config, report):
    import torch

    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / str(os.getpid())).touch()
    deadline = time.time() + 180  # until both worker processes run trials (the spawned one starts in seconds)
    while len(list(ROOT.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    (x @ x).sum().item()  # some torch work in this process before the threads are read
    report(1, {"val_accuracy": 0.5})
    return {"val_accuracy": 0.5, "pid": float(os.getpid()), "torch_threads": float(torch.get_num_threads()),
            "interop_threads": float(torch.get_num_interop_threads()),
            "omp_env": float(os.environ.get("OMP_NUM_THREADS", "0") or 0)}


@searchcore.hookimpl
def searchcore_evaluators(register):
    register("threads-probe", probe)
'''

SPACE = """\
name: scaling
dataset: digits
backbone: seed-cnn
plugins: {kernel: {choices: [3, 5]}}
objectives: [val_accuracy]
budget: {trials: 6, epochs: 1}
search: {sampler: random, pruner: none, evaluator: threads-probe}
"""


@pytest.fixture
def probe_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The probe plugin, loaded here and in the spawned workers (through PYTHONPATH and SEARCHCORE_PLUGINS)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "scaling_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]))
    monkeypatch.setenv("SEARCHCORE_PLUGINS", "scaling_probe")
    monkeypatch.setenv("SCALING_PROBE_DIR", str(tmp_path / "pids"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    configure()
    yield
    monkeypatch.delenv("SEARCHCORE_PLUGINS")
    configure()


def test_both_workers_run_trials_with_the_configured_threads(workdir: Path, probe_plugin: None) -> None:
    space = workdir / "scaling.yaml"
    space.write_text(SPACE)
    assert main(["search", str(space), "--workers", "2", "--threads", "1", "--name", "scaling", "--no-register", "--no-baseline", "-q"]) == 0
    study = optuna.load_study(study_name="scaling", storage=open_storage(f"journal:///{workdir / 'searchcore.journal'}"))
    trials = study.trials
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    metrics = [t.user_attrs["metrics"] for t in trials]
    pids = {int(m["pid"]) for m in metrics}
    assert os.getpid() in pids and len(pids) == 2, "the search process and the spawned worker both ran trials"
    assert {int(t.user_attrs["pid"]) for t in trials} == pids
    for m in metrics:
        assert m["torch_threads"] == 1, m
        if int(m["pid"]) != os.getpid():  # a fresh interpreter: its pools are sized before first use
            assert m["interop_threads"] == 1, m
            assert m["omp_env"] == 1, "the spawned worker's OpenMP pool is sized before it imports torch"
        # (this test process may have used torch's inter-op pool before the search: it keeps its size then)


def test_a_search_that_ends_before_the_worker_joins_leaves_no_worker_behind(workdir: Path, small_space: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-trial search is over before the spawned worker has started up: the worker is stopped
    (not waited for through its whole start-up) and never ran or half-ran a trial."""
    import searchcore.engine.backends.optuna_search as sa

    spawned: list[subprocess.Popen] = []
    real = sa._spawn_workers

    def spawn(*args, **kwargs):
        spawned.extend(real(*args, **kwargs))
        return spawned

    monkeypatch.setattr(sa, "_spawn_workers", spawn)
    assert main(["search", str(small_space), "--trials", "1", "--epochs", "1", "--workers", "2", "--threads", "1", "--name", "early",
                 "--no-register", "--no-baseline", "-q"]) == 0
    study = optuna.load_study(study_name="early", storage=open_storage(f"journal:///{workdir / 'searchcore.journal'}"))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs["pid"] for t in study.trials} == {os.getpid()}
    assert len(spawned) == 1 and all(p.poll() is not None for p in spawned), "no worker process outlives the search"


def test_a_waiting_worker_exits_when_the_search_gives_up(tmp_path: Path) -> None:
    """EOF on stdin before "go" (the search failed while setting up): the worker exits cleanly, creating nothing."""
    journal = tmp_path / "none.journal"
    cmd = [sys.executable, "-m", "searchcore.cli", "worker", "--storage", f"journal:///{journal}", "--name", "none",
           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--threads", "1", "--wait-for-go"]
    proc = subprocess.run(cmd, input=b"", capture_output=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert not journal.exists() and not (tmp_path / "mlflow.db").exists()
