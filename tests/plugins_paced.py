"""Test plugin: evaluator ``paced`` reports four epochs, the third after a pause longer than the
worker's share interval, and, just before reporting the fourth, reads its own running trial from
the study store the way another worker would (``$SEARCHCORE_TEST_STUDY_URL``). The steps it saw
come back as the metric ``steps_seen`` (a bitmask: bit n = epoch n's value was in the store)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from searchcore.plugins.hookspecs import hookimpl

NAME = "plugins_paced"
PAUSE_S = 1.3


def paced(spec: dict, config: Any, report: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
    import optuna

    from searchcore.engine.backends.storage import open_storage

    for epoch in (1, 2, 3):
        if epoch == 3:
            time.sleep(PAUSE_S)
        report(epoch, {"val_accuracy": 0.1 * epoch})
    study = optuna.load_study(study_name=config.name, storage=open_storage(os.environ["SEARCHCORE_TEST_STUDY_URL"]))
    running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    seen = sum(1 << step for step in running[0].intermediate_values) if len(running) == 1 else -1
    report(4, {"val_accuracy": 0.4})
    return {"val_accuracy": 0.4, "steps_seen": float(seen), "params": 0.0, "macs": 0.0}


@hookimpl
def searchcore_evaluators(register: Callable[..., None]) -> None:
    register("paced", paced)
