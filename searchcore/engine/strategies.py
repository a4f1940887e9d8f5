"""Search strategies for any Optuna search space: regularised evolution and a multi-fidelity promotion rule.

Why they exist next to Optuna's own samplers:

* TPE and random search re-propose configurations they already evaluated; on a small categorical
  space (NAS-Bench-201: 6 edges x 5 ops) a converged TPE spends most of its budget on repeats.
  :class:`EvolutionSampler` never proposes a configuration the study has already seen.
* A cheap early score (a few epochs, a 12-epoch table entry) ranks candidates well enough to
  screen many of them for the price of one full training. :class:`PromotionPruner` lets only the
  best ``1/eta`` of the trials at the screening step go on to full training; the sampler
  ranks every trial, screened or finished, so screening steers where it looks next.

Both read everything from the study's trials (no hidden state other than caches of finished
trials), so they work with any storage, several workers and a resumed study.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Key = tuple[float, ...]

__all__ = [
    "EvolutionSampler",
    "NoRepeatSampler",
    "PromotionPruner",
    "SeenIndex",
    "fitness_key",
    "multi_fidelity_evolution",
    "multi_fidelity_tpe",
    "param_key",
    "rung_value",
]


# --- ranking trials ---------------------------------------------------------------------------


def _signs(study: Study) -> list[float]:
    return [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]


def _finite(v: float | None) -> float:
    return -math.inf if v is None or math.isnan(v) else v


def rung_value(trial: FrozenTrial, rung_step: int | None) -> tuple[int, float] | None:
    """``(step, value)`` of the first intermediate report at or after ``rung_step`` (the first report when None)."""
    steps = sorted(s for s in trial.intermediate_values if rung_step is None or s >= rung_step)
    if not steps:
        return None
    return steps[0], trial.intermediate_values[steps[0]]


def at_rung(study: Study, trial: FrozenTrial, rung_step: int | None) -> tuple[int, float] | None:
    """The trial's (step, value) when its latest report is its screening rung in a one-objective study;
    None before the rung, after it (decided then) or with several objectives (never pruned)."""
    if len(study.directions) > 1:
        return None
    mine = rung_value(trial, rung_step)
    if mine is None or trial.last_step != mine[0]:
        return None
    return mine


def fitness_key(trial: FrozenTrial, signs: Sequence[float]) -> Key | None:
    """A single-objective sort key, larger is better, comparable across fidelities.

    Finished trials outrank stopped ones; among stopped trials the one that got further wins, then
    its last reported value: the order Optuna's TPE uses, so a screened trial and a fully trained one
    can meet in one tournament without mixing the scales of their scores.
    """
    sign = signs[0]
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        return (2.0, 0.0, sign * _finite(trial.values[0]))
    if trial.intermediate_values:
        step = max(trial.intermediate_values)
        return (1.0, float(step), sign * _finite(trial.intermediate_values[step]))
    return None


def param_key(params: dict[str, Any], names: Sequence[str]) -> tuple:
    """Hashable identity of a configuration over ``names`` (floats rounded to 12 digits)."""
    return tuple(round(v, 12) if isinstance(v, float) else v for v in (params.get(n) for n in names))


def _compatible(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a legal value of ``dist`` (a parent's value may not fit a child's distribution)."""
    if isinstance(dist, CategoricalDistribution):
        return any(type(value) is type(c) and value == c for c in dist.choices)
    low, high = getattr(dist, "low", None), getattr(dist, "high", None)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low is not None and low <= value <= high


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


# --- never the same configuration twice ---------------------------------------------------------


class SeenIndex:
    """The configurations a study already holds (any state), over a given set of parameter names.

    Finished trials never change, so their keys are kept between calls; running ones are read afresh.
    Only trials with exactly those parameters count, so a conditional space is never over-deduplicated.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[set[int], set[tuple]]] = {}

    def keys(self, study: Study, trial: FrozenTrial, names: Sequence[str]) -> set[tuple]:
        names = list(names)
        wanted = set(names)
        done, keys = self._cache.setdefault((id(study._storage), study._study_id, tuple(names)), (set(), set()))
        running = set()
        for t in study.get_trials(deepcopy=False):
            if t._trial_id in done or t.number == trial.number:
                continue
            if t.state.is_finished():
                done.add(t._trial_id)
                if set(t.params) == wanted:
                    keys.add(param_key(t.params, names))
            elif set(t.params) == wanted:
                running.add(param_key(t.params, names))
        return keys | running if running else keys


def _mutate_value(
    rng: random.Random,
    fallback: RandomSampler,
    study: Study,
    trial: FrozenTrial,
    name: str,
    dist: BaseDistribution,
    value: Any,
) -> Any:
    """Another value of ``dist``: a different choice, or a fresh uniform draw for a number."""
    if isinstance(dist, CategoricalDistribution):
        others = [c for c in dist.choices if c != value]
        return rng.choice(others) if others else value
    new = value
    for _ in range(8):
        new = fallback.sample_independent(study, trial, name, dist)
        if new != value:
            break
    return new


def _novel(
    start: dict[str, Any],
    names: list[str],
    mutable: list[str],
    seen: set[tuple],
    rng: random.Random,
    mutate: Callable[[str, Any], Any],
    max_attempts: int,
    force: bool,
) -> tuple[dict[str, Any], str | None]:
    """Mutate ``start`` until its key over ``names`` is not in ``seen``; one parameter first, one more every 16 tries.

    With ``force`` at least one parameter always changes (an evolution child differs from its
    parent). A mutable parameter not in ``names`` (a conditional one) is returned as the second
    item, for the caller to change when the trial asks for it. After ``max_attempts`` the last
    candidate is returned even if it repeats.
    """
    candidate: dict[str, Any] = dict(start)
    extra = None
    if not force and param_key(start, names) not in seen:
        return candidate, None
    for attempt in range(max(1, max_attempts)):
        candidate, extra = dict(start), None
        for name in rng.sample(mutable, min(len(mutable), 1 + attempt // 16)):
            if name in start:
                candidate[name] = mutate(name, candidate[name])
            else:
                extra = name
        if extra is not None or param_key(candidate, names) not in seen:
            break
    return candidate, extra


class NoRepeatSampler(BaseSampler):
    """Wraps any sampler so that its joint proposals never repeat a configuration the study already holds.

    A repeat is moved to the nearest unseen configuration by changing one parameter at a time
    (:func:`_novel`), instead of asking the wrapped sampler again, which is costly for TPE and
    usually gives the same answer once it has converged. Parameters of the relative search space
    that the wrapped sampler leaves to independent sampling (TPE's random start-up trials) are
    drawn uniformly here so they can be checked too; the rest is passed through. With
    ``fill_independent=False`` only complete joint proposals are checked and everything else is
    the wrapped sampler's own, draw for draw: a search that never meets a repeat runs exactly as
    the wrapped sampler alone would.
    """

    def __init__(self, sampler: BaseSampler, seed: int | None = None, max_attempts: int = 64, fill_independent: bool = True) -> None:
        self.sampler = sampler
        self.max_attempts = max_attempts
        self.fill_independent = fill_independent
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=None if seed is None else seed + 2)
        self._seen = SeenIndex()

    def __str__(self) -> str:
        return f"NoRepeat({self.sampler})"

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
        self._rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        proposal = dict(self.sampler.sample_relative(study, trial, search_space))
        names = sorted(search_space)
        if not names:
            return proposal
        if not self.fill_independent and any(n not in proposal for n in names):
            return proposal  # a partial proposal (TPE's start-up, one group of a conditional space): the wrapped sampler's own
        for name in names:  # left to independent sampling (TPE's random start-up): drawn here, so it can be checked
            if name not in proposal:
                proposal[name] = self._random.sample_independent(study, trial, name, search_space[name])
        mutable = [n for n in names if not search_space[n].single()]

        def mutate(name: str, value: Any) -> Any:
            return _mutate_value(self._rng, self._random, study, trial, name, search_space[name], value)

        seen = self._seen.keys(study, trial, names)
        return _novel(proposal, names, mutable, seen, self._rng, mutate, self.max_attempts, force=False)[0]

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)


# --- regularised evolution --------------------------------------------------------------------


class EvolutionSampler(BaseSampler):
    """Regularised (ageing) evolution (Real et al. 2019, "Regularized Evolution for Image Classifier ...").

    The population is the ``population_size`` most recent scored trials; a child copies the best
    of ``tournament_size`` of them and mutates one parameter (a categorical one moves to another
    choice, a numeric one is redrawn uniformly). Ageing keeps the search moving instead of
    polishing one early winner. The first ``population_size`` trials are random.

    Trials are ranked by :func:`fitness_key`, so pruned trials take part by their last reported
    value; with several objectives a tournament's winner is one no other entrant dominates.
    With ``avoid_duplicates`` a child that repeats a configuration the study already holds is
    mutated again (one more parameter every 16 attempts), because re-evaluating it costs budget
    and, on a deterministic benchmark, gives nothing new.

    Parameters outside the relative search space (those that exist only under a condition) are
    inherited from the parent when it has them, else drawn at random, so conditional spaces work.
    """

    def __init__(
        self,
        population_size: int = 20,
        tournament_size: int = 5,
        seed: int | None = None,
        avoid_duplicates: bool = True,
        max_attempts: int = 64,
    ) -> None:
        if population_size < 1 or not 1 <= tournament_size <= population_size:
            raise ValueError("need population_size >= 1 and 1 <= tournament_size <= population_size")
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.avoid_duplicates = avoid_duplicates
        self.max_attempts = max_attempts
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=None if seed is None else seed + 1)
        self._spaces: dict[tuple[int, int], IntersectionSearchSpace] = {}
        self._keys: dict[tuple[int, int, int], Any] = {}  # finished trials' fitness, by (storage, study, trial id)
        self._parents: dict[tuple[int, int, int], tuple[dict[str, Any], str | None]] = {}
        self._seen = SeenIndex()
        self._scored_cache: dict[tuple[int, int], tuple[set[int], list[FrozenTrial]]] = {}

    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._random.reseed_rng()

    # -- Optuna's sampler protocol --

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        ident = (id(study._storage), study._study_id)
        if ident not in self._spaces:
            self._spaces[ident] = IntersectionSearchSpace(include_pruned=True)
        space = self._spaces[ident].calculate(study)
        return {name: dist for name, dist in sorted(space.items()) if not dist.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        scored = self._scored(study)
        if len(scored) < self.population_size:
            return {}
        population = scored[-self.population_size :]
        entrants = self._rng.sample(population, self.tournament_size)
        parent = self._winner(entrants, study)
        names = sorted(search_space)
        child = {n: parent.params[n] for n in names if n in parent.params}
        missing = [n for n in names if n not in child]
        for n in missing:  # the parent lacked it (a conditional parameter): draw it
            child[n] = self._random.sample_independent(study, trial, n, search_space[n])
        mutable = sorted(n for n, d in parent.distributions.items() if not d.single())
        seen = self._seen.keys(study, trial, names) if self.avoid_duplicates else set()

        def mutate(name: str, value: Any) -> Any:
            return _mutate_value(self._rng, self._random, study, trial, name, search_space[name], value)

        candidate, extra = _novel(child, names, mutable, seen, self._rng, mutate, self.max_attempts, force=not missing)
        self._parents[self._trial_ident(study, trial)] = (dict(parent.params), extra)
        return candidate

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        parent = self._parents.get(self._trial_ident(study, trial))
        if parent is not None:
            params, extra = parent
            if param_name in params and _compatible(param_distribution, params[param_name]):
                if param_name == extra:
                    return _mutate_value(
                        self._rng, self._random, study, trial, param_name, param_distribution, params[param_name]
                    )
                return params[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._parents.pop(self._trial_ident(study, trial), None)

    # -- helpers --

    @staticmethod
    def _trial_ident(study: Study, trial: FrozenTrial) -> tuple[int, int, int]:
        return (id(study._storage), study._study_id, trial._trial_id)

    def _scored(self, study: Study) -> list[FrozenTrial]:
        """Finished trials with a score, oldest first; finished trials never change, so they are kept."""
        signs = _signs(study)
        ident = (id(study._storage), study._study_id)
        done, scored = self._scored_cache.setdefault(ident, (set(), []))
        added = False
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            if t._trial_id in done:
                continue
            done.add(t._trial_id)
            if len(signs) > 1:
                ok = t.state == TrialState.COMPLETE and t.values is not None
                key = tuple(s * _finite(v) for s, v in zip(signs, t.values)) if ok else None
            else:
                key = fitness_key(t, signs)
            if key is not None:
                self._keys[self._trial_ident(study, t)] = key
                scored.append(t)
                added = True
        if added:
            scored.sort(key=lambda t: t.number)
        return scored

    def _winner(self, entrants: list[FrozenTrial], study: Study) -> FrozenTrial:
        keys = [self._keys[self._trial_ident(study, t)] for t in entrants]
        if len(study.directions) == 1:
            return entrants[max(range(len(entrants)), key=lambda i: (keys[i], -entrants[i].number))]
        front = [i for i in range(len(entrants)) if not any(_dominates(keys[j], keys[i]) for j in range(len(entrants)))]
        return entrants[self._rng.choice(front)]


# --- multi-fidelity promotion -----------------------------------------------------------------


class PromotionPruner(BasePruner):
    """Screen every trial at one cheap step and let only the best ``1/eta`` go on (one rung of ASHA).

    At the first report at or after ``rung_step`` (the first report when None) a trial continues
    when at most ``max(1, n // eta) - 1`` of the ``n`` trials screened so far (itself included)
    scored better there; otherwise it stops. Until ``min_trials`` trials have been screened every
    trial stops, so early random candidates do not eat full-training budget. A trial that passed
    the rung is never stopped later. With ``skip_duplicates`` a trial whose configuration already
    finished is stopped at the rung: its full result is known (pairs well with TPE, which repeats).

    ``eta=None`` derives it from the steps: ``max_step`` (the full training's last step) over the
    screening step, at least 2, and ``min_trials=None`` is ``min(10, ceil(eta))``; one setting then
    serves 6-epoch trials screened after one epoch and 200-epoch table entries screened at 12.

    Cost model: with a screening cost ``c`` (12/200 for NAS-Bench-201's 12-epoch entry) the share
    of the budget spent screening is about ``c / (c + 1/eta)``; eta=16 spends about half on it.
    Pick ``eta`` near ``1 / c`` (full epochs / screening epochs) to keep that half-and-half split.
    """

    def __init__(
        self, eta: float | None = 16.0, rung_step: int | None = None, min_trials: int | None = 10, skip_duplicates: bool = True,
        max_step: int | None = None,
    ) -> None:
        if eta is None and not max_step:
            raise ValueError("eta=None needs max_step (the last step a trial reports)")
        if eta is not None and eta <= 1:
            raise ValueError("eta must be > 1")
        self.eta, self.rung_step, self.min_trials, self.skip_duplicates = eta, rung_step, min_trials, skip_duplicates
        self.max_step = max_step
        self._cache_ident: tuple[int, int] | None = None
        self._done: set[int] = set()
        self._scores: list[float] = []
        self._complete: list[dict[str, Any]] = []

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        mine = at_rung(study, trial, self.rung_step)
        if mine is None:
            return False
        sign = _signs(study)[0]
        value = sign * _finite(mine[1])
        names = tuple(sorted(trial.params))
        scores, complete = self._finished(study, names)
        if self.skip_duplicates and names and param_key(trial.params, names) in complete:
            return True
        scores = list(scores)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rv = rung_value(t, self.rung_step) if t.number != trial.number else None
            if rv is not None:
                scores.append(sign * _finite(rv[1]))
        # eta=None: screening and full training cost about the same (see the cost model above)
        eta = self.eta if self.eta is not None else max(2.0, float(self.max_step or 1) / max(1, mine[0]))
        min_trials = self.min_trials if self.min_trials is not None else min(10, math.ceil(eta))
        n = len(scores) + 1
        if n <= min_trials:
            return True
        better = sum(s > value for s in scores)
        return better >= max(1, int(n // eta))

    def _finished(self, study: Study, names: tuple[str, ...]) -> tuple[list[float], set[tuple]]:
        """Rung scores of finished trials and the configurations that completed; finished trials are cached."""
        ident = (id(study._storage), study._study_id)
        if self._cache_ident != ident:
            self._cache_ident, self._done, self._scores, self._complete = ident, set(), [], []
        sign = _signs(study)[0]
        for t in study.get_trials(deepcopy=False, states=FINISHED):
            if t._trial_id in self._done:
                continue
            self._done.add(t._trial_id)
            rv = rung_value(t, self.rung_step)
            if rv is not None:
                self._scores.append(sign * _finite(rv[1]))
            if t.state == TrialState.COMPLETE:
                self._complete.append(t.params)
        wanted = set(names)
        return self._scores, {param_key(p, names) for p in self._complete if set(p) == wanted}


# --- a proxy-chosen start-up ----------------------------------------------------------------------


class RandomTrial:
    """Answers a space's questions at random (``searchcore.space.sample`` asks it): one full, valid
    configuration, conditional dimensions included, without a study."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.rng.choice(list(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self.rng.randrange(low, high + 1, step)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        if step:
            return low + step * self.rng.randrange(int(round((high - low) / step)) + 1)
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


class ProxyStartSampler(BaseSampler):
    """The wrapped sampler, except that each of its first ``startup`` trials is the zero-cost proxy's
    best of ``group`` random configurations instead of one random draw.

    A model-based sampler (TPE) starts with random trials to learn from; a proxy that ranks networks
    even roughly makes those start-up trials better than random at a cost of ``group`` proxy calls
    each (the caller charges them), and the sampler learns from them like any trial. Enqueued trials
    (the baseline) keep their params. Without a scorer, or when no candidate could be scored, the
    wrapped sampler decides alone.
    """

    def __init__(self, sampler: BaseSampler, scorer: Scorer | None, dimensions: Sequence[Any], startup: int = 8, group: int = 8,
                 seed: int | None = None) -> None:
        self._sampler, self.scorer, self.dimensions = sampler, scorer, list(dimensions)
        self.startup, self.group = startup, group
        self._rng = random.Random(seed)
        self._plans: dict[tuple[int, int, int], dict[str, Any] | None] = {}

    def __str__(self) -> str:
        return f"ZeroCostStart({self._sampler})"  # what the parent run's "sampler" param shows

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()
        self._rng.seed()

    def _plan(self, study: Study, trial: FrozenTrial) -> dict[str, Any] | None:
        key = (id(study._storage), study._study_id, trial.number)
        if key not in self._plans:
            plan = None
            if self.scorer is not None and self.dimensions and trial.number < self.startup and "fixed_params" not in trial.system_attrs:
                from searchcore.space import sample

                candidates = [sample(RandomTrial(self._rng), self.dimensions) for _ in range(self.group)]
                scored = [(v, i) for i, c in enumerate(candidates) if (v := self.scorer(dict(c))) is not None and not math.isnan(v)]
                plan = candidates[max(scored, key=lambda vi: vi[0])[1]] if scored else None  # the first of equals
            self._plans = {k: v for k, v in self._plans.items() if k[2] > trial.number - 64}  # recent trials only
            self._plans[key] = plan
        return self._plans[key]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._plan(study, trial) is not None:
            return {}
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self._plan(study, trial) is not None:
            return {}
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        plan = self._plan(study, trial)
        if plan is not None and param_name in plan and _compatible(param_distribution, plan[param_name]):
            return plan[param_name]
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._sampler.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._sampler.after_trial(study, trial, state, values)


# --- ready-made strategies ----------------------------------------------------------------------


def multi_fidelity_evolution(
    seed: int | None = None,
    eta: float | None = 16.0,
    rung_step: int | None = None,
    population_size: int = 20,
    tournament_size: int = 5,
    min_trials: int | None = 10,
    max_step: int | None = None,
) -> tuple[EvolutionSampler, PromotionPruner]:
    """Evolution ranked by screening scores plus a promotion pruner (searchcore's ``mf-evolution``)."""
    sampler = EvolutionSampler(population_size=population_size, tournament_size=tournament_size, seed=seed)
    return sampler, PromotionPruner(eta=eta, rung_step=rung_step, min_trials=min_trials, max_step=max_step)


def multi_fidelity_tpe(
    seed: int | None = None, eta: float = 16.0, rung_step: int | None = None
) -> tuple[BaseSampler, PromotionPruner]:
    """Optuna's multivariate TPE that never repeats itself, plus the promotion pruner."""
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return NoRepeatSampler(tpe, seed=seed), PromotionPruner(eta=eta, rung_step=rung_step)


# --- zero-cost first -------------------------------------------------------------------------------

Scorer = Callable[[dict[str, Any]], "float | None"]


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share their mean rank), for a rank correlation without numpy or scipy."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation; 0 when either side is constant or there are fewer than 3 pairs."""
    if len(xs) < 3 or len(xs) != len(ys):
        return 0.0
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


class ZeroCostEvolutionSampler(EvolutionSampler):
    """Evolution that asks a zero-cost proxy before it spends a training on a candidate (``zc-evolution``).

    A proxy (NASWOT, SynFlow, ...) scores an untrained network in about a second, hundreds of times
    cheaper than even a short training, but it ranks networks only roughly and is least reliable at
    its very top. So it is used to filter, never to decide:

    * start-up: ``start`` candidates, each the proxy's best of ``group`` random configurations
      (a tournament, not the global top-k, which keeps the start diverse and off the proxy's
      blind spots: NASWOT's very top cells are mediocre);
    * then local search guided by what was measured: every unseen one-parameter neighbour of the
      ``parents`` best trials so far (screened trials count by their early score, see
      :func:`fitness_key`) is rated by a ridge model fitted to the measured scores, on one-hot
      parameters plus the proxy's rank (``proxy_feature``), and the best-rated one is trained.
      The model learns from every score, so it weighs the proxy as far as the proxy agreed with
      training and smooths the noise of a single short run;
    * when a neighbourhood is exhausted (or with several objectives, or ``parents=0``): regularised
      evolution whose children are pre-filtered by the proxy while its rank correlation with the
      measured scores is positive, drawn at random otherwise;
    * with a :class:`ScheduledPromotionPruner` as ``.pruner`` (see :func:`zero_cost_evolution`), when
      a promotion is due it re-proposes the best screened configuration not yet trained in full.

    Without a scorer (or for configurations it cannot score) the proxy plays no part and the rest
    works as described. The caller charges the proxy's cost; the sampler only decides how many
    candidates it scores, and never scores one twice.
    """

    def __init__(
        self,
        scorer: Scorer | None = None,
        seed: int | None = None,
        start: int = 16,
        group: int = 16,
        children: int = 8,
        population_size: int = 16,
        tournament_size: int = 4,
        max_attempts: int = 64,
        parents: int = 1,
        proxy_feature: bool = True,
        ridge: float = 1.0,
        pool: int = 0,
    ) -> None:
        super().__init__(population_size=population_size, tournament_size=tournament_size, seed=seed, max_attempts=max_attempts)
        if start < 1 or group < 1 or children < 1:
            raise ValueError("need start, group and children >= 1")
        self.scorer = scorer
        self.start, self.group, self.children = start, group, children
        self.parents, self.proxy_feature, self.ridge, self.pool = parents, proxy_feature, ridge, pool
        self._pools: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self._sorted_proxy: dict[tuple[int, int], tuple[list[float], int]] = {}
        self._proxy: dict[tuple, float | None] = {}  # proxy score by (study ident, param key)
        self.scored_count = 0  # proxy calls made (each one the caller paid for)

    # -- the proxy --

    def _score(self, study: Study, params: dict[str, Any], names: Sequence[str]) -> float | None:
        key = (id(study._storage), study._study_id, param_key(params, names))
        if key not in self._proxy:
            value = None
            if self.scorer is not None:
                self.scored_count += 1
                raw = self.scorer(dict(params))
                value = None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else float(raw)
            self._proxy[key] = value
        return self._proxy[key]

    def proxy_trust(self, study: Study, names: Sequence[str]) -> float:
        """Rank correlation of the proxy with the measured (screening) scores of the study's trials so far."""
        signs = _signs(study)
        xs, ys = [], []
        for t in self._scored(study):
            key = (id(study._storage), study._study_id, param_key(t.params, names))
            proxy = self._proxy.get(key)
            rv = rung_value(t, None)
            measured = rv[1] if rv is not None else (t.values[0] if t.values else None)
            if proxy is None or measured is None or len(signs) != 1:
                continue
            xs.append(proxy)
            ys.append(signs[0] * _finite(measured))
        return spearman(xs, ys)

    def _best_by_proxy(self, study: Study, candidates: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
        scores = [self._score(study, c, names) for c in candidates]
        ranked = [i for i in range(len(candidates)) if scores[i] is not None]
        if not ranked:
            return self._rng.choice(candidates)
        return candidates[max(ranked, key=lambda i: scores[i])]

    # -- proposals --

    def _draw(self, study: Study, trial: FrozenTrial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {
            n: self._rng.choice(d.choices) if isinstance(d, CategoricalDistribution)
            else self._random.sample_independent(study, trial, n, d)
            for n, d in space.items()
        }

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        names = sorted(search_space)
        seen = self._seen.keys(study, trial, names)
        scored = self._scored(study)
        if len(scored) < max(self.start, self.population_size) or len(scored) < self.tournament_size:
            # start-up: the proxy's best of a random group, never a configuration already tried
            group = []
            for _ in range(self.group * 4):
                c = self._draw(study, trial, search_space)
                if param_key(c, names) not in seen and all(param_key(c, names) != param_key(g, names) for g in group):
                    group.append(c)
                if len(group) == self.group:
                    break
            return self._best_by_proxy(study, group or [self._draw(study, trial, search_space)], names)
        promoter = getattr(self, "pruner", None)
        if isinstance(promoter, ScheduledPromotionPruner) and len(_signs(study)) == 1:
            screened, promoted, best, step = promotion_state(study, trial, promoter.rung_step, names)
            if best and promoter.due(screened, promoted, step):
                return dict(max(best.values(), key=lambda vp: vp[0])[1])  # promote the best not trained yet
        if self.parents and len(_signs(study)) == 1:
            chosen = self._surrogate_pick(study, trial, search_space, names, seen, scored)
            if chosen is not None:
                return chosen
        population = scored[-self.population_size :]
        parent = self._winner(self._rng.sample(population, self.tournament_size), study)
        base = {n: parent.params[n] for n in names if n in parent.params}
        missing = [n for n in names if n not in base]
        for n in missing:
            base[n] = self._random.sample_independent(study, trial, n, search_space[n])
        mutable = sorted(n for n, d in parent.distributions.items() if not d.single())

        def mutate(name: str, value: Any) -> Any:
            return _mutate_value(self._rng, self._random, study, trial, name, search_space[name], value)

        pool: list[dict[str, Any]] = []
        keys: set[tuple] = set()
        extra = None
        for _ in range(self.children * 4):
            child, extra = _novel(base, names, mutable, seen | keys, self._rng, mutate, self.max_attempts, force=not missing)
            k = param_key(child, names)
            if k in keys or k in seen:
                continue
            pool.append(child)
            keys.add(k)
            if extra is not None or len(pool) == self.children:
                break
        if not pool:
            pool = [child]
        if self.scorer is not None and len(pool) > 1 and self.proxy_trust(study, names) > 0:
            chosen = self._best_by_proxy(study, pool, names)
        else:
            chosen = self._rng.choice(pool)
        self._parents[self._trial_ident(study, trial)] = (dict(parent.params), extra)
        return chosen


    def _features(
        self, study: Study, params: dict[str, Any], space: dict[str, BaseDistribution], names: Sequence[str], proxy: bool
    ) -> list[float]:
        row: list[float] = [1.0]
        for n in names:
            d, v = space[n], params.get(n)
            if isinstance(d, CategoricalDistribution):
                row.extend(1.0 if v == c else 0.0 for c in d.choices)
            else:
                lo, hi = float(getattr(d, "low", 0.0)), float(getattr(d, "high", 1.0))
                row.append((float(v) - lo) / (hi - lo) if v is not None and hi > lo else 0.0)
        if proxy:
            key = (id(study._storage), study._study_id, param_key(params, names))
            row.append(self._percentile(study, self._proxy.get(key)))
        return row

    def _percentile(self, study: Study, value: float | None) -> float:
        """A proxy score as its rank among every score this study's proxy gave (0..1; 0.5 when unknown).

        Proxies are only ordinal, and heavy-tailed (NASWOT spans six orders of magnitude), so a
        model reads their rank, never their value.
        """
        if value is None:
            return 0.5
        ident = (id(study._storage), study._study_id)
        cache = self._sorted_proxy
        if cache.get(ident, (None, -1))[1] != len(self._proxy):
            values = sorted(v for k, v in self._proxy.items() if k[:2] == ident and v is not None)
            cache[ident] = (values, len(self._proxy))
        values = cache[ident][0]
        import bisect

        return (bisect.bisect_left(values, value) + bisect.bisect_right(values, value)) / (2.0 * max(1, len(values)))

    def _surrogate_pick(
        self,
        study: Study,
        trial: FrozenTrial,
        space: dict[str, BaseDistribution],
        names: list[str],
        seen: set[tuple],
        scored: list[FrozenTrial],
    ) -> dict[str, Any] | None:
        """The unseen neighbour of the best trials that a ridge model of the measured scores rates highest."""
        import numpy as np

        sign = _signs(study)[0]
        train = [t for t in scored if all(n in t.params for n in names)]
        if len(train) < 4:
            return None
        ranked = sorted(train, key=lambda t: self._keys[self._trial_ident(study, t)], reverse=True)
        cands: dict[tuple, dict[str, Any]] = {}
        for t in ranked[: self.parents]:
            for n in names:
                d = space[n]
                values = [c for c in d.choices if c != t.params[n]] if isinstance(d, CategoricalDistribution) else [
                    self._random.sample_independent(study, trial, n, d) for _ in range(4)]
                for v in values:
                    c = {m: t.params[m] for m in names}
                    c[n] = v
                    k = param_key(c, names)
                    if k not in seen:
                        cands[k] = c
        if self.pool:
            ident = (id(study._storage), study._study_id)
            if ident not in self._pools:
                self._pools[ident] = [self._draw(study, trial, space) for _ in range(self.pool)]
            for c in self._pools[ident]:
                k = param_key(c, names)
                if k not in seen:
                    cands[k] = c
        if not cands:
            return None
        pool = list(cands.values())
        use_proxy = self.proxy_feature and self.scorer is not None
        if use_proxy:
            for c in pool:
                self._score(study, c, names)
        ys = []
        for t in train:
            rv = rung_value(t, None)
            ys.append(sign * _finite(rv[1] if rv is not None else t.values[0]))
        y = np.array(ys)
        ok = np.isfinite(y)
        X = np.array([self._features(study, t.params, space, names, use_proxy) for t in train])[ok]
        y = y[ok]
        if len(y) < 4:
            return None
        mu, sd = X[:, 1:].mean(0), X[:, 1:].std(0) + 1e-12
        X[:, 1:] = (X[:, 1:] - mu) / sd
        ym = y.mean()
        C = np.array([self._features(study, c, space, names, use_proxy) for c in pool])
        C[:, 1:] = (C[:, 1:] - mu) / sd
        reg = self.ridge * np.eye(X.shape[1])
        reg[0, 0] = 0.0  # the intercept is not shrunk
        w = np.linalg.solve(X.T @ X + reg, X.T @ (y - ym))
        pred = C @ w
        best = float(pred.max())
        top = [i for i in range(len(pool)) if pred[i] >= best - 1e-12]
        return pool[self._rng.choice(top)]


Promotion = tuple[int, int, dict[tuple, tuple[float, dict[str, Any]]], int | None]


def promotion_state(study: Study, trial: FrozenTrial | None, rung_step: int | None, names: Sequence[str]) -> Promotion:
    """``(screened, promoted, best, step)``: trials that reached the rung (``trial`` not counted), trials that
    went past it or completed, per configuration never completed its best rung score (sign-adjusted) and
    params, and the rung's step (None before any report)."""
    sign = _signs(study)[0]
    screened = promoted = 0
    step = None
    best: dict[tuple, tuple[float, dict[str, Any]]] = {}
    completed: set[tuple] = set()
    for t in study.get_trials(deepcopy=False):
        if trial is not None and t.number == trial.number:
            continue
        rv = rung_value(t, rung_step)
        key = param_key(t.params, names)
        if t.state == TrialState.COMPLETE:
            completed.add(key)
            promoted += 1
        elif rv is not None and t.state == TrialState.RUNNING and t.last_step is not None and t.last_step > rv[0]:
            completed.add(key)  # promoted, still training
            promoted += 1
        if rv is None:
            continue
        screened += 1
        step = rv[0]
        value = sign * _finite(rv[1])
        if key not in best or value > best[key][0]:
            best[key] = (value, dict(t.params))
    return screened, promoted, {k: v for k, v in best.items() if k not in completed}, step


class ScheduledPromotionPruner(BasePruner):
    """Screen every trial at the first report; promote the best configuration not yet trained, on a schedule.

    The first promotion comes once screening has cost ``first`` full trainings and one more after
    every ``every`` full trainings' worth of further screenings (a screening costs the rung step over
    ``max_step``; 1/16 when ``max_step`` is not given), so full training never takes more than its
    planned share of the budget however many trials run. A promotion goes to the best screened configuration that was not
    trained in full yet: a trial continues past the rung only when it is that configuration (its
    sampler re-proposes it; :class:`ZeroCostEvolutionSampler` does), or scores at least as well.
    A plain :class:`PromotionPruner` can only promote the trial at hand, so the best of the early
    screenings, which arrived before any promotion was due, would never be trained in full.
    """

    def __init__(
        self, first: float = 2.0, every: float = 1.0, max_step: int | None = None, rung_step: int | None = None
    ) -> None:
        if first <= 0 or every <= 0:
            raise ValueError("need first > 0 and every > 0")
        self.first, self.every, self.max_step, self.rung_step = first, every, max_step, rung_step

    def due(self, screened: int, promoted: int, step: int | None) -> bool:
        """Whether the schedule has a promotion free after ``screened`` screenings and ``promoted`` promotions."""
        ratio = self.max_step / step if self.max_step and step else 16.0  # screenings per full training
        return screened >= ratio * (self.first + self.every * promoted) - 1e-9

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        mine = at_rung(study, trial, self.rung_step)
        if mine is None:
            return False
        names = sorted(trial.params)
        screened, promoted, best, _ = promotion_state(study, trial, self.rung_step, names)
        key = param_key(trial.params, names)
        if key not in best and any(
            t.state == TrialState.COMPLETE and param_key(t.params, names) == key
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ):
            return True  # trained in full already: its result is known
        if not self.due(screened, promoted, mine[0]):
            return True
        value = _signs(study)[0] * _finite(mine[1])
        top = max((v for v, _ in best.values()), default=-math.inf)
        return value < top


def zero_cost_evolution(
    scorer: Scorer | None = None,
    seed: int | None = None,
    max_step: int | None = None,
    rung_step: int | None = None,
    first: float = 3.0,
    every: float = 0.5,
    **options: Any,
) -> tuple[ZeroCostEvolutionSampler, ScheduledPromotionPruner]:
    """The ``zc-evolution`` strategy: :class:`ZeroCostEvolutionSampler` and its :class:`ScheduledPromotionPruner`.

    Full training is the dear step and a short one ranks well enough to find the good region, so
    screening gets ``first`` full trainings' worth of budget before the first promotion, and one
    promotion follows every ``every`` trainings' worth of further screenings (about two thirds of a
    long search's budget then goes to full training, where the final choice among the short runs'
    best is made). ``max_step`` is the full training's last step (the trial's epochs).
    """
    sampler = ZeroCostEvolutionSampler(scorer=scorer, seed=seed, **options)
    pruner = ScheduledPromotionPruner(first=first, every=every, max_step=max_step, rung_step=rung_step)
    sampler.pruner = pruner  # the sampler proposes the configuration the schedule promotes next
    return sampler, pruner
