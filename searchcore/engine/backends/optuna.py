"""The Optuna backend: a study in a shared storage, workers that ask, train and tell.

Each worker (the search process itself, its ``--workers`` subprocesses, or a
``searchcore worker`` on another machine) runs :func:`work` against the same study. The
study keeps the space file and the settings as user attributes, so a worker needs only
the storage URL and the study name.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from searchcore.engine.backends.batching import BatchedStorage, flush
from searchcore.engine.backends.storage import budget_lock, host_id, open_storage, pid_alive
from searchcore.engine.runner import TrialRunner
from searchcore.errors import UsageError
from searchcore.train.outcome import COMPLETE, FAILED, PRUNED, Pruned, TrialOutcome

HEARTBEAT_S = 10.0
SHARE_EVERY_S = 1.0  # a running trial's epoch values reach the study at most this often (and always at tell)
GRACE_S = 60.0
FAIL_FAST_K = 5
ATTR_INTERRUPTED = "interrupted"
ATTR_REQUEUED = "requeued_from"
ATTR_FAIL_FAST_AFTER = "fail_fast_after"  # trials up to this number were judged by an earlier fail-fast stop


def worker_seed(seed: int, study: Any, worker: int) -> int:
    """Seed for one worker's sampler: the search seed offset by the trials already in the study and
    the worker's index, so a resumed search or a second worker never replays the same proposals,
    while one worker on a fresh study stays exactly reproducible."""
    return (seed + len(study.get_trials(deepcopy=False)) + 100_003 * worker) % (2**31 - 1)


def interrupted(study: Any, attrs: dict[str, Any] | None = None) -> set[int]:
    """Numbers of trials whose worker died; the study remembers them so they use no budget.
    ``attrs``: the study's user attributes when the caller has just read them."""
    attrs = study.user_attrs if attrs is None else attrs
    return {int(k.split("_", 1)[1]) for k in attrs if k.startswith(f"{ATTR_INTERRUPTED}_")}


def state_counts(study: Any) -> dict[str, int]:
    """Trials per state, interrupted ones (their worker died) counted apart."""
    lost = interrupted(study)
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "INTERRUPTED" if t.number in lost else t.state.name
        counts[key] = counts.get(key, 0) + 1
    return counts


def counted(trials: list[Any], lost: set[int]) -> int:
    """Trials that use up budget: finished and running ones; interrupted ones were re-queued instead."""
    import optuna

    S = optuna.trial.TrialState
    return sum(1 for t in trials if t.state in (S.COMPLETE, S.PRUNED, S.RUNNING, S.FAIL) and t.number not in lost)


def recover_interrupted(study: Any, grace: float = GRACE_S, trials: list[Any] | None = None) -> list[Any]:
    """Fail RUNNING trials whose worker is gone (dead pid on this host, or a stale heartbeat)
    and re-queue each one's params once. Returns those trials as they were.
    ``trials``: the study's trials when the caller has just read them."""
    import optuna

    now = time.time()
    me = host_id()
    failed = []
    running = optuna.trial.TrialState.RUNNING
    for t in study.get_trials(deepcopy=False, states=(running,)) if trials is None else [t for t in trials if t.state == running]:
        attrs = t.user_attrs
        beat = float(attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else now))
        dead_here = attrs.get("host") == me and "pid" in attrs and not pid_alive(int(attrs["pid"]))
        if not dead_here and now - beat < grace:
            continue
        try:
            # who recovered it: that process writes its FAILED run, unless it dies first (see sync)
            study.set_user_attr(f"{ATTR_INTERRUPTED}_{t.number}", {"host": me, "pid": os.getpid()})
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        except Exception:  # another worker recovered it first
            continue
        failed.append(t)
        if ATTR_REQUEUED not in attrs and t.params:
            study.enqueue_trial(dict(t.params), user_attrs={ATTR_REQUEUED: t.number})
    return failed


class _Heartbeat:
    """Marks this worker's running trial alive so other workers can tell a dead worker's trial from a
    slow one. One thread for the worker's life (a thread per trial cost a millisecond each)."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self.trial: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, trial: Any) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="searchcore-heartbeat")
            self._thread.start()
        self.trial = trial
        try:
            yield
        finally:
            self.trial = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            trial = self.trial
            if trial is None:
                continue
            try:
                trial.set_user_attr("heartbeat", time.time())
                flush(trial.storage, trial._trial_id)
            except Exception:  # a missed heartbeat is harmless (the trial may have just ended); the grace period is generous
                pass

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _Reports:
    """One trial's callbacks from the runner: ``share`` once its architecture is sampled (who runs it
    and what it trains, in one write, before training), ``report`` after each epoch (pruning)."""

    def __init__(self, study: Any, trial: Any, runner: TrialRunner, multi: bool, last_epoch: int) -> None:
        self.study, self.trial, self.runner, self.multi, self.last_epoch = study, trial, runner, multi, last_epoch
        self.shared = time.monotonic()  # when this trial's writes last went to the study

    def share(self) -> None:
        flush(self.study._storage, self.trial._trial_id)
        self.shared = time.monotonic()

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.multi or "val_accuracy" not in metrics:
            return
        self.trial.report(float(metrics["val_accuracy"]), epoch)
        prune = self.trial.should_prune()  # asked at the last epoch too: the pruner records its rung
        # this epoch's value and rung, for other workers' pruners: at most every SHARE_EVERY_S, so short
        # epochs cost one write a second, not one each (this worker's pruner reads them from memory)
        if time.monotonic() - self.shared >= SHARE_EVERY_S:
            self.share()
        # stopping a trial that has trained all its epochs saves nothing; the baseline is the bar: it always finishes
        if prune and epoch < self.last_epoch and not self.runner.is_baseline(self.trial.params):
            raise Pruned(f"pruned at epoch {epoch}")


@dataclass
class WorkerStats:
    finished: int = 0
    stopped_reason: str = ""


def work(study: Any, storage_url: str, runner: TrialRunner, budget: int, tracker: Any = None, parent_run_id: str | None = None,
         timeout: float | None = None, on_trial: Any = None, fail_fast: int = FAIL_FAST_K) -> WorkerStats:
    """One worker's loop: ask under the budget lock, run, tell, record. Returns when the budget is met."""
    stats = WorkerStats()
    started = time.time()
    multi = len(runner.directions) > 1
    last_epoch = runner.cfg.epochs
    fail_fast_open = fail_fast > 0  # until the first k trials are settled; then fail-fast can never stop this search
    heartbeat = _Heartbeat()
    try:
        while True:
            if timeout is not None and time.time() - started >= timeout:
                stats.stopped_reason = "timeout"
                break
            attrs = study.user_attrs
            if attrs.get("stopped"):
                stats.stopped_reason = attrs["stopped"]
                break
            with budget_lock(storage_url, study.study_name):
                trials = study.get_trials(deepcopy=False)
                recovered = recover_interrupted(study, trials=trials)
                for lost in recovered:
                    if tracker is not None and parent_run_id is not None:
                        tracker.log_trial(interrupted_outcome(lost), study.study_name, parent_run_id)
                if recovered:  # their states, the queue and the study's attributes changed
                    trials, attrs = study.get_trials(deepcopy=False), study.user_attrs
                if counted(trials, interrupted(study, attrs)) >= budget:
                    break
                trial = study.ask()
                trial.set_user_attr("host", host_id())
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("heartbeat", time.time())

            reports = _Reports(study, trial, runner, multi, last_epoch)
            with heartbeat.beating(trial):
                outcome = runner.run(trial, trial.number, reports.report, reports.share)
            tell(study, trial, outcome)
            stats.finished += 1
            if tracker is not None and parent_run_id is not None:
                tracker.log_trial(outcome, study.study_name, parent_run_id)
            if on_trial is not None:
                on_trial(outcome)
            if fail_fast_open:
                reason = _fail_fast(study, fail_fast)
                fail_fast_open = reason is not None  # None: the first k trials are settled and did not all fail alike
                if reason:
                    study.set_user_attr("stopped", reason)
                    stats.stopped_reason = reason
                    break
    finally:
        heartbeat.close()
    return stats


def interrupted_outcome(t: Any) -> TrialOutcome:
    """The record of a trial whose worker died mid-trial: FAILED, with what was known of it."""
    from searchcore.arch.spec import decode

    spec = t.user_attrs.get("spec")
    start = t.datetime_start.timestamp() if t.datetime_start else time.time()
    history = [{"epoch": int(step), "val_accuracy": float(v)} for step, v in sorted(t.intermediate_values.items())]
    return TrialOutcome(number=t.number, params=dict(t.params), spec=decode(spec) if spec else None, state=FAILED,
                        reason="interrupted: its worker died (process killed)", history=history, start=start, end=time.time())


def tell(study: Any, trial: Any, o: TrialOutcome) -> None:
    import optuna

    from searchcore.arch.spec import encode

    if o.spec is not None:
        trial.set_user_attr("spec", encode(o.spec))
    if o.metrics:
        trial.set_user_attr("metrics", {k: float(v) for k, v in o.metrics.items()})
    if o.reason:
        trial.set_user_attr("reason", o.reason)
    if o.state == COMPLETE:
        study.tell(trial, o.values)
    elif o.state == PRUNED:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def worker_dead(attrs: dict[str, Any]) -> bool:
    """Whether the process named by ``attrs`` (``host``, ``pid``) is known dead: it ran on this
    host and its pid is gone. A process on another host is never known dead here."""
    return isinstance(attrs, dict) and attrs.get("host") == host_id() and "pid" in attrs and not pid_alive(int(attrs["pid"]))


def resume_stopped(study: Any) -> None:
    """A new ``searchcore search`` on a study that fail-fast stopped: the user fixed the cause, so
    go on. Fail-fast then judges only the trials from here on, not the old failures again."""
    if study.user_attrs.get("stopped"):
        numbers = [t.number for t in study.get_trials(deepcopy=False)]
        study.set_user_attr(ATTR_FAIL_FAST_AFTER, max(numbers, default=-1))
        study.set_user_attr("stopped", "")


def _fail_fast(study: Any, k: int) -> str | None:
    """When the first ``k`` trials all failed with the same error, stop instead of burning the budget.

    Returns the reason to stop, "" to go on, or None once the answer is final: the first ``k``
    trials finished without all failing alike and no unfinished trial can still come before them
    (finished trials never change), so the worker stops asking (two study reads per trial saved).
    """
    import optuna

    if k <= 0:
        return None
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    lost = interrupted(study)
    after = int(study.user_attrs.get(ATTR_FAIL_FAST_AFTER, -1))
    done = [t for t in trials if t.state != S.RUNNING and t.state != S.WAITING and t.number not in lost and t.number > after]
    if len(done) < k:
        return ""
    first = sorted(done, key=lambda t: t.number)[:k]
    reasons = {t.user_attrs.get("reason", "") for t in first}
    if all(t.state == S.FAIL for t in first) and len(reasons) == 1:
        return f"stopped early: the first {k} trials all failed with: {reasons.pop()}"
    last = first[-1].number
    pending = any(t.state in (S.RUNNING, S.WAITING) and after < t.number < last and t.number not in lost for t in trials)
    return "" if pending else None


def study_storage(url: str) -> Any:
    """The store a worker runs trials against: its running trials' writes go out in batches (see
    batching.py) over the cache Optuna itself puts on RDB stores."""
    import optuna

    return BatchedStorage(optuna.storages.get_storage(open_storage(url)))


def create_or_load(name: str, storage_url: str, directions: list[str], sampler: Any, pruner: Any) -> Any:
    import optuna

    storage = study_storage(storage_url)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        return optuna.create_study(study_name=name, storage=storage, directions=directions, sampler=sampler, pruner=pruner)
    if [d.name.lower() for d in study.directions] != directions:
        raise UsageError(f"--name {name}: the existing study optimises {[d.name.lower() for d in study.directions]}, not {directions}; pick another --name")
    return study


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


__all__ = ["work", "create_or_load", "counted", "recover_interrupted", "FAILED", "PRUNED"]
