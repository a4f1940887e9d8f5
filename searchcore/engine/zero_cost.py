"""The zero-cost first rung: a candidate's params scored without training, its cost charged.

Why here: a strategy (an Optuna sampler) asks ``scorer(params)`` before it proposes a trial, so
it can screen many candidates and train only the promising ones. The scorer turns params into a
spec by the same transform path a trial takes, builds the model on the CPU with the search's seed,
and runs the proxies the space file chose (``search.zero_cost``) on one fixed batch of the
training split. Scoring is not free: every call's wall time and count are accumulated and recorded
on the search's study and parent run (``zero_cost_seconds``, ``zero_cost_candidates``), so a
strategy that screens a thousand candidates is charged for it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from searchcore.errors import SpaceFileError

DEFAULT_PROXY = "naswot"
NONE = "none"
BATCH = 64  # examples in the one batch every candidate is scored on (NASWOT's kernel is BATCH x BATCH)
ATTR_PREFIX = "zero_cost:"  # study user attributes, one per process that scored: {"seconds", "candidates", "failed"}

Scorer = Callable[[dict[str, Any]], "float | None"]


class ZeroCostScorer:
    """``scorer(params) -> float | None``: higher is more promising, None when the candidate could not
    be built or scored. Cheap to make: nothing is built or computed before the first call."""

    def __init__(self, space: Any, host: Any, proxies: list[str], splits: Any = None, seed: int = 0, batch: int = BATCH) -> None:
        catalog = host.catalog("zero_cost")
        self.names = list(proxies)
        self.proxies = [catalog[n] for n in self.names]
        self.space, self.host, self.splits, self.seed, self.batch_size = space, host, splits, seed, batch
        self.seconds = 0.0
        self.candidates = 0
        self.failed = 0
        self._batch: Any = None
        self._registry: dict | None = None

    def __call__(self, params: dict[str, Any]) -> float | None:
        start = time.perf_counter()
        try:
            return self.score(params)
        except Exception:  # a candidate that does not build or score is not a search failure: it is unscored
            self.failed += 1
            return None
        finally:
            self.seconds += time.perf_counter() - start
            self.candidates += 1

    def score(self, params: dict[str, Any]) -> float | None:
        """The candidate's raw proxies combined into one number (raises when it cannot be built)."""
        if self.proxies is None:  # restored from a pickle: nothing to build with
            raise RuntimeError("a restored zero-cost scorer cannot score")
        values = self.values(params)
        return combine([values[n] for n in self.names], [_direction(p) for p in self.proxies])

    def values(self, params: dict[str, Any]) -> dict[str, float]:
        """Each chosen proxy's raw value for ``params`` (a trial's params: active dimensions at least)."""
        import torch

        from searchcore.arch.build import build
        from searchcore.space.dimensions import ParamsTrial

        used = self.space.sample(ParamsTrial(complete(self.space.dimensions, params), "zero-cost params"))  # active ones, as a trial
        spec = self.space.spec(used)
        if self._registry is None:
            self._registry = self.host.blocks()
        model = build(spec, self._registry, seed=self.seed)
        batch = self.inputs()
        with torch.random.fork_rng(devices=[]):
            return {n: float(p(model, batch)) for n, p in zip(self.names, self.proxies)}

    def inputs(self) -> Any:
        """The one batch every candidate is scored on: a seeded sample of the training split, on the CPU."""
        if self._batch is None and self.splits is not None:
            import torch

            x = self.splits.train_x
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(x.shape[0], generator=g)[: self.batch_size]
            self._batch = x[idx].detach().to("cpu", torch.float32)
        return self._batch

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a Ray searcher's checkpoint holds its sampler): the names and the charge only, not
        the plugin host or the data; a scorer restored from a checkpoint answers None (unscored)."""
        return {"names": self.names, "seconds": self.seconds, "candidates": self.candidates, "failed": self.failed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, proxies=None, space=None, host=None, splits=None, seed=0, batch_size=BATCH, _batch=None, _registry=None)

    def cost(self) -> dict[str, float]:
        """What scoring has cost so far, as recorded on the study and the parent run."""
        return {"seconds": round(self.seconds, 6), "candidates": self.candidates, "failed": self.failed}


def complete(dimensions: list[Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every active dimension it lacks at its ``off`` value. A sampler's candidate often
    names only the dimensions every trial has (Optuna's relative search space leaves out conditional
    ones such as ``attention.s1.reduction``, sampled later); the candidate is scored as the network it
    would be with those at their defaults, instead of not at all."""
    filled: dict[str, Any] = {}
    for d in dimensions:
        if d.active(filled):
            filled[d.name] = params.get(d.name, d.off)
    return filled


def _direction(scorer: Any) -> str:
    return "minimize" if getattr(scorer, "direction", "maximize") == "minimize" else "maximize"


def combine(values: list[float], directions: list[str]) -> float | None:
    """One proxy: its value (negated for a cost). Several: the sum of their signed values on a
    log-like scale (asinh), so each counts by its relative change and none dominates by its units
    (synflow is ~1e4..1e30, naswot ~1e2). The same candidate always gets the same score, whatever
    was scored before it (a rank among earlier candidates would drift). None for NaN."""
    signs = [-1.0 if d == "minimize" else 1.0 for d in directions]
    if any(math.isnan(v) for v in values):
        return None
    if len(values) == 1:
        return signs[0] * values[0]
    return sum(s * math.asinh(v) for s, v in zip(signs, values))


def check_proxies(names: list[str], host: Any, source: str) -> list[str]:
    """The space file's ``search.zero_cost`` against the proxies the plugins registered."""
    catalog = host.catalog("zero_cost")
    for name in names:
        if name not in catalog:
            raise SpaceFileError(source, "search.zero_cost", f"unknown proxy {name!r}; available: {', '.join([NONE, *sorted(catalog)])}")
    return names


def make_scorer(cfg: Any, runner: Any) -> ZeroCostScorer | None:
    """The search's scorer, or None when ``search.zero_cost`` is ``none`` or the trials are not trained
    (an evaluator that looks results up has nothing to save by screening; one that trains says so with
    an attribute ``trains = True``, as the benchmarks' ``train-test`` does)."""
    names = list(getattr(cfg, "zero_cost", [DEFAULT_PROXY]))
    evaluator = getattr(runner, "evaluator", None)
    trains = getattr(cfg, "evaluator", "train") == "train" or getattr(evaluator, "trains", False)
    if not names or not trains:
        return None
    check_proxies(names, runner.host, cfg.source)
    return ZeroCostScorer(runner.space, runner.host, names, splits=runner.splits, seed=cfg.seed)


def charge_study(study: Any, scorer: ZeroCostScorer | None, key: str) -> None:
    """Record this process's scoring cost on the study under ``key`` (one attribute per process, so
    workers never overwrite each other); :func:`study_cost` adds them up."""
    if scorer is None or scorer.candidates == 0:
        return
    try:
        study.set_user_attr(ATTR_PREFIX + key, scorer.cost())
    except Exception as e:  # a record that could not be written must not fail a finished search
        print(f"searchcore: warning: could not record the zero-cost charge: {type(e).__name__}: {e}", file=sys.stderr)


def study_cost(attrs: dict[str, Any]) -> dict[str, float]:
    """Every process's charge in a study's user attributes, summed: ``zero_cost_seconds`` and ``zero_cost_candidates``."""
    seconds = sum(float(v.get("seconds", 0.0)) for k, v in attrs.items() if k.startswith(ATTR_PREFIX) and isinstance(v, dict))
    count = sum(int(v.get("candidates", 0)) for k, v in attrs.items() if k.startswith(ATTR_PREFIX) and isinstance(v, dict))
    return {"zero_cost_seconds": seconds, "zero_cost_candidates": count} if count else {}


def scorer_cost(scorer: ZeroCostScorer | None) -> dict[str, float]:
    """One process's charge as the parent run's metrics (the Ray driver scores alone)."""
    if scorer is None or scorer.candidates == 0:
        return {}
    return {"zero_cost_seconds": scorer.seconds, "zero_cost_candidates": scorer.candidates}


__all__ = ["ZeroCostScorer", "make_scorer", "combine", "check_proxies", "charge_study", "study_cost", "scorer_cost"]
