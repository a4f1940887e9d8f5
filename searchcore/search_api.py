"""``searchcore.search(...)``: the whole local search from Python, as the CLI runs it.

The flow is one way: space file -> plugins -> search space -> Optuna study (sampler,
pruner, storage) -> workers (ask, build, train, tell) -> MLflow records -> the best
architectures retrained, tested and registered.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchcore.backends.storage import check_url, default_storage
from searchcore.errors import UsageError
from searchcore.tracking import DEFAULT_TRACKING, Tracker, absolute_uri, mask_url

ATTR_CONFIG = "searchcore_config"
ATTR_SPACE = "searchcore_space"
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_TRACKING = "mlflow_tracking_uri"


@dataclass
class Architecture:
    """One of the best architectures a search found."""

    trial: int
    spec: dict
    params: dict[str, Any]
    values: list[float]
    metrics: dict[str, float]
    test_accuracy: float | None = None
    model_uri: str | None = None

    @property
    def one_line(self) -> str:
        from searchcore.spec import encode

        return encode(self.spec)


@dataclass
class SearchResult:
    """What a search returns; everything in it is also in the study storage and in MLflow."""

    name: str
    storage: str
    tracking_uri: str
    parent_run_id: str | None
    objectives: list[str]
    directions: list[str]
    best: list[Architecture] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    baseline_test_accuracy: float | None = None
    seconds: float = 0.0
    stopped_reason: str = ""


@dataclass
class Settings:
    """Command-line overrides of the space file's values (None: keep the file's)."""

    trials: int | None = None
    epochs: int | None = None
    timeout: float | None = None
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    workers: int = 1
    storage: str | None = None
    tracking_uri: str | None = None
    name: str | None = None
    register: bool = True
    baseline: bool = True
    progress: bool = True
    threads: int | None = None
    fail_fast: int = 5
    top: int = 5
    isolate: bool = False
    deterministic: bool = False
    # Ray backend (--backend ray); None keeps its default, and each is refused with --backend optuna.
    backend: str = "optuna"
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int | None = None
    scheduler: str | None = None
    resume: bool = False
    ray_storage: str | None = None
    plots: bool = True  # plots, credit, diagram and Grad-CAM on the parent run at the end (searchcore.report.hook)


def apply_settings(cfg: Any, s: Settings) -> Any:
    for key in ("trials", "epochs", "timeout", "sampler", "pruner", "seed"):
        value = getattr(s, key)
        if value is not None:
            setattr(cfg, key, value)
    return cfg


_NAME = re.compile(r"\w([\w.\- ]{0,98}[\w.\-])?")


def check_name(name: str, source: str) -> str:
    """A search name is an Optuna study, an MLflow experiment, a registered model and a value in
    MLflow filter strings: letters, digits, '_', '.', '-' and inner spaces, so none of them breaks."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{source}: {name!r} is not a valid search name; use up to 100 letters, digits, '_', '.', '-' or inner spaces")
    return name


def search(space: str | Path | None = None, **kwargs: Any) -> SearchResult:
    """Run (or resume) a search. Keyword arguments are :class:`Settings` fields."""
    unknown = set(kwargs) - set(Settings.__dataclass_fields__)
    if unknown:
        raise UsageError(f"search(): unknown argument {sorted(unknown)[0]!r}; allowed: {', '.join(Settings.__dataclass_fields__)}")
    return run_search(space, Settings(**kwargs))


def prepare(cfg: Any, host: Any, threads: int | None) -> Any:
    """Data, space and runner: what a worker keeps alive across trials."""
    from searchcore.cli import dataset_shape, load_splits
    from searchcore.config import resolve
    from searchcore.runner import TrialRunner

    splits = load_splits(cfg, host) if cfg.dataset is not None else None
    shape, classes = (cfg.input or splits.input_shape, cfg.classes or splits.classes) if splits is not None else dataset_shape(cfg, host)
    space = resolve(cfg, host, shape, classes)
    return TrialRunner(cfg, host, space, splits, threads=threads)


def run_search(space_file: str | Path | None, s: Settings) -> SearchResult:
    from searchcore.backends import ray_backend
    from searchcore.cli import _quiet_libraries
    from searchcore.config import load_space

    ray_backend.validate_settings(s)  # imports no Ray; refuses the other backend's flags
    if s.backend == "ray":
        return ray_backend.run_ray_search(space_file, s)
    _quiet_libraries()
    t0 = time.time()
    cfg = apply_settings(load_space(space_file), s)
    if s.deterministic:  # carried in the train config, so workers and isolated trials train the same way
        cfg.train = {**cfg.train, "deterministic": True}
    if s.workers < 1:
        raise UsageError(f"--workers: expected a positive integer, got {s.workers}")
    name = check_name(s.name or cfg.name or "searchcore", "--name" if s.name else f"{cfg.source}: name")
    cfg.name = name
    threads = s.threads or max(1, (os.cpu_count() or 1) // s.workers)
    storage_url = check_url(s.storage) if s.storage else default_storage(s.workers, name)
    tracking_uri = absolute_uri(s.tracking_uri or DEFAULT_TRACKING)
    # The other local workers start now, before this process loads plugins, data, the study and MLflow:
    # a worker process needs seconds to import torch, MLflow and the plugins, and does that meanwhile,
    # then waits for the word that the study is ready (see _release_workers).
    procs = _spawn_workers(s.workers - 1, storage_url, name, tracking_uri, threads, cfg.timeout, isolate=s.isolate)
    try:
        return _search(cfg, s, name, threads, storage_url, tracking_uri, procs, t0)
    finally:
        _stop_unreleased(procs)


def _search(cfg: Any, s: Settings, name: str, threads: int, storage_url: str, tracking_uri: str, procs: list[subprocess.Popen],
            t0: float) -> SearchResult:
    from searchcore.backends import optuna_backend as ob
    from searchcore.host import get_host
    from searchcore.train import set_threads

    host = get_host()
    set_threads(threads)
    runner = prepare(cfg, host, threads)
    if s.isolate:
        from searchcore.isolate import IsolatedRunner

        runner = IsolatedRunner(runner)
    directions = runner.directions
    source = f"{cfg.source}: search.sampler" if s.sampler is None else "--sampler"
    dims = runner.space.dimensions
    first = ob.make_sampler(cfg.sampler, cfg.seed, directions, host, source=source, dimensions=dims, epochs=cfg.epochs)  # a bad name fails first
    # a strategy may come as a sampler with its own pruner (multi-fidelity evolution screens, then promotes)
    pruner = getattr(first, "pruner", None) or ob.make_pruner(cfg.pruner, cfg.epochs, len(directions) > 1)
    study = ob.create_or_load(name, storage_url, directions, first, pruner)
    # A resumed search or another worker must not replay the same seeded sequence: offset the seed.
    study.sampler = ob.make_sampler(cfg.sampler, ob.worker_seed(cfg.seed, study, 0), directions, host, dimensions=dims, epochs=cfg.epochs)
    if ATTR_CONFIG not in study.user_attrs:
        study.set_user_attr(ATTR_CONFIG, cfg.as_dict())
        study.set_user_attr(ATTR_SPACE, cfg.text)
    study.set_user_attr("budget", cfg.trials)
    ob.resume_stopped(study)

    tracker = Tracker(tracking_uri, experiment=name)
    parent = _parent_run(study, tracker, cfg, host, storage_url, study.sampler, pruner)
    _write_lost_runs(study, tracker, parent)
    progress = Progress(study, cfg.trials, enabled=s.progress)
    _release_workers(procs)
    try:
        stats = ob.work(study, storage_url, runner, cfg.trials, tracker, parent, timeout=cfg.timeout, on_trial=progress.trial_done, fail_fast=s.fail_fast)
        _join_workers(procs, study, storage_url, progress)
    except BaseException:
        for p in procs:
            p.terminate()
        tracker.flush(10)
        raise
    finally:
        progress.close()
    tracker.flush()
    result = SearchResult(name, mask_url(storage_url), tracking_uri, parent, runner.names, directions, stopped_reason=stats.stopped_reason)
    result.counts = state_counts(study)
    result.best = best_architectures(study, runner.names, top=s.top)
    final_metrics: dict[str, float] = {}
    if result.best and s.register and cfg.evaluator == "train":
        finalize_best(result, runner, tracker, parent, name)
        final_metrics["best_test_accuracy"] = max(a.test_accuracy or 0.0 for a in result.best)
    if s.baseline and cfg.evaluator == "train":
        result.baseline_test_accuracy = baseline_test_accuracy(runner)
        final_metrics["baseline_test_accuracy"] = result.baseline_test_accuracy
    if parent is not None and not tracker.down:
        finish_mlflow_view(tracker, result, name, directions)
    if s.plots and parent is not None and not tracker.down:
        from searchcore.report.hook import log_search_report  # never raises: a plotting failure is one warning

        log_search_report(study, runner, tracker, parent, result)
    final_metrics.update({f"trials_{k.lower()}": v for k, v in result.counts.items()})
    if parent is not None and not tracker.down:  # while MLflow is down, `searchcore sync` closes the parent run later
        try:
            tracker.log_summary(parent, summary(result))
            tracker.end_search(parent, metrics=final_metrics)
        except Exception as e:  # an outage at the very end loses nothing: sync writes it later
            print(f"searchcore: warning: could not close the MLflow parent run: {type(e).__name__}", file=sys.stderr)
    result.seconds = time.time() - t0
    return result


def finish_mlflow_view(tracker: Tracker, result: SearchResult, name: str, directions: list[str]) -> None:
    """The winner's numbers on its trial run and model page, params and MACs on every trial run."""
    from searchcore import mlflow_view

    try:
        mlflow_view.finish(tracker, result, name, [str(d).lower() for d in directions])
    except Exception as e:  # a nicer MLflow page is not worth failing a finished search for
        print(f"searchcore: warning: could not finish the MLflow view ({type(e).__name__}: {e})", file=sys.stderr)


def summary(result: SearchResult) -> dict[str, Any]:
    """What the parent run keeps of the outcome: objectives, and each chosen architecture."""
    return {
        "objectives": dict(zip(result.objectives, result.directions)),
        "pareto": len(result.objectives) > 1,
        "baseline_test_accuracy": result.baseline_test_accuracy,
        "architectures": [
            {"trial": a.trial, "values": a.values, "test_accuracy": a.test_accuracy, "model_uri": a.model_uri,
             "params": a.params, "one_line": a.one_line, "metrics": a.metrics}
            for a in result.best
        ],
    }


def _parent_run(study: Any, tracker: Tracker, cfg: Any, host: Any, storage_url: str, sampler: Any, pruner: Any) -> str | None:
    """The search's MLflow parent run: created once, reused on resume; None while MLflow is down."""
    import searchcore

    existing = study.user_attrs.get(ATTR_PARENT)
    info = {
        "searchcore_version": searchcore.__version__,
        "plugins": {i.name: i.version for i in host.loaded},
        "sampler": str(sampler),  # NoRepeat(TPESampler) ...
        "pruner": type(pruner).__name__,
        "seed": cfg.seed,
        "storage": mask_url(storage_url),
    }
    try:
        run_id = tracker.start_search(study.study_name, cfg.as_dict(), cfg.text, info, run_id=existing)
    except Exception as e:
        tracker.outage(e)  # warns once; the search goes on
        return existing
    if existing is None:
        study.set_user_attr(ATTR_PARENT, run_id)
        study.set_user_attr(ATTR_TRACKING, mask_url(tracker.uri))
    return run_id


def _write_lost_runs(study: Any, tracker: Tracker, parent: str | None) -> None:
    """On resume, write the runs a dead process owed MLflow: trials it finished but had not
    written yet (writes are asynchronous), or a FAILED run for a trial it found interrupted.
    Trials of live workers are left to them, so nothing is written twice."""
    from searchcore.sync import lost_by_dead_workers, write_missing

    if parent is None or tracker.down or not study.get_trials(deepcopy=False):
        return
    try:
        write_missing(study, tracker, parent, only=lost_by_dead_workers(study))
    except Exception as e:  # an outage now: the search goes on, `searchcore sync` writes them later
        tracker.outage(e)


def _spawn_workers(n: int, storage_url: str, name: str, tracking_uri: str, threads: int, timeout: float | None,
                   isolate: bool = False) -> list[subprocess.Popen]:
    """Start ``n`` local ``searchcore worker`` processes that import what they need, then wait on
    stdin for :func:`_release_workers` (the study and the MLflow parent run exist) before they join."""
    procs = []
    for _ in range(n):
        cmd = [sys.executable, "-m", "searchcore.cli", "worker", "--storage", storage_url, "--name", name, "--tracking-uri", tracking_uri,
               "--threads", str(threads), "--wait-for-go"]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        if isolate:
            cmd += ["--isolate"]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=worker_env(threads)))
    return procs


def worker_env(threads: int) -> dict[str, str]:
    """A local worker's environment: OpenMP/BLAS pools sized to its torch threads before it imports torch
    (set only where the user left them unset)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(threads))
    return env


def _release_workers(procs: list[subprocess.Popen]) -> None:
    """Tell the waiting workers that the study is ready: they load it and join the search."""
    for p in procs:
        if p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.write(b"go\n")
                p.stdin.close()
            except OSError:  # the worker died on start-up; it runs no trials, the search goes on
                pass


def _stop_unreleased(procs: list[subprocess.Popen]) -> None:
    """The search failed before the workers were released: closing stdin tells them to exit."""
    for p in procs:
        if p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()


def _join_workers(procs: list[subprocess.Popen], study: Any, storage_url: str, progress: Any) -> None:
    """Wait for the local workers after this process stopped asking for trials.

    A worker that has not joined yet (still starting up, no trial of its own in the study) while
    no trial runs anywhere could only join to find the search over, or start trials after this
    search stopped (its timeout); it is stopped instead of waited for. The check and the stop
    happen under the budget lock, so it cannot ask for a trial in between.
    """
    from searchcore.backends.storage import budget_lock

    pending = [p for p in procs if p.poll() is None]
    while pending:
        for p in list(pending):
            if p.poll() is not None:
                pending.remove(p)
                continue
            with budget_lock(storage_url, study.study_name):
                if not _joined_or_busy(study, p.pid):
                    p.terminate()
                    p.wait()
                    pending.remove(p)
        if pending:
            progress.refresh()
            time.sleep(0.5)


def _joined_or_busy(study: Any, pid: int) -> bool:
    """Whether the local worker ``pid`` ran a trial, or any trial is running (it may be that worker's,
    its owner attributes not written yet)."""
    import optuna

    from searchcore.backends.storage import host_id

    me = host_id()
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            return True
        if t.user_attrs.get("pid") == pid and t.user_attrs.get("host") == me:
            return True
    return False


def state_counts(study: Any) -> dict[str, int]:
    from searchcore.backends.optuna_backend import interrupted

    lost = interrupted(study)
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "INTERRUPTED" if t.number in lost else t.state.name
        counts[key] = counts.get(key, 0) + 1
    return counts


def best_architectures(study: Any, names: list[str], top: int = 5) -> list[Architecture]:
    """Single objective: the top trials by value. Several: the Pareto front (Optuna's best_trials)."""
    import optuna

    from searchcore.spec import decode

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if "spec" in t.user_attrs]
    if not done:
        return []
    if len(study.directions) > 1:
        chosen = [t for t in study.best_trials if "spec" in t.user_attrs]
    else:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        chosen = sorted(done, key=lambda t: (t.value, -t.number), reverse=reverse)[:top]
    return [Architecture(t.number, decode(t.user_attrs["spec"]), dict(t.params), list(t.values), dict(t.user_attrs.get("metrics", {}))) for t in chosen]


def finalize_best(result: SearchResult, runner: Any, tracker: Tracker, parent: str | None, name: str) -> None:
    """Retrain the winner(s) with the search's budget and seed, test once, log and register."""
    from searchcore.fit import fit
    from searchcore.train import evaluate

    chosen = result.best if len(result.directions) > 1 else result.best[:1]
    for arch in chosen:
        # the same path as a trial (plugins' distillation, pruning), so the registered model is the one scored
        fitted = fit(arch.spec, runner.host, runner.splits, runner.train_config(), runner.space.options, final=True)
        model = fitted.model
        arch.test_accuracy = evaluate(model, runner.splits.test_x, runner.splits.test_y)
        if parent is None or tracker.down:
            continue
        try:
            arch.model_uri = tracker.log_model(model, arch.spec, name, arch.test_accuracy, arch.trial, parent, metrics=fitted.metrics)
        except Exception as e:
            print(f"searchcore: warning: could not register the best model in MLflow: {type(e).__name__}: {e}", file=sys.stderr)


def baseline_test_accuracy(runner: Any) -> float:
    """The unimproved backbone (every plugin off), trained like any trial: the bar to beat."""
    from searchcore.fit import fit
    from searchcore.train import evaluate

    spec = runner.space.spec(runner.space.off_params())
    model = fit(spec, runner.host, runner.splits, runner.train_config(), runner.space.options).model
    return evaluate(model, runner.splits.test_x, runner.splits.test_y)


class Progress:
    """Live progress: done/total, running, pruned, failed, best so far, ETA."""

    def __init__(self, study: Any, total: int, enabled: bool = True) -> None:
        self.study, self.total, self.enabled = study, total, enabled
        self.t0 = time.time()
        self._live = None
        self._last = 0.0
        if enabled and sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=2, transient=False)
            self._live.start()

    def _line(self) -> str:
        import optuna

        from searchcore.backends.optuna_backend import interrupted

        S = optuna.trial.TrialState
        lost = interrupted(self.study)
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.number not in lost]
        n = {s: sum(1 for t in trials if t.state == s) for s in S}
        done = n[S.COMPLETE] + n[S.PRUNED] + n[S.FAIL]
        best = ""
        complete = [t for t in trials if t.state == S.COMPLETE]
        if complete and len(self.study.directions) == 1:
            mx = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
            b = (max if mx else min)(complete, key=lambda t: t.value)
            best = f" | best {b.value:.4f} (trial {b.number}) {b.user_attrs.get('spec', '')[:90]}"
        elapsed = time.time() - self.t0
        rate = elapsed / max(1, done)
        eta = max(0.0, (self.total - done) * rate) if done else float("nan")
        eta_s = f"{eta:.0f}s" if eta == eta else "?"
        return (f"trials {done}/{self.total} | running {n[S.RUNNING]} | pruned {n[S.PRUNED]} | failed {n[S.FAIL]}"
                f" | {elapsed:.0f}s elapsed, ETA {eta_s}{best}")

    def _render(self) -> Any:
        from rich.text import Text

        return Text(self._line())

    def trial_done(self, outcome: Any) -> None:
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(self._render())
        else:
            extra = f" ({outcome.reason})" if outcome.reason else ""
            print(f"trial {outcome.number} {outcome.state}{extra} -> {self._line()}", flush=True)

    def refresh(self) -> None:
        if self.enabled and time.time() - self._last > 2:
            self._last = time.time()
            if self._live is not None:
                self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
