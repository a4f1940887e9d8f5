"""What one trial produced, in the form every backend and tracker shares (no Optuna, Ray or MLflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPLETE, PRUNED, FAILED = "COMPLETE", "PRUNED", "FAILED"
TAG_BASELINE = "searchcore.baseline"  # "true" on the trial of the unimproved backbone (every plugin off)


@dataclass
class TrialOutcome:
    """What a trial produced; enough for any tracker to write its record."""

    number: int
    params: dict[str, Any]
    spec: dict | None = None
    state: str = COMPLETE
    reason: str = ""
    values: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    traceback: str = ""
    start: float = 0.0
    end: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)


class Pruned(Exception):
    """Raised by a backend's ``report`` to stop a trial early (Optuna's TrialPruned is mapped to it)."""


__all__ = ["COMPLETE", "FAILED", "PRUNED", "TAG_BASELINE", "Pruned", "TrialOutcome"]
