"""The worker's heartbeat (searchcore/engine/backends/optuna.py): one thread for the worker's life
beats whichever trial it runs, on a real SQLite study, so other workers can tell it is alive."""

from __future__ import annotations

import time
from pathlib import Path

import optuna

from searchcore.engine.backends.optuna import _Heartbeat, study_storage
from searchcore.engine.backends.storage import open_storage


def beats(url: str, number: int) -> float | None:
    """The trial's heartbeat as another process reads it from the store."""
    study = optuna.load_study(study_name="hb", storage=open_storage(url))
    return study.trials[number].user_attrs.get("heartbeat")


def test_one_thread_beats_each_running_trial_and_stops_with_the_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="hb", storage=study_storage(url))
    heartbeat = _Heartbeat(interval=0.05)
    try:
        for number in range(2):
            trial = study.ask()
            started = time.time()
            with heartbeat.beating(trial):
                time.sleep(0.4)
                beat = beats(url, number)  # flushed by the heartbeat thread, not by tell
            assert beat is not None and beat >= started, (number, beat, started)
            study.tell(trial, 0.5)
        thread = heartbeat._thread
        assert thread is not None and thread.is_alive()
    finally:
        heartbeat.close()
    assert not thread.is_alive()
    done = beats(url, 1)
    time.sleep(0.15)
    assert beats(url, 1) == done  # no trial, no beats
