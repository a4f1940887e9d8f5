"""The Optuna backend's search: a study in a shared storage, local worker processes, live progress.

The flow is one way: resolved config -> plugins -> search space -> Optuna study (sampler, pruner,
storage) -> workers (ask, build, train, tell; :mod:`searchcore.engine.backends.optuna`) -> MLflow
records -> the best architectures retrained, tested and registered. ``searchcore worker`` joins the
same study through :func:`join_study`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from searchcore.engine.backends.base import Backend, Reporter
from searchcore.engine.backends.optuna import state_counts
from searchcore.engine.backends.storage import check_url, default_storage
from searchcore.engine.config import SpaceConfig
from searchcore.engine.results import (
    ATTR_BASELINE,
    ATTR_CONFIG,
    ATTR_PARENT,
    ATTR_SPACE,
    ATTR_TRACKING,
    Architecture,
    SearchResult,
    finish_search,
)
from searchcore.engine.runner import prepare
from searchcore.engine.samplers import make_pruner, make_sampler
from searchcore.engine.settings import Settings, sampler_source
from searchcore.engine.zero_cost import charge_study, make_scorer, study_cost
from searchcore.errors import UsageError
from searchcore.track.tracking import DEFAULT_TRACKING, Tracker, absolute_uri, mask_url


class OptunaBackend(Backend):
    """``--backend optuna`` (the default): ``--workers`` processes on one Optuna study."""

    name = "optuna"

    def check(self, s: Settings) -> None:
        if s.workers < 1:
            raise UsageError(f"--workers: expected a positive integer, got {s.workers}")

    def run(self, cfg: SpaceConfig, s: Settings, report: Reporter | None, t0: float) -> SearchResult:
        name = cfg.name or "searchcore"
        threads = s.threads or max(1, (os.cpu_count() or 1) // s.workers)
        storage_url = check_url(s.storage) if s.storage else default_storage(s.workers, name)
        tracking_uri = absolute_uri(s.tracking_uri or DEFAULT_TRACKING)
        # The other local workers start now, before this process loads plugins, data, the study and MLflow:
        # a worker process needs seconds to import torch, MLflow and the plugins, and does that meanwhile,
        # then waits for the word that the study is ready (see _release_workers).
        procs = _spawn_workers(s.workers - 1, storage_url, name, tracking_uri, threads, cfg.timeout, isolate=s.isolate)
        try:
            return _search(cfg, s, name, threads, storage_url, tracking_uri, procs, t0, report)
        finally:
            _stop_unreleased(procs)


def _search(cfg: Any, s: Settings, name: str, threads: int, storage_url: str, tracking_uri: str, procs: list[subprocess.Popen],
            t0: float, report: Reporter | None = None) -> SearchResult:
    from searchcore.engine.backends import optuna as ob
    from searchcore.plugins.host import get_host
    from searchcore.train.trainer import set_threads

    host = get_host()
    set_threads(threads)
    runner = prepare(cfg, host, threads)
    scorer = make_scorer(cfg, runner)  # built now, costs nothing unless the strategy asks it for scores
    if s.isolate:
        from searchcore.engine.isolate import IsolatedRunner

        runner = IsolatedRunner(runner)
    directions = runner.directions
    source = sampler_source(cfg, s)
    dims = runner.space.dimensions
    first = make_sampler(cfg.sampler, cfg.seed, directions, host, source=source, dimensions=dims, epochs=cfg.epochs,
                         scorer=scorer)  # a bad name fails first
    # a strategy may come as a sampler with its own pruner (multi-fidelity evolution screens, then promotes)
    pruner = getattr(first, "pruner", None) or make_pruner(cfg.pruner, cfg.epochs, len(directions) > 1)
    study = ob.create_or_load(name, storage_url, directions, first, pruner)
    # A resumed search or another worker must not replay the same seeded sequence: offset the seed.
    study.sampler = make_sampler(cfg.sampler, ob.worker_seed(cfg.seed, study, 0), directions, host, dimensions=dims, epochs=cfg.epochs,
                                 scorer=scorer)
    if ATTR_CONFIG not in study.user_attrs:
        study.set_user_attr(ATTR_CONFIG, cfg.as_dict())
        study.set_user_attr(ATTR_SPACE, cfg.text)
    study.set_user_attr("budget", cfg.trials)
    ob.resume_stopped(study)
    if not study.get_trials(deepcopy=False):  # a new search: the unimproved backbone is its first trial, for every sampler
        study.enqueue_trial(runner.baseline_params, user_attrs={ATTR_BASELINE: True})

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
        charge_study(study, scorer, _process_key())  # the zero-cost screening this process did, charged
    tracker.flush()
    result = SearchResult(name, mask_url(storage_url), tracking_uri, parent, runner.names, directions, stopped_reason=stats.stopped_reason)
    result.counts = state_counts(study)
    result.best = best_architectures(study, runner.names, top=s.top)
    result.baseline = baseline_architecture(study, runner)
    result.zero_cost = study_cost(study.user_attrs)  # every worker's screening, this process's included
    finish_search(result, runner, tracker, parent, cfg, s, name,
                  report=None if report is None else lambda: report(study, runner, tracker, parent, result))
    result.seconds = time.time() - t0
    return result


def join_study(storage_url: str, name: str, threads: int | None, tracking_uri: str | None, timeout: float | None,
               isolate: bool = False, wait_for_go: bool = False) -> Any:
    """``searchcore worker``: join a search's study and work on it until its budget is spent. The
    configuration comes from the study (:func:`~searchcore.engine.runner.config_from_study`), the runner
    from :func:`~searchcore.engine.runner.prepare`, as for the search itself. None when the search
    that spawned this worker stopped before releasing it."""
    import optuna

    from searchcore.engine.backends import optuna as ob
    from searchcore.engine.runner import config_from_study
    from searchcore.plugins.host import get_host
    from searchcore.train.trainer import set_threads

    check_url(storage_url)
    if wait_for_go:
        set_threads(threads)  # before anything sizes torch's thread pools
        get_host()  # the plugins (and what they import) load while the search sets up the study
        _preload_tracking(tracking_uri)
        if sys.stdin.readline().strip() != "go":
            return None
    storage = ob.study_storage(storage_url)
    try:
        probe = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UsageError(f"--name {name}: no such study in the storage; start it with `searchcore search --storage ... --name {name}`") from None
    if ATTR_SPACE not in probe.user_attrs:
        raise UsageError(f"--name {name}: this study was not created by searchcore search")
    cfg = config_from_study(probe.user_attrs[ATTR_SPACE], probe.user_attrs[ATTR_CONFIG], name)
    host = get_host()
    set_threads(threads)
    runner = prepare(cfg, host, threads)
    scorer = make_scorer(cfg, runner)
    if isolate:
        from searchcore.engine.isolate import IsolatedRunner

        runner = IsolatedRunner(runner)
    sampler = make_sampler(cfg.sampler, cfg.seed, runner.directions, host, dimensions=runner.space.dimensions, epochs=cfg.epochs,
                           scorer=scorer)
    pruner = getattr(sampler, "pruner", None) or make_pruner(cfg.pruner, cfg.epochs, len(runner.directions) > 1)  # as the search's
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    study.sampler = make_sampler(cfg.sampler, ob.worker_seed(cfg.seed, study, 1 + os.getpid() % 9973), runner.directions, host,
                                 dimensions=runner.space.dimensions, epochs=cfg.epochs, scorer=scorer)
    tracking = tracking_uri or study.user_attrs.get(ATTR_TRACKING) or DEFAULT_TRACKING
    tracker = Tracker(tracking, experiment=name)
    budget = int(study.user_attrs.get("budget", cfg.trials))
    try:
        stats = ob.work(study, storage_url, runner, budget, tracker, study.user_attrs.get(ATTR_PARENT), timeout=timeout)
    finally:
        charge_study(study, scorer, _process_key())
    tracker.flush()
    return stats


def _process_key() -> str:
    """Which process scored: its charge is one study attribute of its own (host and pid)."""
    from searchcore.engine.backends.storage import host_id

    return f"{host_id()}:{os.getpid()}:{time.time_ns()}"


def _preload_tracking(uri: str | None) -> None:
    """Import the MLflow modules a worker's trial records need, without touching the store itself."""
    import mlflow.entities  # noqa: F401
    import mlflow.tracking  # noqa: F401

    if uri and uri.split(":", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def find_study(name: str | None, storage: str | None) -> tuple[Any, str]:
    """A search's study and its storage URL: in ``storage``, or in the default stores here; the only one if unnamed."""
    import optuna

    from searchcore.engine.backends.storage import DEFAULT_STORAGE, JOURNAL_FILE, open_storage

    urls = [storage] if storage else [DEFAULT_STORAGE, f"journal:///{JOURNAL_FILE}"]
    for url in urls:
        if url.startswith("sqlite:///") and not storage:
            from pathlib import Path

            if not Path(url[len("sqlite:///") :]).exists():
                continue
        if url.startswith("journal:///") and not storage:
            from pathlib import Path

            if not Path(url[len("journal:///") :]).exists():
                continue
        st = open_storage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        if name is None and len(names) == 1:
            name = names[0]
        if name in names:
            return optuna.load_study(study_name=name, storage=st), url
    raise UsageError(f"no search named {name!r} here" if name else "no search found here; name one: searchcore best NAME --storage URL")


def _parent_run(study: Any, tracker: Tracker, cfg: Any, host: Any, storage_url: str, sampler: Any, pruner: Any) -> str | None:
    """The search's MLflow parent run: created once, reused on resume; None while MLflow is down."""
    from importlib.metadata import version

    existing = study.user_attrs.get(ATTR_PARENT)
    info = {
        "searchcore_version": version("searchcore"),
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
    from searchcore.engine.sync import lost_by_dead_workers, write_missing

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
    from searchcore.engine.backends.storage import budget_lock

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

    from searchcore.engine.backends.storage import host_id

    me = host_id()
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            return True
        if t.user_attrs.get("pid") == pid and t.user_attrs.get("host") == me:
            return True
    return False


def best_architectures(study: Any, names: list[str], top: int = 5) -> list[Architecture]:
    """Single objective: the top trials by value. Several: the Pareto front (Optuna's best_trials)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if "spec" in t.user_attrs]
    if not done:
        return []
    if len(study.directions) > 1:
        chosen = [t for t in study.best_trials if "spec" in t.user_attrs]
    else:
        reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
        chosen = sorted(done, key=lambda t: (t.value, -t.number), reverse=reverse)[:top]
    return [_architecture(t) for t in chosen]


def _architecture(t: Any) -> Architecture:
    """A completed trial with its spec as the search reports it."""
    from searchcore.arch.spec import decode

    return Architecture(t.number, decode(t.user_attrs["spec"]), dict(t.params), list(t.values), dict(t.user_attrs.get("metrics", {})))


def baseline_architecture(study: Any, runner: Any) -> Architecture | None:
    """The completed trial of the unimproved backbone (every plugin off), the first of a search; None
    when it did not complete (or the study predates baseline trials)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "spec" in t.user_attrs and runner.is_baseline(t.params):
            return _architecture(t)
    return None


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

        from searchcore.engine.backends.optuna import interrupted

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
