"""Samplers and pruners by name, for every backend: a sampler comes from the plugins' catalog (the core
plugin registers the strategies in :mod:`searchcore.engine.strategies`), a pruner from Optuna's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from searchcore.errors import UsageError


def make_sampler(name: str, seed: int, directions: list[str], host: Any, source: str = "--sampler", dimensions: list | None = None,
                 epochs: int | None = None, scorer: Callable[[dict[str, Any]], float | None] | None = None) -> Any:
    """A sampler from the plugins' catalog; ``auto`` is TPE with a zero-cost start-up (``tpe-zc``: its
    start-up trials are the proxy's picks, measured ahead of plain TPE and random search in
    benchmarks/RESULTS.md) for one objective, NSGA-II for several.

    ``scorer(params)`` (zero-cost proxies: higher is more promising, None when it could not score) goes
    only to a factory that accepts ``scorer``; the caller charges what its calls cost."""
    import inspect

    multi = len(directions) > 1
    if name == "auto":
        name = "nsga2" if multi else "tpe-zc"
    samplers = host.catalog("samplers")
    if name not in samplers:
        raise UsageError(f"{source}: unknown sampler {name!r}; available: auto, {', '.join(sorted(samplers))}")
    factory = samplers[name]
    offered = {"seed": seed, "multi_objective": multi, "dimensions": list(dimensions or []), "epochs": epochs, "scorer": scorer}
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in offered.items() if k in accepted})


def make_pruner(name: str, epochs: int, multi_objective: bool) -> Any:
    import optuna

    if multi_objective or name == "none":
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    raise UsageError(f"--pruner: unknown pruner {name!r}; allowed: hyperband, median, successive_halving, none")
