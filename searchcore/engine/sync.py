"""Write the trials MLflow is missing (after a tracking outage), exactly once.

The study storage is the source of truth; each MLflow trial run carries the study name and
trial number as tags, so running sync twice writes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from searchcore.train.outcome import COMPLETE, FAILED, PRUNED, TrialOutcome


def outcome_from_trial(t: Any, lost: set[int]) -> TrialOutcome | None:
    import optuna

    from searchcore.arch.spec import decode

    S = optuna.trial.TrialState
    state = {S.COMPLETE: COMPLETE, S.PRUNED: PRUNED, S.FAIL: FAILED}.get(t.state)
    if state is None:
        return None
    spec = t.user_attrs.get("spec")
    reason = t.user_attrs.get("reason", "")
    if t.number in lost:
        reason = "interrupted: its worker died (process killed)"
    start = t.datetime_start.timestamp() if t.datetime_start else 0.0
    end = t.datetime_complete.timestamp() if t.datetime_complete else start
    history = [{"epoch": int(s), "val_accuracy": float(v)} for s, v in sorted(t.intermediate_values.items())]
    return TrialOutcome(number=t.number, params=dict(t.params), spec=decode(spec) if spec else None, state=state, reason=reason,
                        values=list(t.values or []), metrics=dict(t.user_attrs.get("metrics", {})), history=history, start=start, end=end,
                        tags={"searchcore.synced": "true"})


def sync_study(study: Any, tracking_uri: str, parent_run_id: str | None) -> int:
    """Write every finished trial that has no MLflow run yet; returns how many were written.
    When the study is finished and its parent run was left open (the outage outlasted the
    search), close it with the trial counts, so no run stays RUNNING."""
    from searchcore.engine.config import parse_space
    from searchcore.engine.results import ATTR_CONFIG, ATTR_PARENT, ATTR_SPACE
    from searchcore.track.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment=study.study_name)
    if parent_run_id is None or tracker.find_search_run(study.study_name) is None:
        cfg = parse_space(study.user_attrs.get(ATTR_SPACE, ""), f"study {study.study_name}")
        parent_run_id = tracker.find_search_run(study.study_name) or tracker.start_search(
            study.study_name, study.user_attrs.get(ATTR_CONFIG, cfg.as_dict()), cfg.text, {"synced": True})
        study.set_user_attr(ATTR_PARENT, parent_run_id)
    written = write_missing(study, tracker, parent_run_id)
    close_parent_if_done(study, tracker, parent_run_id)
    return written


def write_missing(study: Any, tracker: Any, parent_run_id: str, only: Callable[[Any], bool] | None = None) -> int:
    """Write the finished trials (those ``only`` accepts) that have no complete run, synchronously.
    A run cut short mid-write is deleted first, so each trial ends with exactly one run."""
    from searchcore.engine.backends.optuna import interrupted

    partial: dict[int, list[str]] = {}
    present = tracker.logged_trials(study.study_name, partial)
    lost = interrupted(study)
    written = 0
    for t in study.get_trials(deepcopy=False):
        if t.number in present or (only is not None and not only(t)):
            continue
        o = outcome_from_trial(t, lost)
        if o is None:
            continue
        for run_id in partial.get(t.number, []):
            tracker.client.delete_run(run_id)
        tracker.write_trial(o, study.study_name, parent_run_id, {})
        written += 1
    return written


def lost_by_dead_workers(study: Any) -> Callable[[Any], bool]:
    """Trials whose writer is known dead, so nobody else will write their runs: finished by a
    worker that died before its tracker wrote them (MLflow writes are asynchronous), or found
    interrupted by a worker that died before writing the FAILED run."""
    from searchcore.engine.backends.optuna import ATTR_INTERRUPTED, worker_dead

    attrs = study.user_attrs

    def accept(t: Any) -> bool:
        recovered_by = attrs.get(f"{ATTR_INTERRUPTED}_{t.number}")
        if recovered_by is not None:
            return recovered_by is True or worker_dead(recovered_by)
        return worker_dead(t.user_attrs)

    return accept


def close_parent_if_done(study: Any, tracker: Any, parent_run_id: str) -> bool:
    """Close a parent run left RUNNING when no trial runs or waits and the budget is used up (or
    fail-fast stopped the search). Returns whether it closed it."""
    import optuna

    from searchcore.engine.backends.optuna import counted, interrupted, state_counts

    if tracker.client.get_run(parent_run_id).info.status != "RUNNING":
        return False
    trials = study.get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    if any(t.state in (S.RUNNING, S.WAITING) for t in trials):
        return False
    budget = study.user_attrs.get("budget")
    if not study.user_attrs.get("stopped") and (budget is None or counted(trials, interrupted(study)) < int(budget)):
        return False
    tracker.end_search(parent_run_id, metrics={f"trials_{k.lower()}": v for k, v in state_counts(study).items()})
    return True
