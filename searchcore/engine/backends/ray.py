"""The Ray Tune backend: the same search on a Ray cluster, with the same MLflow records.

Why it is built this way:

* Workers stay alive across trials. Tune hands a finished trial's actor to the next trial
  (``reuse_actors``) and each worker process keeps its prepared :class:`TrialRunner` (plugins,
  data, space) in a module-level cache, so only the first trial of a worker pays for imports and
  data; a trial costs little more than its training. The driver ships its loaded data with the
  payload (small in-memory splits), so workers do not load it again; a worker builds its MLflow
  tracker on a thread while its first trial prepares and trains.
* One space for every backend. ``OptunaSearch`` asks the same ``sample(trial, dimensions)``
  define-by-run, and the trial replays the sampled params through ``ParamsTrial``.
* Records come from the trials. A trial queues its MLflow child run (``Tracker``, the Optuna
  backend's layout) on a background thread of its worker. A trial that Tune stops learns it as
  ``SystemExit`` from ``tune.report`` and still writes its record; its worker flushes before
  it goes away. The driver writes only what a dead worker never could.
* Tune checkpoints after every epoch where a scheduler acts on epochs (ASHA, HyperBand). The
  trainer has no mid-training entry point, so a trial restored from a checkpoint retrains from its
  seed (bit-identical on CPU) and reports only the epochs Tune has not seen, then records the whole
  trial once. Without such a scheduler nothing needs epochs one by one: no epoch checkpoints, and
  epoch results go to the driver in batches (``paced_results``).
* ``SEARCHCORE_RAY_TRACE=FILE`` makes the driver and its workers append a timestamped line per
  phase (cluster start, worker start-up, each trial and report): benchmarks/overhead.py reads it.

This module is the driver's side (settings, cluster, experiment, what the driver records); what runs
inside a worker is :mod:`searchcore.engine.backends.ray_trial`. Ray is imported only in these two
modules, and only when ``--backend ray`` runs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchcore.engine.backends.base import Backend
from searchcore.engine.backends.ray_resources import PLACE_WAIT_S, check_placement
from searchcore.engine.backends.ray_trial import (
    BASELINE_KEY,
    EPOCH_KEYS,
    RESULT_BUFFER_MAX,
    STATE_KEY,
    TAG_BACKEND,
    DefineByRun,
    Payload,
    flat_params,
    make_trainable,
    shippable_splits,
    trace,
    trial_name,
    trial_number,
)
from searchcore.errors import UsageError

SCHEDULERS = ("asha", "hyperband", "none")
DEFAULT_RAY_STORAGE = "ray_results"
RAY_ONLY = {
    "address": "--address",
    "cpus_per_trial": "--cpus-per-trial",
    "gpus_per_trial": "--gpus-per-trial",
    "max_concurrent": "--max-concurrent",
    "max_failures": "--max-failures",
    "scheduler": "--scheduler",
    "resume": "--resume",
    "ray_storage": "--ray-storage",
}


# --- settings -----------------------------------------------------------------------------------


def validate_settings(s: Any) -> None:
    """Refuse the Optuna backend's flags and bad values before anything starts (the registry,
    :func:`searchcore.engine.backends.validate_settings`, refuses Ray's flags for other backends)."""
    if s.workers != 1:
        raise UsageError("--workers is for --backend optuna; a Ray search runs trials side by side up to --max-concurrent")
    if s.storage:
        raise UsageError("--storage is the Optuna study storage; a Ray search keeps its state under --ray-storage")
    if s.pruner:
        raise UsageError("--pruner is for --backend optuna; a Ray search stops trials early with --scheduler asha|hyperband|none")
    if s.threads:
        raise UsageError("--threads is for --backend optuna; a Ray trial runs as many torch threads as --cpus-per-trial")
    if getattr(s, "isolate", False):
        raise UsageError("--isolate is for --backend optuna; each Ray trial already runs in a worker process of its own")
    cpus, gpus = s.cpus_per_trial, s.gpus_per_trial
    if cpus is not None and (not _number(cpus) or not 0 < cpus <= 1024):
        raise UsageError(f"--cpus-per-trial: expected a number in (0, 1024], got {cpus!r}")
    if gpus is not None and (not _number(gpus) or not 0 <= gpus <= 64):
        raise UsageError(f"--gpus-per-trial: expected a number in 0..64, got {gpus!r}")
    if gpus is not None and gpus > 1 and gpus != int(gpus):
        raise UsageError(f"--gpus-per-trial: a fraction shares one GPU, so above 1 it must be a whole number, got {gpus}")
    if s.max_concurrent is not None and (not _integer(s.max_concurrent) or s.max_concurrent < 1):
        raise UsageError(f"--max-concurrent: expected a positive integer, got {s.max_concurrent!r}")
    if s.max_failures is not None and (not _integer(s.max_failures) or s.max_failures < 0):
        raise UsageError(f"--max-failures: expected a non-negative integer, got {s.max_failures!r}")
    if s.scheduler is not None and s.scheduler not in SCHEDULERS:
        raise UsageError(f"--scheduler: unknown scheduler {s.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
    if s.address is not None:
        check_address(s.address)


def check_address(address: str) -> str:
    """``auto`` (the cluster this machine belongs to) or ``HOST:PORT`` of a running head node."""
    if address == "auto":
        return address
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--address: expected auto or HOST:PORT of a running Ray head (ray start --head --port PORT), got {address!r}")
    return address


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now; for a Ray head we start, never Ray's default 6379."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return port


def absolute_tracking_uri(uri: str) -> str:
    """Trials run in other processes and directories: a relative SQLite or file store must not move.
    :func:`~searchcore.track.tracking.absolute_uri`, plus a plain directory as a ``file://`` URI."""
    from searchcore.track.tracking import absolute_uri

    uri = absolute_uri(uri)
    return Path(uri).resolve().as_uri() if "://" not in uri else uri


# --- what runs inside a Ray worker --------------------------------------------------------------


def connect(address: str | None) -> bool:
    """Join ``address`` or start a private local Ray on an explicit free port; True if this call
    connected the process (so the search disconnects it, or stops the Ray it started, at the end)."""
    import ray

    if ray.is_initialized():  # the caller connected this process already (Python API)
        return False
    if address is not None:
        try:
            ray.init(address=address, configure_logging=False)
        except Exception as e:  # no cluster there, or it refuses us: the user's address or token
            hint = "" if os.environ.get("RAY_AUTH_MODE") == "token" else "; a cluster with token auth needs RAY_AUTH_MODE=token here too"
            raise UsageError(f"--address {address}: cannot join the Ray cluster: {type(e).__name__}: {' '.join(str(e).split())[:300]}{hint}") from None
        return True
    port = free_port()
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", include_dashboard=False, configure_logging=False)
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    return True


def prunes(name: str, epochs: int, multi_objective: bool) -> bool:
    """Whether the search's scheduler stops trials by their epochs (else it is Tune's FIFO)."""
    return not (multi_objective or name == "none" or epochs < 2)




@contextlib.contextmanager
def paced_results(on: bool) -> Iterator[None]:
    """Where no scheduler acts on epochs, a worker hands Tune its epoch results in batches (the first
    epoch after ``RESULT_BUFFER_S``) instead of waiting for a round trip to the driver after every
    epoch, which on short epochs costs more than the epoch (measured: ~13 ms a report on 2 busy cores).

    Tune's own result buffering: ``TUNE_RESULT_BUFFER_LENGTH`` above 1 (read when the experiment
    starts) makes Tune call the trainable's ``train_buffered``, whose limits the trainable sets (see
    make_trainable). A buffered call also ends at a checkpoint, so such a search checkpoints no
    epochs (``Payload.checkpoint_epochs``); its trials retrain from their seed on restore anyway.
    A stop (time budget, Ctrl-C) reaches a trial up to a batch later.
    """
    keys = {"TUNE_RESULT_BUFFER_LENGTH": str(RESULT_BUFFER_MAX)}
    previous = {k: os.environ.get(k) for k in keys}
    if on:
        os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_scheduler(name: str, epochs: int, multi_objective: bool) -> Any:
    """ASHA by default; pruning follows val_accuracy, and not at all for several objectives (as in Optuna).

    ASHA records the baseline trial's results at its rungs, as any trial's, but never stops it: the
    baseline is the bar the winner must beat, so it trains all its epochs. (HyperBand pauses and
    resumes whole brackets; there the baseline is stopped like any trial, and the search then
    compares nothing at the end.)"""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

    if not prunes(name, epochs, multi_objective):
        return FIFOScheduler()
    if name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max", max_t=epochs, reduction_factor=3)

    class KeepBaselineASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and result.get(BASELINE_KEY) and result.get("training_iteration", 0) < epochs:
                self._num_stopped -= 1
                return TrialScheduler.CONTINUE
            return action

    return KeepBaselineASHA(time_attr="training_iteration", metric="val_accuracy", mode="max", max_t=epochs, grace_period=1, reduction_factor=3)


@dataclass
class RayTrial:
    """One trial as the driver sees it at the end."""

    number: int
    params: dict[str, Any]
    state: str
    metrics: dict[str, Any]
    error: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0


class RayBackend(Backend):
    """``--backend ray``: a Ray Tune experiment, trials side by side up to ``--max-concurrent``."""

    name = "ray"
    flags = RAY_ONLY

    def check(self, s: Any) -> None:
        validate_settings(s)

    def run(self, cfg: Any, s: Any, report: Any, t0: float) -> Any:
        return run_ray_search(cfg, s, t0)


def run_ray_search(cfg: Any, s: Any, t0: float) -> Any:
    """``searchcore search --backend ray``: a Tune experiment over the search space, recorded in MLflow.
    ``cfg`` comes resolved and checked (:func:`searchcore.engine.settings.resolve_search`)."""
    from searchcore.engine.results import SearchResult, finish_search
    from searchcore.engine.runner import prepare
    from searchcore.engine.samplers import make_sampler
    from searchcore.engine.settings import sampler_source
    from searchcore.engine.zero_cost import make_scorer, scorer_cost
    from searchcore.plugins.host import get_host
    from searchcore.track.tracking import DEFAULT_TRACKING, Tracker, mask_url

    trace("search start")
    name = cfg.name
    cpus = float(s.cpus_per_trial or 1.0)
    gpus = float(s.gpus_per_trial or 0.0)
    threads = max(1, int(cpus))
    scheduler_name = s.scheduler or "asha"
    host = get_host()
    runner = prepare(cfg, host, threads)  # the driver checks the space here and retrains the winner with it
    directions = runner.directions
    scorer = make_scorer(cfg, runner)  # the sampler runs in this driver: it screens here, on the driver's CPU
    sampler = make_sampler(cfg.sampler, cfg.seed, directions, host, source=sampler_source(cfg, s), dimensions=runner.space.dimensions,
                           epochs=cfg.epochs, scorer=scorer)
    root = Path(s.ray_storage or DEFAULT_RAY_STORAGE).expanduser().resolve()
    experiment = root / name
    if s.resume and not experiment.is_dir():
        raise UsageError(f"--resume: no Ray experiment {name!r} under {root}; start it without --resume")
    if not s.resume and experiment.exists():
        raise UsageError(f"--name {name}: a Ray experiment of that name exists under {root}; continue it with --resume or pick another --name")
    tracking_uri = absolute_tracking_uri(s.tracking_uri or DEFAULT_TRACKING)
    tracker = Tracker(tracking_uri, experiment=name)
    parent = _parent_run(tracker, cfg, host, sampler, scheduler_name, experiment, cpus, gpus, resume=s.resume)
    extra = [i.module.__name__ for i in host.infos.values() if i.source == "--plugin" and i.module is not None]
    payload = Payload(cfg=copy.deepcopy(cfg), plugins=extra, disabled=sorted(host.disabled), tracking_uri=tracking_uri,
                      study=name, parent_run_id=parent, threads=threads, splits=shippable_splits(runner.splits),
                      checkpoint_epochs=s.resume or prunes(scheduler_name, cfg.epochs, len(runner.names) > 1), resumed=bool(s.resume))
    trace("driver prepared")
    started = connect(s.address)
    trace("connected")
    try:
        # trials no node can hold: one line now, not a wait for ever inside Tune; a private cluster is whole at once
        check_placement(cpus, gpus, wait_s=0.0 if started and s.address is None else PLACE_WAIT_S)
        trials = _fit(payload, runner, sampler, scheduler_name, cfg, s, cpus, gpus, root, experiment)
    except UsageError:
        if parent is not None:  # nothing ran, or nothing more can: the parent run says so instead of RUNNING for ever
            tracker.end_search(parent, status="FAILED")
        raise
    finally:
        if started:
            import ray

            ray.shutdown()
    trace("fit done")
    if parent is not None:
        _write_missing(tracker, name, parent, trials, runner)
    result = SearchResult(name, str(experiment), mask_url(tracking_uri), parent, runner.names, directions)
    result.counts = {}
    for t in trials:
        key = {"FAILED": "FAIL"}.get(t.state, t.state)
        result.counts[key] = result.counts.get(key, 0) + 1
    result.best = best_trials(trials, runner, directions, top=getattr(s, "top", 5))
    result.baseline = next(iter(best_trials([t for t in trials if runner.is_baseline(t.params)], runner, directions, top=1)), None)
    result.zero_cost = scorer_cost(scorer)
    finish_search(result, runner, tracker, parent, cfg, s, name)
    result.seconds = time.time() - t0
    trace("search end")
    return result


def _parent_run(tracker: Any, cfg: Any, host: Any, sampler: Any, scheduler: str, experiment: Path, cpus: float, gpus: float,
                resume: bool) -> str | None:
    """The search's parent run, as the Optuna backend writes it; found again by name on --resume."""
    from importlib.metadata import version

    from searchcore.track.tracking import mask_url

    info = {
        "searchcore_version": version("searchcore"),
        "plugins": {i.name: i.version for i in host.loaded},
        "sampler": str(sampler),  # NoRepeat(TPESampler) ...
        "scheduler": scheduler,
        "seed": cfg.seed,
        "backend": "ray",
        "storage": str(experiment),
        "cpus_per_trial": cpus,
        "gpus_per_trial": gpus,
    }
    try:
        existing = tracker.find_search_run(cfg.name) if resume else None
        return tracker.start_search(cfg.name, cfg.as_dict(), cfg.text, info, run_id=existing)
    except Exception as e:
        raise UsageError(f"--tracking-uri {mask_url(tracker.uri)}: MLflow is not answering ({type(e).__name__}); a Ray search records "
                         "from its workers, so it needs the tracking server up before it starts") from None


def _fit(payload: Payload, runner: Any, sampler: Any, scheduler_name: str, cfg: Any, s: Any, cpus: float, gpus: float,
         root: Path, experiment: Path) -> list[RayTrial]:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from searchcore.engine.backends.ray_resources import placement_watch, unplaceable_cause

    trainable = make_trainable(payload, cpus, gpus)
    if s.resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise UsageError(f"--resume: {experiment} holds no Ray Tune experiment state to continue")
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        names, directions = runner.names, runner.directions
        modes = ["max" if d == "maximize" else "min" for d in directions]
        multi = len(names) > 1
        # the unimproved backbone first, for every sampler, as the Optuna backend's first trial
        searcher: Any = OptunaSearch(space=DefineByRun(runner.space.dimensions), metric=names if multi else names[0],
                                     mode=modes if multi else modes[0], sampler=sampler,
                                     points_to_evaluate=[dict(runner.baseline_params)] if runner.baseline_params else None)
        if s.max_concurrent is not None:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=make_scheduler(scheduler_name, cfg.epochs, multi), num_samples=cfg.trials,
                reuse_actors=True, time_budget_s=cfg.timeout, trial_name_creator=trial_name, trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=experiment.name, storage_path=str(root), verbose=1 if s.progress else 0,
                failure_config=tune.FailureConfig(max_failures=1 if s.max_failures is None else s.max_failures),
                callbacks=[placement_watch(cpus, gpus)],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None)),  # a few bytes each; num_to_keep forces a state snapshot per checkpoint
        )
    with _graceful_interrupt() as stop, paced_results(not payload.checkpoint_epochs):
        trace("fit start")
        try:
            grid = tuner.fit()
        except Exception as e:
            unplaceable = unplaceable_cause(e)
            if unplaceable is None:
                raise
            raise unplaceable from None
        trace("fit returned")
    if stop.is_set():
        print(f"searchcore: interrupted; continue with the same command plus --resume (experiment {experiment})", file=sys.stderr)
        raise KeyboardInterrupt(f"the Ray experiment was interrupted and saved; continue it with --name {experiment.name} --resume")
    return [t for t in (_ray_trial(r) for r in grid) if t is not None]


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C stops Tune gracefully (state saved, running trials record themselves) and we know it.

    Tune's own SIGINT handler leaves no trace of having fired, so it is switched off and our handler
    asks Tune to stop through SIGUSR1, its other stop signal; a second Ctrl-C interrupts at once.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        yield stop
        return
    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("searchcore: stopping the Ray experiment; its state is saved for --resume (Ctrl-C again to abort)", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env


def _ray_trial(r: Any) -> RayTrial | None:
    """The driver's view of one Tune result; None for a trial that never ran."""
    try:
        number = trial_number(Path(r.path).name)
    except (TypeError, ValueError):
        return None
    metrics = dict(r.metrics or {})
    if not metrics and r.error is None:
        return None
    state = "FAILED" if r.error is not None else str(metrics.get(STATE_KEY) or "PRUNED")
    epochs: dict[int, dict[str, float]] = {}  # by epoch, the latest: a trial restarted without a checkpoint reports its epochs again
    df = r.metrics_dataframe
    if df is not None and "epoch" in df.columns:
        for _, row in df.iterrows():
            if row.get("epoch") == row.get("epoch") and row.get("epoch") is not None:
                epochs[int(row["epoch"])] = {"epoch": int(row["epoch"]), **{k: float(row[k]) for k in EPOCH_KEYS if k in row and row[k] == row[k]}}
    history = [epochs[e] for e in sorted(epochs)]
    end = float(metrics.get("timestamp", time.time()))
    start = end - float(metrics.get("time_total_s", 0.0))
    error = f"{type(r.error).__name__}: {' '.join(str(r.error).split())}"[:500] if r.error is not None else ""
    return RayTrial(number, flat_params(dict(r.config or {})), state, metrics, error, history, start, end)


def _child_runs(tracker: Any, study: str) -> dict[int, Any]:
    from searchcore.track.tracking import TAG_KIND, TAG_STUDY, TAG_TRIAL

    runs: dict[int, Any] = {}
    token = None
    while True:
        page = tracker.client.search_runs([tracker.experiment_id], f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_KIND}` = 'trial'",
                                          max_results=1000, page_token=token)
        for run in page:
            runs[int(run.data.tags[TAG_TRIAL])] = run
        token = page.token
        if not token:
            return runs


def _write_missing(tracker: Any, study: str, parent: str, trials: list[RayTrial], runner: Any) -> int:
    """Records for trials whose worker died before writing one (or mid-write): from Tune's results."""
    from searchcore.train.outcome import TrialOutcome

    try:
        present = _child_runs(tracker, study)
    except Exception as e:
        print(f"searchcore: warning: could not check the trial records in MLflow: {type(e).__name__}", file=sys.stderr)
        return 0
    written = 0
    for t in trials:
        run = present.get(t.number)
        if run is not None and run.info.status != "RUNNING":
            continue
        if run is not None:  # a half-written record (its worker was killed while writing)
            tracker.client.delete_run(run.info.run_id)
        try:
            spec = runner.space.spec(runner.space.rebuild_params(t.params, f"trial {t.number}"))
        except Exception:
            spec = None
        metrics = {k: float(v) for k, v in t.metrics.items() if k in set(runner.names) | {"params", "best_val_accuracy"} and _number(v)}
        reason = t.error or str(t.metrics.get("searchcore_reason", "")) or ("stopped by the Ray Tune scheduler" if t.state == "PRUNED" else "")
        outcome = TrialOutcome(number=t.number, params=t.params, spec=spec, state=t.state, reason=reason, metrics=metrics,
                               history=t.history, start=t.start, end=t.end, tags={TAG_BACKEND: "ray", "searchcore.recorded_by": "driver"})
        tracker.write_trial(outcome, study, parent, {})
        written += 1
    return written


def best_trials(trials: list[RayTrial], runner: Any, directions: list[str], top: int = 5) -> list[Any]:
    """Single objective: the top complete trials. Several: the Pareto front, as the Optuna backend reports."""
    from searchcore.engine.results import Architecture
    from searchcore.train.objectives import pareto_front

    names = runner.names
    done = []
    for t in trials:
        values = [t.metrics.get(n) for n in names]
        if t.state == "COMPLETE" and all(_number(v) for v in values):
            done.append((t, [float(v) for v in values]))
    if not done:
        return []
    if len(names) > 1:
        chosen = [done[i] for i in pareto_front([v for _, v in done], directions)]
    else:
        sign = -1.0 if directions[0] == "maximize" else 1.0
        chosen = sorted(done, key=lambda tv: (sign * tv[1][0], tv[0].number))[:top]
    out = []
    for t, values in chosen:
        params = runner.space.rebuild_params(t.params, f"trial {t.number}")
        metrics = {k: float(v) for k, v in t.metrics.items() if _number(v) and (k in names or k in ("params", "best_val_accuracy"))}
        out.append(Architecture(t.number, runner.space.spec(params), params, values, metrics))
    return out


__all__ = ["run_ray_search", "validate_settings", "check_address", "free_port", "make_scheduler", "RayBackend", "SCHEDULERS"]
