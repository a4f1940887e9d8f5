"""The core plugin: the seed CNN backbone, built-in datasets, objectives, samplers and zero-cost proxies.

It registers through the ``searchcore`` entry-point group like any other plugin, so a
third-party package extends the same catalogs the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from searchcore.plugins.hookspecs import hookimpl

SEED_CHANNELS = [32, 64, 128]


def conv(out: int | None, k: int = 3, s: int = 1, bn: bool = False, act: str = "relu") -> dict:
    """A core ``conv`` block with every option spelled out, as specs always are."""
    return {"type": "conv", "out": out, "k": k, "d": 1, "s": s, "bn": bn, "act": act}


def seed_cnn(input_shape: list[int], classes: int, options: dict) -> dict:
    """The seed's CNN: Conv(32) -> MaxPool -> Conv(64) -> MaxPool -> Conv(128) -> MaxPool -> Flatten -> Linear."""
    channels = options.get("channels") or SEED_CHANNELS
    stages = [
        {"body": [conv(int(c))], "attention": [], "shortcut": None, "down": {"type": "maxpool", "k": 2, "s": 2}}
        for c in channels
    ]
    return {
        "schema": 1,
        "input": list(input_shape),
        "classes": int(classes),
        "stem": [],
        "stages": stages,
        "head": [{"type": "flatten"}, {"type": "linear"}],
    }


@hookimpl
def searchcore_backbones(register: Callable[..., None]) -> None:
    register("seed-cnn", seed_cnn)


@hookimpl
def searchcore_datasets(register: Callable[..., None]) -> None:
    from searchcore.train import data

    data.register_builtin(register)


@hookimpl
def searchcore_objectives(register: Callable[..., None]) -> None:
    from searchcore.train import objectives

    objectives.register_builtin(register)


@hookimpl
def searchcore_zero_cost(register: Callable[..., None]) -> None:
    from searchcore.train import proxies

    proxies.register_builtin(register)


def _tpe(seed: int, multi_objective: bool) -> Any:
    """Optuna's TPE that never re-proposes a configuration the study already holds: a converged TPE
    on a small categorical space spends much of its budget on repeats whose result is known
    (NAS-Bench-201); on large spaces it never fires and the search is TPE's, proposal for proposal."""
    import optuna

    from searchcore.engine.strategies import NoRepeatSampler

    # multivariate + group: the space is conditional (dense.s1 -> dense.s1.growth ...).
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)
    return NoRepeatSampler(tpe, seed=seed, fill_independent=False)  # until a repeat, exactly TPE's proposals


def _tpe_zc(seed: int, multi_objective: bool, dimensions: list | None = None,
            scorer: Callable[[dict[str, Any]], float | None] | None = None) -> Any:
    """searchcore's TPE whose 8 random start-up trials are each the zero-cost proxy's best of 8 random
    configurations (``search.zero_cost``; see :class:`~searchcore.engine.strategies.ProxyStartSampler`)."""
    from searchcore.engine.strategies import ProxyStartSampler

    return ProxyStartSampler(_tpe(seed, multi_objective), scorer, dimensions or [], startup=8, group=8, seed=seed)


def _random(seed: int, multi_objective: bool) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(seed: int, multi_objective: bool) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def _grid(seed: int, multi_objective: bool, dimensions: list) -> Any:
    """Exhaustive search for small, discrete spaces (conditional dimensions included)."""
    import optuna

    from searchcore.errors import UsageError

    grid: dict[str, list] = {}
    for d in dimensions:
        if d.kind == "categorical":
            grid[d.name] = list(d.choices)
        elif d.kind == "int":
            grid[d.name] = list(range(int(d.low), int(d.high) + 1, int(d.step or 1)))
        else:
            raise UsageError(f"--sampler grid: dimension {d.name!r} is continuous; grid needs categorical or integer dimensions")
    return optuna.samplers.GridSampler(grid, seed=seed)


def _evolution(seed: int, multi_objective: bool) -> Any:
    """Regularised evolution (Real et al. 2019) that never re-proposes a configuration already tried."""
    from searchcore.engine.strategies import EvolutionSampler

    return EvolutionSampler(population_size=20, tournament_size=5, seed=seed)


def _mf_evolution(seed: int, multi_objective: bool, epochs: int | None = None) -> Any:
    """Evolution ranked by early scores; ``.pruner`` is the promotion pruner the host pairs with it:
    every trial is screened at its first report and the best ``first/epochs`` share trains fully."""
    from searchcore.engine.strategies import multi_fidelity_evolution

    if epochs and epochs > 1:
        sampler, pruner = multi_fidelity_evolution(seed=seed, eta=None, min_trials=None, max_step=epochs)
    else:
        sampler, pruner = multi_fidelity_evolution(seed=seed)
    sampler.pruner = pruner
    return sampler


def _zc_evolution(
    seed: int,
    multi_objective: bool,
    scorer: Callable[[dict[str, Any]], float | None] | None = None,
    epochs: int | None = None,
) -> Any:
    """Zero-cost first: a proxy (``scorer``, full params dict -> score or None; the caller charges its
    cost) picks what to screen, a model of the screening scores picks what to screen next, and
    ``.pruner`` (the host pairs it with the sampler) promotes only the screening's best to full training."""
    from searchcore.engine.strategies import zero_cost_evolution

    sampler, _ = zero_cost_evolution(scorer=scorer, seed=seed, max_step=epochs if epochs and epochs > 1 else None)
    return sampler  # zero_cost_evolution set sampler.pruner


@hookimpl
def searchcore_samplers(register: Callable[..., None]) -> None:
    register("tpe", _tpe)
    register("tpe-zc", _tpe_zc)
    register("evolution", _evolution)
    register("mf-evolution", _mf_evolution)
    register("zc-evolution", _zc_evolution)
    register("random", _random)
    register("nsga2", _nsga2)
    register("grid", _grid)
