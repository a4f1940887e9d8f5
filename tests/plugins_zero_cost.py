"""A test plugin for the zero-cost rung: a screening sampler that asks the search's ``scorer`` and a
proxy of its own, so the tests see a plugin-provided strategy and proxy go through the real search.

Load it with ``--plugin plugins_zero_cost`` and ``tests/`` on the path. ``SCREENED`` candidates
are scored before each trial; the best-scoring one is proposed. ``CALLS`` keeps what each factory
was given (for the wiring tests).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import optuna

from searchcore.engine.strategies import RandomTrial
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space.dimensions import sample

SCREENED = 3
CALLS: list[dict[str, Any]] = []


class ScreeningSampler(optuna.samplers.RandomSampler):
    """Random search with a zero-cost first rung: of ``SCREENED`` random candidates, the best-scoring is tried."""

    def __init__(self, seed: int, dimensions: list, scorer: Callable[[dict[str, Any]], float | None] | None) -> None:
        super().__init__(seed=seed)
        self.rng = random.Random(seed)
        self.dimensions, self.scorer = dimensions, scorer
        self.chosen: dict[str, Any] = {}
        self.scores: list[float | None] = []

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().before_trial(study, trial)
        candidates = [sample(RandomTrial(self.rng), self.dimensions) for _ in range(SCREENED)]
        scores = [self.scorer(c) if self.scorer is not None else None for c in candidates]
        self.scores.extend(scores)
        ranked = sorted(zip(scores, range(SCREENED)), key=lambda si: float("-inf") if si[0] is None else si[0], reverse=True)
        self.chosen = candidates[ranked[0][1]]

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, name: str,
                           distribution: optuna.distributions.BaseDistribution) -> Any:
        if name in self.chosen:
            return self.chosen[name]
        return super().sample_independent(study, trial, name, distribution)


def _screening(seed: int, multi_objective: bool, dimensions: list, scorer: Any = None) -> ScreeningSampler:
    CALLS.append({"factory": "zc-screen", "scorer": scorer})
    return ScreeningSampler(seed, dimensions, scorer)


def _plain(seed: int, multi_objective: bool) -> Any:
    CALLS.append({"factory": "zc-plain"})
    return optuna.samplers.RandomSampler(seed=seed)


def modules(model: Any, batch: Any) -> float:
    """A toy proxy: how many modules the model has (a plugin's own proxy, to combine with naswot)."""
    return float(sum(1 for _ in model.modules()))


@hookimpl
def searchcore_samplers(register: Callable[..., None]) -> None:
    register("zc-screen", _screening)
    register("zc-plain", _plain)


@hookimpl
def searchcore_zero_cost(register: Callable[..., None]) -> None:
    register("plugins_zero_cost.modules", modules)
