"""The Ray backend on real Ray: a private local Ray, a two-node cluster started with ``ray start``
(GPUs declared on CPU-only nodes stand in for real ones), and an interrupted experiment resumed.
Every search trains for real on digits and writes real MLflow records, checked by tests/layout.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from layout import check_layout
from mlflow.tracking import MlflowClient

from searchcore.cli import main
from searchcore.engine.backends.ray import free_port

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_the_same_search_writes_the_same_records_under_both_backends(workdir: Path, small_space: Path, backend: str) -> None:
    args = ["search", str(small_space), "--trials", "4", "--epochs", "2", "--name", "both", "--no-register", "--no-baseline", "-q",
            "--backend", backend]
    if backend == "ray":  # two trials side by side on this machine's 2 cores, one core (and torch thread) each
        args += ["--max-concurrent", "2", "--cpus-per-trial", "1"]
    assert main(args) == 0
    layout = check_layout(f"sqlite:///{workdir / 'mlflow.db'}", "both", 4)
    if backend == "optuna":
        return
    assert set(layout.tag("searchcore.backend").values()) == {"ray"}
    assert (layout.parent.data.params["sampler"], layout.parent.data.params["scheduler"]) == ("NoRepeat(TPESampler)", "asha")
    # measured inside each trial, during its training
    assert set(layout.tag("searchcore.torch_threads").values()) == {"1"}
    # no GPU asked for: the trial sees none and trains on the CPU
    assert set(layout.tag("searchcore.gpu_ids").values()) == {""}
    assert set(layout.tag("searchcore.cuda_visible_devices").values()) == {""}
    assert set(layout.tag("searchcore.device").values()) == {"cpu"}
    # workers live on across trials: fewer worker processes than trials
    pids = layout.tag("searchcore.worker_pid")
    assert len(set(pids.values())) < len(pids), pids
    assert (workdir / "ray_results" / "both").is_dir()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--backend", "ray", "--workers", "2"], "--workers is for --backend optuna"),
    (["--backend", "ray", "--pruner", "median"], "--pruner is for --backend optuna"),
    (["--backend", "ray", "--address", "nohost"], "--address: expected auto or HOST:PORT"),
    (["--address", "auto"], "--address is for --backend ray"),
    (["--scheduler", "asha"], "--scheduler is for --backend ray"),
    (["--backend", "ray", "--gpus-per-trial", "1.5"], "--gpus-per-trial: a fraction shares one GPU"),
    (["--backend", "ray", "--resume", "--name", "never-ran"], "--resume: no Ray experiment 'never-ran'"),
    (["--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial"),
])
def test_bad_ray_settings_are_one_line_usage_errors(workdir: Path, small_space: Path, capsys: pytest.CaptureFixture,
                                                    extra: list[str], needle: str) -> None:
    try:
        code = main(["search", str(small_space), "--trials", "2", "--epochs", "1", *extra])
    except SystemExit as e:  # argparse's own checks exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("searchcore: error:")]  # (a library's log line may follow)
    assert len(errors) == 1 and needle in errors[0], err


def _ray_processes(marker: str) -> set[int]:
    """Our cluster's processes: those naming its temp dir, and everything they started."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        procs[int(entry.name)] = (ppid, cmd)
    ours = {pid for pid, (_, cmd) in procs.items() if marker in cmd}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in ours} - ours
        grew = bool(more)
        ours |= more
    return ours - {os.getpid()}


def _stop_cluster(marker: str) -> None:
    """Stop only this test's Ray processes, by pid (``ray stop`` would stop every Ray on the machine)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        pids = _ray_processes(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while time.time() < deadline and _ray_processes(marker):
            time.sleep(0.5)


_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], configure_logging=False, logging_level="ERROR")
want, deadline = json.loads(sys.argv[2]), time.monotonic() + 120
while True:
    have = sorted(({k: n["Resources"].get(k, 0.0) for k in ("CPU", "GPU")} for n in ray.nodes() if n["Alive"]), key=json.dumps)
    if have == want or time.monotonic() > deadline:
        print(json.dumps(have)); break
    time.sleep(0.5)
"""


def _wait_for_nodes(address: str, env: dict[str, str], want: list[dict[str, float]]) -> None:
    """The cluster as the test declared it (every node joined, with its CPUs and GPUs), before a search uses it."""
    want = sorted(want, key=json.dumps)
    done = subprocess.run([sys.executable, "-c", _NODES, address, json.dumps(want)], env=env, capture_output=True, text=True, timeout=180)
    have = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else done.stderr[-2000:]
    assert have == want, f"the test cluster never reached its shape: {have}"


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A head node (2 CPUs, 1 declared GPU) on a free port and a second node (1 CPU, 1 GPU) joining it."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    temp = f"/tmp/rsc{uuid.uuid4().hex[:8]}"  # short: Ray puts unix sockets under it
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-gpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                        "--temp-dir", temp, *common], env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", "--address", address, "--num-cpus", "1", *common], env=env, check=True, capture_output=True, timeout=180)
        _wait_for_nodes(address, env, [{"CPU": 2.0, "GPU": 1.0}, {"CPU": 1.0, "GPU": 1.0}])
        yield address, env
    finally:
        _stop_cluster(temp)
        subprocess.run(["rm", "-rf", temp], check=False)


@pytest.mark.slow
def test_a_search_on_a_two_node_cluster_places_trials_and_gpus(tmp_path: Path, small_space: Path,
                                                                 two_node_cluster: tuple[str, dict[str, str]]) -> None:
    address, env = two_node_cluster
    cmd = [sys.executable, "-m", "searchcore.cli", "search", str(small_space), "--backend", "ray", "--address", address,
           "--trials", "4", "--epochs", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0.5", "--max-concurrent", "3",
           "--sampler", "random", "--scheduler", "hyperband", "--name", "cluster", "--no-register", "--no-baseline", "-q"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    layout = check_layout(f"sqlite:///{tmp_path / 'mlflow.db'}", "cluster", 4)
    assert (layout.parent.data.params["sampler"], layout.parent.data.params["scheduler"]) == ("RandomSampler", "hyperband")
    nodes = layout.tag("searchcore.node_id")
    assert len(set(nodes.values())) == 2, f"trials ran on both nodes: {nodes}"
    # each trial saw exactly the GPU Ray gave it (each node declares one, id 0), and without CUDA here trained on the CPU
    assert set(layout.tag("searchcore.gpu_ids").values()) == {"0"}
    assert set(layout.tag("searchcore.cuda_visible_devices").values()) == {"0"}
    assert set(layout.tag("searchcore.device").values()) == {"cpu"}
    # half a GPU each: the head node (2 CPUs, 1 GPU) ran two workers on its one GPU
    pids = layout.tag("searchcore.worker_pid")
    per_node: dict[str, set[str]] = {}
    for number, node in nodes.items():
        per_node.setdefault(node, set()).add(pids[number])
    assert max(len(p) for p in per_node.values()) >= 2, per_node


@pytest.mark.parametrize(("flag", "value", "missing"), [("--gpus-per-trial", "64", "GPU"), ("--cpus-per-trial", "1024", "CPU")])
def test_trials_no_node_can_hold_fail_in_seconds_with_what_is_missing(workdir: Path, small_space: Path, capsys: pytest.CaptureFixture,
                                                                      flag: str, value: str, missing: str) -> None:
    code = main(["search", str(small_space), "--backend", "ray", "--trials", "2", "--epochs", "1", "--name", "nowhere",
                 "--no-register", "--no-baseline", "-q", flag, value])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("searchcore: error: no node of the Ray cluster can place a trial"), err[-2000:]
    assert f"(missing: {missing})" in last and re.search(r": \S+ has \d+ CPU, \d+ GPU;", last), last
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("nowhere")
    assert [r.info.status for r in client.search_runs([exp.experiment_id])] == ["FAILED"]  # the parent run, closed


def test_placement_problem_names_what_one_node_lacks() -> None:
    from searchcore.engine.backends.ray_resources import check_placement, placement_problem

    head, small = ("10.0.0.1", {"CPU": 2.0, "GPU": 1.0}), ("10.0.0.2", {"CPU": 1.0})
    assert placement_problem([head, small], 1, 0.5) is None
    assert placement_problem([head, small], 2, 1) is None
    problem = placement_problem([head, small], 3, 0)
    assert problem is not None and "(missing: CPU)" in problem and "10.0.0.2 has 1 CPU, 0 GPU" in problem
    # each resource exists somewhere, but no one node has both: still unplaceable
    problem = placement_problem([("a", {"CPU": 4.0}), ("b", {"CPU": 1.0, "GPU": 1.0})], 2, 1)
    assert problem is not None and "missing: CPU and GPU together" in problem
    assert "no live node" in (placement_problem([], 1, 0) or "")
    # a node that joins while the search waits is taken
    seen = iter([[small], [small, head]])
    check_placement(2, 1, wait_s=5, nodes=lambda: next(seen), sleep=lambda s: None)


def _trial_runs(tracking: str, name: str) -> int:
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return 0
    return len(client.search_runs([exp.experiment_id], "tags.`searchcore.kind` = 'trial'", max_results=100))


@pytest.mark.slow
def test_an_interrupted_ray_search_resumes_with_its_searcher_state(tmp_path: Path, small_space: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "searchcore.cli", "search", str(small_space), "--backend", "ray", "--trials", "8", "--epochs", "2",
           "--max-concurrent", "1", "--name", "again", "--no-register", "--no-baseline", "-q"]
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while first.poll() is None and _trial_runs(tracking, "again") < 2:
            time.sleep(0.2)  # trials take a fraction of a second once the worker is warm
        assert first.poll() is None, "the search ended before it could be interrupted"
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err[-3000:]
    assert "--resume" in err
    assert 2 <= _trial_runs(tracking, "again") < 8

    again = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert again.returncode == 0, again.stderr[-3000:]
    layout = check_layout(tracking, "again", 8)
    assert sorted(layout.children) == list(range(8))
    assert layout.parent.info.status == "FINISHED"
    # the searcher went on from its saved state: no architecture proposed twice
    params = [tuple(sorted(r.data.params.items())) for r in layout.children.values()]
    assert len(set(params)) == len(params)


@pytest.mark.slow
def test_a_search_without_a_scheduler_batches_its_epoch_results_and_checkpoints_nothing(workdir: Path, small_space: Path,
                                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    trace = workdir / "trace.jsonl"
    monkeypatch.setenv("SEARCHCORE_RAY_TRACE", str(trace))  # the private cluster's workers inherit it
    args = ["search", str(small_space), "--trials", "4", "--epochs", "3", "--name", "fifo", "--no-register", "--no-baseline", "-q",
            "--backend", "ray", "--scheduler", "none", "--max-concurrent", "2", "--cpus-per-trial", "1"]
    assert main(args) == 0
    layout = check_layout(f"sqlite:///{workdir / 'mlflow.db'}", "fifo", 4)  # every epoch of every trial recorded
    assert layout.parent.data.params["scheduler"] == "none"
    experiment = workdir / "ray_results" / "fifo"
    assert not list(experiment.glob("trial_*/checkpoint_*")), "no scheduler acts on epochs: nothing to checkpoint them for"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    workers = {e["pid"] for e in events if e["event"] == "trial start"}
    assert len(workers) < 4, "workers live on across trials"
    assert sum(e["event"] == "reported" for e in events) == 4 * 2  # epochs 1..E-1 as they end; the last with the objectives


def test_shipped_data_is_the_drivers_small_cpu_splits_only() -> None:
    import torch

    from searchcore.engine.backends.ray_trial import shippable_splits
    from searchcore.train.data import Splits

    def splits(n: int) -> Splits:
        x, y = torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)
        return Splits(x, y, x, y, x, y, classes=2, name="zeros")

    small = splits(10)
    assert shippable_splits(small) is small
    assert shippable_splits(splits(400_000)) is None  # 3 x 102 MB: each worker loads it itself
    assert shippable_splits(None) is None
    assert shippable_splits({"train_x": small.train_x}) is None  # a plugin's own kind of data: loaded where it runs


def test_a_restarted_trials_epochs_count_once_in_the_drivers_history() -> None:
    import pandas as pd

    from searchcore.engine.backends.ray import _ray_trial

    class Result:  # what Tune gives for a trial that restarted without a checkpoint and reported epochs 1-2 again
        path = "/x/trial_00003"
        error = None
        config = {"a": 1}
        metrics = {"val_accuracy": 0.5, "searchcore_state": "COMPLETE", "timestamp": 100.0, "time_total_s": 4.0}
        metrics_dataframe = pd.DataFrame({"epoch": [1, 2, 1, 2, 3], "val_accuracy": [0.1, 0.2, 0.3, 0.4, 0.5]})

    trial = _ray_trial(Result())
    assert trial is not None and trial.number == 3 and trial.state == "COMPLETE"
    assert [(h["epoch"], h["val_accuracy"]) for h in trial.history] == [(1, 0.3), (2, 0.4), (3, 0.5)]
