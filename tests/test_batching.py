"""A worker's running trial written in batches (searchcore/backends/batching.py), on real stores.

What must hold: what the worker reads of its own trial is every write at once; what others read is
exactly what the unbatched storage would have written, once flushed; a study driven through the
batching storage ends byte-for-byte like one driven through Optuna's own; and far fewer commits.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy

from searchcore.engine.backends.batching import BatchedStorage
from searchcore.engine.backends.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "journal":
        return f"journal:///{tmp_path / 'study.journal'}"
    return request.getfixturevalue("pg_url")


def batched(url: str) -> BatchedStorage:
    return BatchedStorage(optuna.storages.get_storage(open_storage(url)))


def other_reader(url: str, name: str) -> optuna.Study:
    """Another process's view: a fresh storage object on the same store."""
    return optuna.load_study(study_name=name, storage=open_storage(url))


def objective_with_writes(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -3, 3)
    k = trial.suggest_categorical("k", [3, 5, 7])
    depth = trial.suggest_int("depth", 1, 4)
    trial.set_user_attr("spec", {"k": k, "depth": depth})
    score = 0.0
    for step in range(3):
        score = -((x - 1) ** 2) + 0.1 * depth + step * 0.01
        trial.report(score, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score


def test_writes_reach_the_store_only_when_flushed_and_reads_see_them_at_once(url: str) -> None:
    storage = batched(url)
    study = optuna.create_study(study_name="b", storage=storage, direction="maximize")
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    trial.suggest_categorical("k", [3, 5])
    trial.set_user_attr("host", "h1")
    trial.report(0.25, 0)

    mine = storage.get_trial(trial._trial_id)
    assert mine.params["x"] == x and mine.user_attrs["host"] == "h1" and mine.intermediate_values == {0: 0.25}
    assert study.get_trials()[0].params == mine.params  # this worker's sampler and pruner see its own writes
    theirs = other_reader(url, "b").trials[0]
    assert theirs.state == optuna.trial.TrialState.RUNNING and theirs.params == {} and theirs.user_attrs == {}

    storage.flush(trial._trial_id)
    theirs = other_reader(url, "b").trials[0]
    assert theirs.params == mine.params and theirs.user_attrs == {"host": "h1"} and theirs.intermediate_values == {0: 0.25}

    trial.set_user_attr("host", "h2")  # a later write replaces the flushed one
    trial.report(0.5, 1)
    study.tell(trial, 0.5)  # tell flushes before it finishes the trial
    theirs = other_reader(url, "b").trials[0]
    assert theirs.state == optuna.trial.TrialState.COMPLETE and theirs.value == 0.5
    assert theirs.user_attrs == {"host": "h2"} and theirs.intermediate_values == {0: 0.25, 1: 0.5}
    assert theirs.distributions == mine.distributions


def test_a_batched_study_ends_exactly_like_an_unbatched_one(url: str) -> None:
    def run(storage: optuna.storages.BaseStorage, name: str) -> list[optuna.trial.FrozenTrial]:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4),
                                    pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=3))
        study.enqueue_trial({"x": 1.0, "k": 5, "depth": 2})  # a queued trial popped by ask is owned too
        study.optimize(objective_with_writes, n_trials=14)
        return other_reader(url, name).trials

    plain = run(open_storage(url), "same")  # one name: Hyperband picks brackets by study name and trial number
    optuna.delete_study(study_name="same", storage=open_storage(url))
    mine = run(batched(url), "same")
    assert [t.state for t in mine].count(optuna.trial.TrialState.PRUNED) >= 1  # the pruner's rung attrs went through too
    for a, b in zip(plain, mine, strict=True):
        assert (a.number, a.state, a.values, a.params, a.distributions, a.user_attrs, a.intermediate_values) == \
               (b.number, b.state, b.values, b.params, b.distributions, b.user_attrs, b.intermediate_values)
        assert a.system_attrs == b.system_attrs


def test_an_incompatible_distribution_is_refused_at_suggest_time(url: str) -> None:
    study = optuna.create_study(study_name="d", storage=batched(url))
    first = study.ask()
    first.suggest_int("depth", 1, 4)
    study.tell(first, 1.0)
    trial = study.ask()
    with pytest.raises(ValueError, match="different distribution"):
        trial.suggest_float("depth", 0.0, 1.0)


def test_a_trial_finished_by_someone_else_refuses_the_buffered_writes(url: str) -> None:
    storage = batched(url)
    study = optuna.create_study(study_name="f", storage=storage)
    trial = study.ask()
    trial.set_user_attr("host", "me")
    storage.flush(trial._trial_id)
    other_reader(url, "f").tell(trial.number, state=optuna.trial.TrialState.FAIL)  # e.g. recovered as dead
    trial.suggest_float("x", 0, 1)
    with pytest.raises(RuntimeError):  # Optuna's UpdateFinishedTrialError, as for an unbatched write
        storage.flush(trial._trial_id)


def test_one_trial_costs_a_handful_of_commits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    commits = {"plain": 0, "batched": 0}

    def one_trial(study: optuna.Study) -> None:
        trial = study.ask()
        for k in ("host", "pid", "heartbeat"):
            trial.set_user_attr(k, 1)
        for i in range(20):
            trial.suggest_categorical(f"p{i}", [1, 2, 3])
        trial.report(0.5, 0)
        study.tell(trial, 0.5)

    def run(storage: optuna.storages.BaseStorage, key: str) -> None:
        study = optuna.create_study(study_name=key, storage=storage)
        one_trial(study)  # the first trial also learns the study's distributions
        listener = lambda *a: commits.__setitem__(key, commits[key] + 1)  # noqa: E731
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", listener)  # transactions, reads included
        try:
            one_trial(study)
        finally:
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", listener)

    run(open_storage(url), "plain")
    run(batched(url), "batched")
    assert commits["plain"] >= 25, commits
    assert commits["batched"] <= 4, commits  # ask: queue read, create (owned from the cache, no read back); a study read; tell: one for all


def test_tell_writes_the_last_values_and_the_end_in_one_transaction_and_reads_nothing_back(url: str) -> None:
    """A trial that reported epochs nobody flushed ends with one commit on an RDB store: the pending
    rows, its value and its state together; Optuna's read back of the finished trial costs no query."""
    if url.startswith("journal"):
        pytest.skip("the journal appends its operations in one write already")
    storage = batched(url)
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_int("depth", 1, 4)
    for step in range(5):
        trial.report(0.1 * step, step)
    commits = [0]
    listener = lambda *a: commits.__setitem__(0, commits[0] + 1)  # noqa: E731
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", listener)
    try:
        frozen = study.tell(trial, 0.9)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", listener)
    assert commits[0] == 1, commits
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.values == [0.9]
    seen = other_reader(url, "t").trials[0]
    assert (seen.state, seen.values, seen.intermediate_values) == (optuna.trial.TrialState.COMPLETE, [0.9], {s: 0.1 * s for s in range(5)})
    assert seen.params == {"depth": frozen.params["depth"]} and seen.datetime_complete is not None


PACED_SPACE = """\
name: paced
dataset: digits
backbone: seed-cnn
objectives: [val_accuracy]
budget: {trials: 1, epochs: 4}
search: {sampler: random, pruner: median, seed: 0, evaluator: paced}
"""


def test_a_running_trials_epochs_reach_the_study_once_a_second_and_all_at_tell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short epochs share one write: epochs 1 and 2 (at once) wait, epoch 3 (after a pause longer
    than the share interval) takes them out with it, epoch 4 waits for tell, which writes it."""
    import plugins_paced

    from searchcore.cli import main
    from searchcore.engine.backends.optuna import SHARE_EVERY_S

    assert plugins_paced.PAUSE_S > SHARE_EVERY_S
    url = f"sqlite:///{tmp_path / 'study.db'}"
    monkeypatch.setenv("SEARCHCORE_TEST_STUDY_URL", url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paced.yaml").write_text(PACED_SPACE)
    code = main(["--plugin", "plugins_paced", "search", "paced.yaml", "--storage", url, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--no-baseline", "--no-register", "--quiet"])
    assert code == 0
    trial = other_reader(url, "paced").trials[0]
    assert trial.user_attrs["metrics"]["steps_seen"] == (1 << 1) + (1 << 2) + (1 << 3)
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: pytest.approx(0.3), 4: 0.4}
