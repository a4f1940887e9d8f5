"""One trial's life on each backend, phase by phase, in wall-clock milliseconds (issue #17).

* Optuna backend: a real ``run_search`` (SQLite study, MLflow records on, the seed workload of the
  overhead section) with a timer around each phase's function: the exclusive time of each (a
  phase's time excludes the phases it calls), per thread, so the MLflow writer thread's records
  are counted apart from the work loop. What no timer claims inside the loop is ``other``.
* Ray backend: the search's trace (``SEARCHCORE_RAY_TRACE``: timestamped events from the driver and
  every worker), cut into actor start, dataset and runner, training, result reporting, checkpoint,
  record and Tune's turnaround between two trials of one worker.

Timers cost about a microsecond a call; cProfile, which the other sections use for CPU shares,
would inflate every Python-heavy phase several times. Run it on its own::

    python -m benchmarks.profile_trial --backend optuna|ray --trials N --epochs E --out FILE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import load_plugin, write_json

BACKENDS = ("optuna", "ray")


class Spans:
    """Exclusive wall and CPU time per phase label, per thread (nested phases subtract from their caller)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.threads: dict[str, set[str]] = defaultdict(set)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any]] = []

    @contextlib.contextmanager
    def span(self, label: str) -> Iterator[None]:
        stack = self._local.__dict__.setdefault("stack", [])
        if any(frame[0] == label for frame in stack):  # re-entered: the outer call counts it
            yield
            return
        frame = [label, time.perf_counter(), time.thread_time(), 0.0, 0.0]  # label, t0, cpu0, children wall, children cpu
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            wall, cpu = time.perf_counter() - frame[1], time.thread_time() - frame[2]
            if stack:
                stack[-1][3] += wall
                stack[-1][4] += cpu
            with self._lock:
                self.wall[label] += wall - frame[3]
                self.cpu[label] += cpu - frame[4]
                self.calls[label] += 1
                self.threads[label].add(threading.current_thread().name)

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Time every call of ``owner.attr`` (a function, method or context-manager factory) as ``label``."""
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        spans = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            with spans.span(label):
                return func(*args, **kwargs)

        timed.__wrapped__ = func  # type: ignore[attr-defined]
        setattr(owner, attr, type(original)(timed) if isinstance(original, (staticmethod, classmethod)) else timed)
        self._undo.append((owner, attr, original))

    def wrap_cm(self, owner: Any, attr: str, label: str) -> None:
        """Time the body's entry and exit of a context manager ``owner.attr(...)`` (not what runs inside it)."""
        original = getattr(owner, attr)
        spans = self

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with spans.span(label):
                cm = original(*args, **kwargs)
                value = cm.__enter__()
            try:
                yield value
            finally:
                with spans.span(label):
                    cm.__exit__(*sys.exc_info())

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


# (label, where, attribute, kind) in the order the table shows them; kind "cm": a context manager
OPTUNA_PHASES: list[tuple[str, str, str, str]] = [
    ("study: read search attributes (stopped?)", "searchcore.engine.backends.batching:BatchedStorage", "get_study_user_attrs", "f"),
    ("budget lock", "searchcore.engine.backends.optuna", "budget_lock", "cm"),
    ("recovery check + budget count", "searchcore.engine.backends.optuna", "recover_interrupted", "f"),
    ("recovery check + budget count", "searchcore.engine.backends.optuna", "counted", "f"),
    ("study reads (get_trials: budget count, recovery, sampler, pruner)", "optuna.study.study:Study", "get_trials", "f"),
    ("ask (sampler, new trial row)", "optuna.study.study:Study", "ask", "f"),
    ("trial attributes (host, pid, heartbeat)", "optuna.trial._trial:Trial", "set_user_attr", "f"),
    ("spec build (sampling the space)", "searchcore.space.dimensions:SearchSpace", "to_spec", "f"),
    ("study writes (batched flushes)", "searchcore.engine.backends.batching:BatchedStorage", "flush", "f"),
    ("heartbeat (the worker's beat on/off the trial)", "searchcore.engine.backends.optuna:_Heartbeat", "beating", "cm"),
    ("model build", "searchcore.arch.build", "build", "f"),
    ("training (the work)", "searchcore.train.fit", "train_model", "f"),
    ("report + prune decision", "optuna.trial._trial:Trial", "report", "f"),
    ("report + prune decision", "optuna.trial._trial:Trial", "should_prune", "f"),
    ("objectives + metrics", "searchcore.engine.runner:TrialRunner", "evaluate", "f"),
    ("gc after the trial", "searchcore.engine.runner", "release_memory", "f"),
    ("tell (spec + metrics attributes, state)", "searchcore.engine.backends.optuna", "tell", "f"),
    ("MLflow record: queue", "searchcore.track.tracking:Tracker", "log_trial", "f"),
    ("fail-fast check", "searchcore.engine.backends.optuna", "_fail_fast", "f"),
    ("work loop, other", "searchcore.engine.backends.optuna", "work", "f"),
    ("MLflow record: write (writer thread)", "searchcore.track.tracking:Tracker", "write_trial", "f"),
    ("search set-up (space, data, study, parent run)", "searchcore.engine.runner", "prepare", "f"),
    ("search set-up (space, data, study, parent run)", "searchcore.engine.backends.optuna", "create_or_load", "f"),
    ("search set-up (space, data, study, parent run)", "searchcore.engine.backends.optuna_search", "_parent_run", "f"),
    ("search end (results, MLflow view, records flushed)", "searchcore.engine.backends.optuna_search", "finish_search", "f"),
]
WORK = ("model build", "training (the work)")  # what the bare loop does too
ONE_TIME = ("search set-up (space, data, study, parent run)", "search end (results, MLflow view, records flushed)")
BACKGROUND = ("MLflow record: write (writer thread)",)


def _owner(where: str) -> Any:
    import importlib

    module, _, cls = where.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, cls) if cls else mod


def profile_optuna(trials: int, epochs: int, workdir: Path) -> dict[str, Any]:
    from benchmarks.overhead import stack_searchcore

    spans = Spans()
    for label, where, attr, kind in OPTUNA_PHASES:
        (spans.wrap_cm if kind == "cm" else spans.wrap)(_owner(where), attr, label)
    try:
        t0 = time.perf_counter()
        out = stack_searchcore(_params(trials), epochs, workdir, 1, "optuna", False)
        wall = time.perf_counter() - t0
    finally:
        spans.restore()
    rows = [{"phase": label, "ms_per_trial": 1000 * spans.wall[label] / trials, "cpu_ms_per_trial": 1000 * spans.cpu[label] / trials,
             "calls_per_trial": spans.calls[label] / trials, "kind": _kind(label)}
            for label in dict.fromkeys(p[0] for p in OPTUNA_PHASES) if spans.calls[label]]
    return {"backend": "optuna", "trials": trials, "epochs": epochs, "wall": wall, "accuracy": out.get("accuracy"), "rows": rows}


def _kind(label: str) -> str:
    return "work" if label in WORK else "one-time" if label in ONE_TIME else "background" if label in BACKGROUND else "per trial"


def _params(trials: int) -> list[dict[str, Any]]:
    from benchmarks.overhead import fixed_params

    params = fixed_params("seed", trials)
    replay = Path(os.environ.get("SEARCHCORE_BENCH_REPLAY", ""))
    if not replay.is_file():  # run on its own: the replay sampler reads the params from this file
        replay = Path.cwd() / "replay.json"
        replay.write_text(json.dumps(params))
        os.environ["SEARCHCORE_BENCH_REPLAY"] = str(replay)
    return params


# --- Ray: phases from the trace ----------------------------------------------------------------------

RAY_PHASES = (
    ("actor start (process, imports) to its first trial", "one-time"),
    ("dataset + runner (space, plugins, tracker)", "one-time"),
    ("training (the work)", "work"),
    ("result reporting (tune.report per epoch)", "per trial"),
    ("checkpoint (per epoch report)", "per trial"),
    ("record queued + final result", "per trial"),
    ("Tune turnaround between trials of one worker", "per trial"),
)


def profile_ray(trials: int, epochs: int, workdir: Path) -> dict[str, Any]:
    from benchmarks.overhead import ray_head, stack_searchcore
    from searchcore.engine.backends.ray_trial import TRACE_ENV

    trace = workdir / "trace.jsonl"
    os.environ[TRACE_ENV] = str(trace)
    try:
        with ray_head(num_cpus=2) as (address, _):
            t0 = time.perf_counter()
            out = stack_searchcore(_params(trials), epochs, workdir, 2, "ray", False, address=address)
            wall = time.perf_counter() - t0
    finally:
        os.environ.pop(TRACE_ENV, None)
    phases = ray_trial_phases(trace)
    rows = [{"phase": label, "ms_per_trial": 1000 * phases.get(label, 0.0) / trials, "kind": kind} for label, kind in RAY_PHASES]
    return {"backend": "ray", "trials": trials, "epochs": epochs, "wall": wall, "accuracy": out.get("accuracy"), "rows": rows,
            "steady": phases.get("steady")}


def ray_trial_phases(trace: Path) -> dict[str, Any]:
    """Seconds summed over all trials of all workers, per phase, from the workers' trace events."""
    rows = sorted((json.loads(line) for line in trace.read_text().splitlines() if line.strip()), key=lambda r: r["t"])
    driver = next((r["pid"] for r in rows if r["event"] == "search start"), None)
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["pid"] != driver:
            by_pid[r["pid"]].append(r)
    total: dict[str, float] = defaultdict(float)

    def add(label: str, seconds: float) -> None:
        total[label] += max(0.0, seconds)

    for events in by_pid.values():
        created = next((r.get("at") for r in events if r["event"] == "worker process created"), None)
        ready = next((r["t"] for r in events if r["event"] == "runner ready"), None)
        first = next((r["t"] for r in events if r["event"] == "trial start"), None)
        if created and first:
            add("actor start (process, imports) to its first trial", first - created)
        if first and ready:
            add("dataset + runner (space, plugins, tracker)", ready - first)
        last_end = None
        mark = None  # when the current stretch of training began
        for r in events:
            ev = r["event"]
            if ev == "trial start":
                if last_end is not None:
                    add("Tune turnaround between trials of one worker", r["t"] - last_end)
            elif ev == "runner ready":
                mark = r["t"]
            elif ev == "report":
                if mark is not None:
                    add("training (the work)", r["t"] - mark)
                mark = r["t"]
            elif ev == "checkpoint made":
                add("checkpoint (per epoch report)", r["t"] - mark)
                mark = r["t"]
            elif ev == "reported":
                add("result reporting (tune.report per epoch)", r["t"] - mark)
                mark = r["t"]
            elif ev == "trained":
                if mark is not None:
                    add("training (the work)", r["t"] - mark)
                mark = r["t"]
            elif ev in ("record queued", "final reported"):
                if mark is not None:
                    add("record queued + final result", r["t"] - mark)
                mark = r["t"]
            elif ev == "trial end":
                last_end, mark = r["t"], None
    return dict(total)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows for RESULTS.md: phase, ms per trial, kind; the overhead per trial (all but the work) last."""
    rows = [[r["phase"], f"{r['ms_per_trial']:.1f}", r["kind"]] for r in result["rows"]]
    per_trial = sum(r["ms_per_trial"] for r in result["rows"] if r["kind"] == "per trial")
    rows.append(["**searchcore's cost per trial** (per-trial phases)", f"**{per_trial:.1f}**", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_trial", description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    load_plugin()
    run: Callable[..., dict[str, Any]] = profile_optuna if a.backend == "optuna" else profile_ray
    result = run(a.trials, a.epochs, Path.cwd())
    write_json(Path(a.out), result)
    for row in table_rows(result):
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
