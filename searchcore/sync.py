"""Write the trials MLflow is missing (after a tracking outage), exactly once.

The study storage is the source of truth; each MLflow trial run carries the study name and
trial number as tags, so running sync twice writes nothing the second time.
"""

from __future__ import annotations

from typing import Any

from searchcore.runner import COMPLETE, FAILED, PRUNED, TrialOutcome


def outcome_from_trial(t: Any, lost: set[int]) -> TrialOutcome | None:
    import optuna

    from searchcore.spec import decode

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
    """Write every finished trial that has no MLflow run yet; returns how many were written."""
    from searchcore.backends.optuna_backend import interrupted
    from searchcore.config import parse_space
    from searchcore.search_api import ATTR_CONFIG, ATTR_PARENT, ATTR_SPACE
    from searchcore.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment=study.study_name)
    if parent_run_id is None or tracker.find_search_run(study.study_name) is None:
        cfg = parse_space(study.user_attrs.get(ATTR_SPACE, ""), f"study {study.study_name}")
        parent_run_id = tracker.find_search_run(study.study_name) or tracker.start_search(
            study.study_name, study.user_attrs.get(ATTR_CONFIG, cfg.as_dict()), cfg.text, {"synced": True})
        study.set_user_attr(ATTR_PARENT, parent_run_id)
    present = tracker.logged_trials(study.study_name)
    lost = interrupted(study)
    written = 0
    for t in study.get_trials(deepcopy=False):
        if t.number in present:
            continue
        o = outcome_from_trial(t, lost)
        if o is None:
            continue
        tracker.write_trial(o, study.study_name, parent_run_id, {})
        written += 1
    return written
