"""Shared fixtures: small, fast search spaces and isolated working directories."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# A test run started in the background (`make test &`, nohup, some CI runners) inherits SIGINT ignored,
# and so would every search it starts: the tests that press Ctrl-C on a search need it delivered as
# from a terminal. (An ignored signal stays ignored across exec; a handled one is reset to default.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SMALL_SPACE = """\
name: small
dataset: digits
backbone: seed-cnn
plugins:
  kernel: {choices: [3, 5]}
  residual: {}
  attention: {kinds: [none, se]}
objectives: [val_accuracy]
budget: {trials: 6, epochs: 2}
search: {sampler: tpe, pruner: hyperband, seed: 0}
"""


@pytest.fixture(autouse=True)
def _environment_as_it_was() -> Iterator[None]:
    """Whatever a test or the code it calls puts in ``os.environ`` (Ray's and MLflow's settings, a
    benchmark's ports) is gone before the next test, so no test runs in another's environment."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture
def small_space(tmp_path: Path) -> Path:
    """A space file with a few cheap dimensions, so trials take a fraction of a second."""
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPACE)
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh directory: the default stores (searchcore.db, mlflow.db) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small models (opt in with ``pytest.mark.usefixtures``): two threads
    on two busy cores spin rather than work. The previous count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server (skips where none answers), dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"sc_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    except psycopg2.OperationalError as e:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {e}")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()
