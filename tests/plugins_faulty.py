"""Throwaway faulty plugins for the reliability tests: every fault a real search meets, on demand.

Why it exists: the reliability guarantees (a plugin bug fails one trial, NaN prunes, an
out-of-memory error frees the model, a killed process loses nothing) are only proven by
injecting those faults into real searches. Load it with ``--plugin plugins_faulty`` (or
``SEARCHCORE_PLUGINS=plugins_faulty``) and ``PYTHONPATH`` pointing at ``tests/``.

Space-file options (``plugins: {plugins_faulty: {...}}``):

``triggers``
    the choices of the dimension ``plugins_faulty.trigger``. A trial's value picks its fault:
    ``ok`` (none), ``transform`` (the transformation raises), ``build`` (the block's factory
    raises), ``forward`` (the block raises in a training forward pass), ``nan`` (the block
    makes the loss NaN), ``oom`` (the block raises ``torch.cuda.OutOfMemoryError``, on CPU
    too), ``hang`` (the block waits while the gate file exists), ``spawn`` (the block starts
    a sleeping grandchild process, for process-group tests), ``leak`` (the block keeps itself
    alive in a module-level list: a leaked model).
``ballast``
    floats of a parameter every fault block carries, so a leaked model is big enough to see
    in the process's RSS.

Environment: ``SEARCHCORE_FAULTY_GATE`` (hang gate file; a number N in it lets this process's first N
trained models pass first, so a test can hold a chosen trial whatever the speed of the machine), ``SEARCHCORE_FAULTY_PIDS`` (file the
``hang``/``spawn`` blocks append ``"<pid> <grandchild pid>"`` to), ``SEARCHCORE_FAULTY_RSS``
(file each transformation appends the process's RSS in bytes to), ``SEARCHCORE_FAULTY_OFF``
(set: every fault is disarmed, as after a bug fix).

Also registered: sampler ``faulty-random`` (a random sampler that raises while sampling in
every odd-numbered trial) and evaluator ``instant`` (scores a spec
without training, for fast input-fuzzing searches).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from searchcore import hookimpl
from searchcore.arch.improve import copy_spec
from searchcore.space import Dimension

NAME = "plugins_faulty"
TRIGGER = f"{NAME}.trigger"
BLOCK = f"{NAME}.fault"
MODES = ("ok", "transform", "build", "forward", "nan", "oom", "hang", "spawn", "leak")

LIVE: weakref.WeakSet = weakref.WeakSet()  # every FaultModule not yet garbage: a model still alive
LEAKED: list[nn.Module] = []  # what the ``leak`` mode keeps alive on purpose
LIVE_AT_TRANSFORM: list[int] = []  # len(LIVE) seen at the start of each trial (after a collection)
_spawned: list[subprocess.Popen] = []


def _armed() -> bool:
    return not os.environ.get("SEARCHCORE_FAULTY_OFF")


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"triggers": ["ok", "transform"], "ballast": 0}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    for t in options["triggers"]:
        if t not in MODES:
            raise ValueError(f"unknown trigger {t!r}; allowed: {', '.join(MODES)}")
    return [Dimension.categorical(TRIGGER, options["triggers"], off=options["triggers"][0], help="which fault this trial meets")]


@hookimpl
def searchcore_transform(spec: dict, params: dict, options: dict) -> dict:
    gc.collect()
    LIVE_AT_TRANSFORM.append(len(LIVE))
    rss_file = os.environ.get("SEARCHCORE_FAULTY_RSS")
    if rss_file:
        with open(rss_file, "a") as f:
            f.write(f"{_rss()}\n")
    mode = params.get(TRIGGER, "ok") if _armed() else "ok"
    if mode == "transform":
        raise ValueError("faulty transform: boom")
    if mode == "ok" and not options["ballast"]:
        return spec
    spec = copy_spec(spec)
    spec["stages"][0]["attention"].append({"type": BLOCK, "mode": mode, "ballast": int(options["ballast"])})
    return spec


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class FaultModule(nn.Module):
    """Identity in eval mode (the build's dry run); the fault in a training forward pass."""

    def __init__(self, mode: str, ballast: int) -> None:
        super().__init__()
        self.mode = mode
        self.ballast = nn.Parameter(torch.zeros(max(1, ballast)))
        LIVE.add(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.ballast[0] * 0.0
        if not self.training or not _armed():
            return y
        if self.mode == "forward":
            raise RuntimeError("faulty block: forward failed")
        if self.mode == "nan":
            return y * float("nan")
        if self.mode == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by plugins_faulty)")
        if self.mode == "leak" and self not in LEAKED:
            LEAKED.append(self)
        if self.mode in ("hang", "spawn"):
            _spawn_grandchild()
        if self.mode == "hang":
            _hang(self)
        return y


def _spawn_grandchild() -> None:
    """Once per process: a sleeping child process, to show that a whole process group is killed."""
    path = os.environ.get("SEARCHCORE_FAULTY_PIDS")
    if not path or _spawned:
        return
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    _spawned.append(child)
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {child.pid}\n")


_PASSED_GATE: list[int] = []  # one entry per model that trained past an armed gate in this process


def _hang(module: nn.Module) -> None:
    """Wait while the gate file exists, after saying so in ``<gate>.hanging`` (the test waits for it).
    A number N in the gate lets the first N models of this process train through, so the held trial
    is chosen by count, not by how fast the machine reaches it."""
    gate = os.environ.get("SEARCHCORE_FAULTY_GATE")
    if not gate or not os.path.exists(gate):
        return
    try:
        let_through = int(Path(gate).read_text().strip() or 0)
    except (OSError, ValueError):
        let_through = 0
    if not getattr(module, "_counted", False):
        module._counted = True
        _PASSED_GATE.append(1)
    if len(_PASSED_GATE) <= let_through:
        return
    with open(f"{gate}.hanging", "w") as f:
        f.write(str(os.getpid()))
    while os.path.exists(gate):
        time.sleep(0.05)


def fault_block(in_ch: int, o: dict, ctx: Any) -> tuple[nn.Module, int]:
    if o.get("mode") == "build" and _armed():
        raise RuntimeError("faulty block: build failed")
    return FaultModule(str(o.get("mode", "ok")), int(o.get("ballast", 0))), in_ch


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(BLOCK, fault_block)


class FaultyRandomSampler(optuna.samplers.RandomSampler):
    """A random sampler with a bug: in odd-numbered trials, sampling any dimension raises."""

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        if trial.number % 2 == 1 and _armed():
            raise RuntimeError("faulty sampler: boom")
        return super().sample_independent(study, trial, param_name, param_distribution)


def _faulty_random(seed: int, multi_objective: bool) -> Any:
    return FaultyRandomSampler(seed=seed)


@hookimpl
def searchcore_samplers(register: Callable[..., None]) -> None:
    register("faulty-random", _faulty_random)


def instant(spec: dict, config: Any, report: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
    """A score from the spec's hash: no training, so a search over it costs only its bookkeeping."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).digest()
    value = int.from_bytes(digest[:4], "big") / 2**32
    report(1, {"val_accuracy": value})
    return {"val_accuracy": value, "params": 1.0, "macs": 1.0, "latency_ms": 1.0}


@hookimpl
def searchcore_evaluators(register: Callable[..., None]) -> None:
    register("instant", instant)


# --- helpers for the tests that load this plugin ----------------------------------------------

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def space_yaml(triggers: list[str], trials: int, epochs: int = 1, ballast: int = 0, sampler: str = "random",
               pruner: str = "none", seed: int = 0, extra: str = "", val: float = 0.3, test: float = 0.2) -> str:
    """A small, fast space: the seed CNN at 8 and 16 channels on a slice of digits, two kernel sizes,
    and this plugin's trigger dimension. ``val``/``test``: the digits fractions (the rest trains)."""
    return (
        f"dataset: {{name: digits, val_fraction: {val}, test_fraction: {test}}}\n"
        "backbone: {name: seed-cnn, options: {channels: [8, 16]}}\n"
        "plugins:\n"
        "  kernel: {choices: [3, 5]}\n"
        f"  {NAME}: {{triggers: {json.dumps(triggers)}, ballast: {ballast}}}\n"
        f"budget: {{trials: {trials}, epochs: {epochs}}}\n"
        f"search: {{sampler: {sampler}, pruner: {pruner}, seed: {seed}}}\n"
        "train: {batch_size: 128}\n" + extra
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``searchcore --plugin plugins_faulty`` subprocess: this folder importable,
    no plugin settings inherited from the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEARCHCORE_", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def searchcore_cmd(*args: str) -> list[str]:
    """The real command line, as a user runs it."""
    return [sys.executable, "-m", "searchcore.cli", "--plugin", NAME, *args]


def trial_runs(tracking_uri: str, study: str) -> dict[int, list[Any]]:
    """MLflow trial runs of ``study`` by trial number (a list, so duplicates show)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return {}
    runs: dict[int, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], "tags.`searchcore.kind` = 'trial'", max_results=1000, page_token=token)
        for r in page:
            runs.setdefault(int(r.data.tags["searchcore.trial"]), []).append(r)
        token = page.token
        if not token:
            return runs
