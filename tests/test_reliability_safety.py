"""Issue #5, point 7: safe defaults.

* A space file cannot execute code or import modules: YAML tags that would, and names (plugins,
  backbone, dataset, sampler, evaluator, objectives) that would be imported elsewhere, end in a
  one-line error and import nothing.
* Checkpoints load with ``torch.load(weights_only=True)``: a pickle that runs code on load is
  refused; and no source file loads pickles, unsafe YAML or evals (checked on the syntax tree).
* Every server searchcore starts binds to 127.0.0.1 unless the user names a host (``searchcore
  ui`` for real, the rest on the syntax tree); Ray's token authentication is never switched off.
* Credentials inside storage or tracking URLs are masked in logs, MLflow params and printed output.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import plugins_faulty as pf
import pytest
import torch
from mlflow.tracking import MlflowClient

import searchcore
import searchcore.plugins.host as host_module
from searchcore.arch.spec import to_json
from searchcore.builtin.core import seed_cnn
from searchcore.cli import main
from searchcore.engine.backends.storage import open_storage
from searchcore.errors import UsageError
from searchcore.plugins.host import configure
from searchcore.track.tracking import HTTP_DEFAULTS

ROOT = Path(searchcore.__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "searchcore").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
SECRET = "s3cr3t-pw"
INSTANT = """\
dataset: {name: digits, val_fraction: 0.3, test_fraction: 0.2}
backbone: {name: seed-cnn, options: {channels: [8]}}
plugins: {kernel: {choices: [3, 5]}, plugins_faulty: {triggers: [ok]}}
budget: {trials: 1, epochs: 1}
search: {sampler: random, pruner: none, evaluator: instant}
"""


@pytest.fixture
def faulty_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(host_module, "_HOST", None)
    for var in ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE", "SEARCHCORE_FAULTY_OFF"):
        monkeypatch.delenv(var, raising=False)
    yield configure([pf.NAME])


def one_line_exit_2(code: int, err: str) -> bool:
    return code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("searchcore: error: ")


# --- space files cannot execute code or import modules -------------------------------------------

CANARY = "sc_canary_module"
PAYLOADS = {
    "object/apply tag": f"name: !!python/object/apply:{CANARY}.boom []\n",
    "name tag": f"name: !!python/name:{CANARY}.boom\n",
    "module tag": f"name: !!python/module:{CANARY}\n",
    "object/new tag": f"budget: {{trials: !!python/object/new:{CANARY}.Boom []}}\n",
    "plugin name": f"plugins: {{{CANARY}: {{}}}}\n",
    "backbone name": f"backbone: {CANARY}\n",
    "dataset name": f"dataset: {CANARY}\n",
    "sampler name": f"search: {{sampler: {CANARY}}}\n",
    "evaluator name": f"search: {{evaluator: {CANARY}}}\n",
    "objective name": f"objectives: [{CANARY}]\n",
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=list(PAYLOADS))
def test_a_space_file_cannot_run_code_or_import_a_module(payload: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "imported"
    (tmp_path / f"{CANARY}.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef boom(*a): return 1\nclass Boom: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable, so only searchcore's refusal keeps it out
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text("dataset: {name: digits, val_fraction: 0.3, test_fraction: 0.2}\n" * ("dataset" not in payload) + payload)
    capsys.readouterr()
    code = main(["search", str(space), "--trials", "1", "--epochs", "1", "--no-baseline", "--no-register", "--quiet"])
    assert one_line_exit_2(code, capsys.readouterr().err)
    assert not marker.exists() and CANARY not in sys.modules


# --- checkpoints load with weights_only=True -------------------------------------------------------


class _RunsOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_on_load_is_refused(tmp_path: Path) -> None:
    from searchcore.track.export import load_source

    spec = tmp_path / "spec.json"
    spec.write_text(to_json(seed_cnn([1, 8, 8], 10, {})))
    marker, weights = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"stem.weight": _RunsOnLoad(marker)}, weights)
    with pytest.raises(UsageError):
        load_source(str(spec), weights=str(weights))
    assert not marker.exists()


def _calls(tree: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def _keyword(call: ast.Call, name: str) -> Any:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else ast.unparse(k.value)
    return None


def test_no_source_file_loads_pickles_unsafe_yaml_or_evals() -> None:
    problems = []
    for path in SOURCES:
        for func, call in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{call.lineno} {func}"
            if func == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{where} without weights_only=True")
            if func in ("pickle.load", "pickle.loads", "dill.load", "cloudpickle.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
                problems.append(where)
            if func == "yaml.load" and _keyword(call, "Loader") not in ("yaml.SafeLoader", "yaml.CSafeLoader", "_Loader"):
                problems.append(f"{where} with an unsafe loader")
    assert problems == []


# --- servers bind to 127.0.0.1; Ray keeps token auth ---------------------------------------------------


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port``, from /proc/net/tcp and tcp6 (state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


@pytest.mark.slow
def test_searchcore_ui_listens_on_127_0_0_1_only(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui = subprocess.Popen([sys.executable, "-m", "searchcore.cli", "ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=pf.subprocess_env())
    try:
        deadline = time.monotonic() + 300  # a ceiling for a wedged start, not a performance assertion
        while not _listeners(port):
            assert ui.poll() is None and time.monotonic() < deadline, "the MLflow UI did not start"
            time.sleep(0.2)
        assert _listeners(port) <= LOOPBACK
    finally:
        os.killpg(ui.pid, signal.SIGKILL)
        ui.wait()


def test_no_server_defaults_to_all_interfaces_and_ray_auth_stays_on() -> None:
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ("0.0.0.0", "::", "[::]"):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} binds {node.value}")
        for func, call in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
            if func.endswith("add_argument") and any(str(f).endswith("host") for f in flags):
                if _keyword(call, "default") != "127.0.0.1":
                    problems.append(f"{where} {flags} defaults to {_keyword(call, 'default')!r}")
            if func == "ray.init" and _keyword(call, "dashboard_host") not in (None, "127.0.0.1"):
                problems.append(f"{where} ray.init(dashboard_host={_keyword(call, 'dashboard_host')!r})")
            if func == "ray.init" and _keyword(call, "include_dashboard") not in (None, False):
                problems.append(f"{where} ray.init starts the dashboard")
        text = path.read_text()
        for off in ('"RAY_AUTH_MODE"] = "disabled"', "RAY_AUTH_MODE=disabled", "'RAY_AUTH_MODE'] = 'disabled'"):
            if off in text:
                problems.append(f"{path.relative_to(ROOT)} switches Ray token auth off")
    assert problems == []


# --- credentials are masked -----------------------------------------------------------------------


@pytest.fixture
def pg_db(pg_url: str) -> str:
    """The name of a fresh database (conftest's ``pg_url``), for URLs that carry a password."""
    return pg_url.rsplit("/", 1)[1]


def _search(argv: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err + caplog.text


def test_credentials_in_the_storage_url_never_show(tmp_path: Path, pg_db: str, faulty_host: Any, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(INSTANT)
    storage, tracking = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{pg_db}", f"sqlite:///{tmp_path / 'm.db'}"
    code, text = _search(["--plugin", pf.NAME, "search", "space.yaml", "--name", "mask", "--storage", storage, "--tracking-uri", tracking,
                          "--no-baseline", "--no-register"], capsys, caplog)
    assert code == 0, text[-2000:]
    assert SECRET not in text and f"postgres:***@127.0.0.1:5432/{pg_db}" in text  # printed, masked
    study = optuna.load_study(study_name="mask", storage=open_storage(storage))
    assert SECRET not in json.dumps(study.user_attrs, default=str)
    client = MlflowClient(tracking_uri=tracking)
    for run in client.search_runs([client.get_experiment_by_name("mask").experiment_id]):
        recorded = json.dumps([run.data.params, run.data.tags], default=str)
        assert SECRET not in recorded
    # an unreachable server: the one-line error names the URL, masked
    code, text = _search(["--plugin", pf.NAME, "search", "space.yaml", "--storage", f"postgresql://postgres:{SECRET}@127.0.0.1:1/x", "--quiet"],
                         capsys, caplog)
    assert code == 2 and "postgres:***@127.0.0.1:1" in text, text[-2000:]
    assert SECRET not in text, text[text.index(SECRET) - 300:][:600]


def test_credentials_in_the_tracking_uri_never_show(tmp_path: Path, faulty_host: Any, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(INSTANT)
    for var, value in HTTP_DEFAULTS.items():  # what an http Tracker sets in this process: undone after the test
        monkeypatch.setenv(var, value)
    with socket.socket() as s:  # a port nobody listens on: the tracking server is down from the start
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, text = _search(["--plugin", pf.NAME, "search", "space.yaml", "--name", "mask2", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                          "--tracking-uri", f"http://admin:{SECRET}@127.0.0.1:{port}", "--no-baseline", "--no-register"], capsys, caplog)
    assert code == 0, text[-2000:]
    assert SECRET not in text and f"admin:***@127.0.0.1:{port}" in text
