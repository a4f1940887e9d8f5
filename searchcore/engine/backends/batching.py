"""A worker's running trials, written in batches: one transaction per flush instead of one per write.

Optuna's storages commit every parameter, attribute and intermediate value on its own: ~30 commits
for one trial of the default space, most of the bookkeeping cost of a short trial. A worker owns the
trials it asks for, so it keeps their writes in memory and sends them together where others need to
see them: once the architecture is sampled (who runs the trial and what it trains, for crash recovery),
after a reported epoch at most once a second (pruners in other workers), on each heartbeat, and at
tell in the same transaction as the trial's final state. Reads of an owned trial are answered from memory, so
this worker's sampler and pruner see every write at once. A worker killed mid-trial loses at most
the writes since its last flush, of a trial that recovery fails anyway.

RDB stores get one ``INSERT`` per table per flush and journal stores one append of all the
operations; any other store gets the writes one by one.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections.abc import Container, Sequence
from typing import Any

from optuna import distributions
from optuna.storages import BaseStorage
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# pending operations of one trial: params in order, attributes and intermediate values last-write-wins
_Pending = dict[str, Any]


def _empty() -> _Pending:
    return {"params": [], "user": {}, "system": {}, "steps": {}}


class BatchedStorage(BaseStorage):
    """Wraps an Optuna storage; trials this process creates (or pops from the queue) are buffered."""

    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner
        self._owned: dict[int, FrozenTrial] = {}
        self._study_of: dict[int, int] = {}
        self._pending: dict[int, _Pending] = {}
        self._dists: dict[tuple[int, str], distributions.BaseDistribution] = {}
        self._study_ids: dict[str, int] = {}
        self._waiting: dict[int, int] = {}  # queued trials seen by this process -> their study (ask pops one)
        self._lock = threading.RLock()
        self._told: tuple[int, FrozenTrial] | None = None  # the trial this process just finished, for tell's read back

    # --- owned trials -------------------------------------------------------------------------

    def _own(self, study_id: int, trial_id: int, created: bool = False) -> None:
        """``created``: this process just created it, so Optuna's cache holds it as it is (a popped queued
        trial's cached copy still says WAITING: that one is read from the store)."""
        frozen = (self._cached(trial_id) if created else None) or self._inner.get_trial(trial_id)
        with self._lock:
            self._owned[trial_id] = copy.deepcopy(frozen)
            self._study_of[trial_id] = study_id
            self._pending[trial_id] = _empty()

    def _cached(self, trial_id: int) -> FrozenTrial | None:
        """The trial as Optuna's cache over an RDB store holds it right after creating it (saves a read)."""
        where = getattr(self._inner, "_trial_id_to_study_id_and_number", None)
        if not where or trial_id not in where:
            return None
        study_id, number = where[trial_id]
        try:
            return self._inner._studies[study_id].trials[number]
        except (AttributeError, KeyError):  # another Optuna's cache layout: read it from the store
            return None

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = self._inner.create_new_trial(study_id, template_trial)
        if template_trial is None:  # a fresh RUNNING trial for this process (study.ask)
            self._own(study_id, trial_id, created=True)
        return trial_id

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        rdb = _rdb_of(self._inner)
        if trial_id in self._owned and state.is_finished() and rdb is not None:  # tell: the last writes and the end, one transaction
            with self._lock:
                pending, self._pending[trial_id] = self._pending[trial_id], _empty()
            ok = _finish_rdb(rdb, trial_id, pending, state, values)
        else:
            if trial_id in self._owned:
                self.flush(trial_id)
            ok = self._inner.set_trial_state_values(trial_id, state, values)
        with self._lock:
            if trial_id in self._owned and state.is_finished():
                frozen = self._owned.pop(trial_id)
                del self._study_of[trial_id], self._pending[trial_id]
                if ok:  # Optuna's tell reads the finished trial back at once: answered from here, not the store
                    frozen.state, frozen.values = state, list(values) if values is not None else None
                    frozen.datetime_complete = datetime.datetime.now()
                    self._told = (trial_id, frozen)
        if ok and state == TrialState.RUNNING and trial_id in self._waiting:  # popped from the queue by this process
            self._own(self._waiting.pop(trial_id), trial_id)
        return ok

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution: distributions.BaseDistribution) -> None:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None:
                self._inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)
                return
            self._check_distribution(self._study_of[trial_id], param_name, distribution)
            frozen.params[param_name] = distribution.to_external_repr(param_value_internal)
            frozen.distributions[param_name] = distribution
            self._pending[trial_id]["params"].append((param_name, param_value_internal, distribution))

    def _check_distribution(self, study_id: int, name: str, distribution: distributions.BaseDistribution) -> None:
        """What Optuna checks on each param write: one name keeps one kind of distribution in a study."""
        known = self._dists.get((study_id, name))
        if known is None:
            earlier = (t.distributions[name] for t in self._inner.get_all_trials(study_id, deepcopy=False) if name in t.distributions)
            known = next(earlier, distribution)
            self._dists[(study_id, name)] = known
        distributions.check_distribution_compatibility(known, distribution)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None:
                self._inner.set_trial_intermediate_value(trial_id, step, intermediate_value)
                return
            frozen.intermediate_values[step] = intermediate_value
            self._pending[trial_id]["steps"][step] = intermediate_value

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr("user", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_attr("system", trial_id, key, value)

    def _set_attr(self, kind: str, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is None:
                setter = self._inner.set_trial_user_attr if kind == "user" else self._inner.set_trial_system_attr
                setter(trial_id, key, value)
                return
            json.dumps(value)  # not JSON-serialisable: fail here, as Optuna's own write would
            (frozen.user_attrs if kind == "user" else frozen.system_attrs)[key] = value
            self._pending[trial_id][kind][key] = value

    def flush(self, trial_id: int | None = None) -> None:
        """Write the buffered writes of one owned trial (or of all) in one batch."""
        with self._lock:
            ids = [trial_id] if trial_id is not None else list(self._pending)
            for tid in ids:
                pending = self._pending.get(tid)
                if pending is None or not any(pending.values()):
                    continue
                self._pending[tid] = _empty()
                _write(self._inner, tid, pending)

    # --- reads: owned trials from memory ---------------------------------------------------------

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            frozen = self._owned.get(trial_id)
            if frozen is not None:
                return copy.deepcopy(frozen)
            if self._told is not None and self._told[0] == trial_id:
                frozen, self._told = self._told[1], None
                return frozen
        return self._inner.get_trial(trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if states is not None and TrialState.WAITING in states:  # ask's look at the queue, before it pops one
            self._waiting.update((t._trial_id, study_id) for t in trials if t.state == TrialState.WAITING)
        if not self._owned:
            return trials
        with self._lock:
            for i, t in enumerate(trials):
                mine = self._owned.get(t._trial_id)
                if mine is not None:  # a snapshot even without deepcopy, as a read of the store would be
                    trials[i] = copy.deepcopy(mine)
        return trials

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.get_trial(trial_id).user_attrs if trial_id in self._owned else self._inner.get_trial_user_attrs(trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.get_trial(trial_id).system_attrs if trial_id in self._owned else self._inner.get_trial_system_attrs(trial_id)

    # --- everything else: the wrapped storage ----------------------------------------------------

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._study_ids = {name: sid for name, sid in self._study_ids.items() if sid != study_id}
        self._inner.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._inner.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._inner.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        """Cached: Optuna's Hyperband pruner looks the study up by name for every sampled param."""
        sid = self._study_ids.get(study_name)
        if sid is None:
            sid = self._study_ids[study_name] = self._inner.get_study_id_from_name(study_name)
        return sid

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._inner.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._inner.get_all_studies()

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def remove_session(self) -> None:
        if hasattr(self._inner, "remove_session"):
            self._inner.remove_session()


def flush(storage: Any, trial_id: int) -> None:
    """Send a trial's buffered writes now, where the storage buffers them (a no-op elsewhere)."""
    if isinstance(storage, BatchedStorage):
        storage.flush(trial_id)


# --- one batch, per kind of store ---------------------------------------------------------------


def _rdb_of(storage: Any) -> Any:
    from optuna.storages import RDBStorage

    inner = getattr(storage, "_backend", storage)  # optuna's _CachedStorage keeps the RDBStorage there
    return inner if isinstance(inner, RDBStorage) else None


def _write(storage: Any, trial_id: int, pending: _Pending) -> None:
    from optuna.storages.journal import JournalStorage

    rdb = _rdb_of(storage)
    if rdb is not None:
        _write_rdb(rdb, trial_id, pending)
    elif isinstance(storage, JournalStorage):
        _write_journal(storage, trial_id, pending)
    else:
        _write_one_by_one(storage, trial_id, pending)


def _write_one_by_one(storage: Any, trial_id: int, p: _Pending) -> None:
    for name, value, dist in p["params"]:
        storage.set_trial_param(trial_id, name, value, dist)
    for key, value in p["user"].items():
        storage.set_trial_user_attr(trial_id, key, value)
    for key, value in p["system"].items():
        storage.set_trial_system_attr(trial_id, key, value)
    for step, value in p["steps"].items():
        storage.set_trial_intermediate_value(trial_id, step, value)


def _write_rdb(rdb: Any, trial_id: int, p: _Pending) -> None:
    """One transaction: the trial must still be updatable, then the pending rows (see _insert_rdb)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        rdb.check_trial_is_updatable(trial_id, trial.state)
        _insert_rdb(session, trial_id, p)


def _finish_rdb(rdb: Any, trial_id: int, p: _Pending, state: TrialState, values: Sequence[float] | None) -> bool:
    """A trial's last pending writes, its values and its final state in one transaction: what
    ``RDBStorage.set_trial_state_values`` does for the state, after the rows of ``_write_rdb``."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import exc

    try:
        with _create_scoped_session(rdb.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            rdb.check_trial_is_updatable(trial_id, trial.state)
            _insert_rdb(session, trial_id, p)
            for objective, value in enumerate(values or ()):
                rdb._set_trial_value_without_commit(session, trial, objective, value)
            trial.state = state
            trial.datetime_complete = datetime.datetime.now()
    except exc.IntegrityError:
        return False
    return True


def _insert_rdb(session: Any, trial_id: int, p: _Pending) -> None:
    """One INSERT per table (attributes and steps written before are replaced: delete, then insert,
    which every SQL dialect does alike)."""
    import sqlalchemy
    from optuna.storages._rdb import models

    if p["params"]:
        session.execute(sqlalchemy.insert(models.TrialParamModel), [
            {"trial_id": trial_id, "param_name": name, "param_value": value, "distribution_json": distributions.distribution_to_json(dist)}
            for name, value, dist in p["params"]])
    for model, attrs in ((models.TrialUserAttributeModel, p["user"]), (models.TrialSystemAttributeModel, p["system"])):
        if attrs:
            session.execute(sqlalchemy.delete(model).where(model.trial_id == trial_id, model.key.in_(list(attrs))))
            session.execute(sqlalchemy.insert(model), [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])
    if p["steps"]:
        m = models.TrialIntermediateValueModel
        session.execute(sqlalchemy.delete(m).where(m.trial_id == trial_id, m.step.in_(list(p["steps"]))))
        rows = []
        for step, value in p["steps"].items():
            stored, kind = m.intermediate_value_to_stored_repr(value)
            rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
        session.execute(sqlalchemy.insert(m), rows)


def _write_journal(journal: Any, trial_id: int, p: _Pending) -> None:
    """One append of all the operations, in the log format of the journal's own single writes."""
    from optuna.storages.journal._storage import JournalOperation

    logs: list[tuple[int, dict[str, Any]]] = []
    logs += [(JournalOperation.SET_TRIAL_PARAM, {"trial_id": trial_id, "param_name": name, "param_value_internal": value,
                                                 "distribution": distributions.distribution_to_json(dist)}) for name, value, dist in p["params"]]
    logs += [(JournalOperation.SET_TRIAL_USER_ATTR, {"trial_id": trial_id, "user_attr": {k: v}}) for k, v in p["user"].items()]
    logs += [(JournalOperation.SET_TRIAL_SYSTEM_ATTR, {"trial_id": trial_id, "system_attr": {k: v}}) for k, v in p["system"].items()]
    logs += [(JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE, {"trial_id": trial_id, "step": step, "intermediate_value": value})
             for step, value in p["steps"].items()]
    with journal._thread_lock:
        worker_id = journal._replay_result.worker_id
        journal._backend.append_logs([{"op_code": op, "worker_id": worker_id, **fields} for op, fields in logs])
        journal._sync_with_backend()
