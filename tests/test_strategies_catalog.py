"""Search strategies in searchcore's catalog: ``evolution`` and ``mf-evolution`` on any space.

``mf-evolution`` screens every trial at its first report and lets only the best share train fully;
the share follows from the space's epochs (screen 1 of 6 epochs: the best sixth goes on), so one
setting serves a 6-epoch CNN search and 200-epoch NAS-Bench-201 lookups screened at 12.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from searchcore.engine.api import run_search
from searchcore.engine.backends.storage import open_storage
from searchcore.engine.samplers import make_sampler
from searchcore.engine.settings import Settings
from searchcore.engine.strategies import EvolutionSampler, PromotionPruner
from searchcore.plugins.host import get_host

optuna.logging.set_verbosity(optuna.logging.WARNING)
S = optuna.trial.TrialState


def six_epochs(trial: optuna.Trial) -> float:
    """A curve whose ranking at epoch 1 is its ranking at epoch 6."""
    x = trial.suggest_float("x", 0.0, 1.0)
    for epoch in range(1, 7):
        trial.report(x * epoch / 6, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return x


def test_the_promotion_share_follows_the_epochs() -> None:
    pruner = PromotionPruner(eta=None, min_trials=None, max_step=6)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner)
    study.optimize(six_epochs, n_trials=60)
    trials = study.get_trials()
    assert all(t.state == S.PRUNED and t.last_step == 1 for t in trials[:6])  # min_trials = ceil(6): all screened first
    complete = [t for t in trials if t.state == S.COMPLETE]
    assert 4 <= len(complete) <= 20  # about a sixth of the 54 after the first six, never more than the better ones allow
    for t in complete:  # a trial went on only if at most n // 6 - 1 of those screened before it scored better
        before = [u for u in trials if u.number < t.number]
        assert sum(u.intermediate_values[1] > t.intermediate_values[1] for u in before) <= max(1, (len(before) + 1) // 6) - 1
    assert all(t.last_step == 1 for t in trials if t.state == S.PRUNED)


def test_eta_none_needs_the_last_step() -> None:
    with pytest.raises(ValueError, match="max_step"):
        PromotionPruner(eta=None)


def test_the_catalog_builds_both_strategies_from_the_search_settings() -> None:
    host = get_host()
    evo = make_sampler("evolution", 3, ["maximize"], host)
    assert isinstance(evo, EvolutionSampler)
    mf = make_sampler("mf-evolution", 3, ["maximize"], host, epochs=6)
    assert isinstance(mf, EvolutionSampler) and isinstance(mf.pruner, PromotionPruner)
    assert mf.pruner.eta is None and mf.pruner.max_step == 6


@pytest.mark.usefixtures("one_thread")
def test_a_search_with_mf_evolution_screens_then_trains_the_best(workdir: Path, small_space: Path) -> None:
    small_space.write_text(small_space.read_text().replace("sampler: tpe", "sampler: mf-evolution"))
    result = run_search(small_space, Settings(trials=8, epochs=3, name="mf", progress=False, baseline=False, register=False))
    trials = optuna.load_study(study_name="mf", storage=open_storage(result.storage)).get_trials()
    assert len(trials) == 8
    assert trials[0].state == S.COMPLETE and trials[0].last_step == 3  # the baseline is never screened out
    assert all(t.state == S.PRUNED and t.last_step == 1 for t in trials[1:4])  # the others: screened at epoch 1 of 3
    assert any(t.state == S.COMPLETE and t.last_step == 3 for t in trials)  # and the best went on


def conditional(trial: optuna.Trial) -> float:
    """A conditional space like the default one: a choice opens a group of parameters."""
    kind = trial.suggest_categorical("kind", ["plain", "dense"])
    x = trial.suggest_float("x", -2.0, 2.0)
    if kind == "dense":
        return -abs(x) + 0.1 * trial.suggest_int("growth", 1, 4)
    return -abs(x - 1)


def test_the_default_tpe_is_tpe_proposal_for_proposal_until_a_repeat() -> None:
    def run(sampler: optuna.samplers.BaseSampler) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(conditional, n_trials=30)
        return [t.params for t in study.trials]

    tpe = lambda: optuna.samplers.TPESampler(seed=5, multivariate=True, group=True, n_startup_trials=8)  # noqa: E731
    assert run(make_sampler("tpe", 5, ["maximize"], get_host())) == run(tpe())


def test_the_default_tpe_never_repeats_itself_after_its_start_up() -> None:
    def small(trial: optuna.Trial) -> float:  # 81 configurations, one clear optimum: TPE converges and repeats
        return sum(trial.suggest_categorical(f"e{i}", [0, 1, 2]) for i in range(4))

    def repeats_after_start_up(sampler: optuna.samplers.BaseSampler) -> int:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(small, n_trials=40)
        keys = [tuple(sorted(t.params.items())) for t in study.trials]
        return sum(key in keys[:n] for n, key in enumerate(keys) if n >= 8)

    assert repeats_after_start_up(make_sampler("tpe", 0, ["maximize"], get_host())) == 0
    plain = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=8)
    assert repeats_after_start_up(plain) > 0  # what it prevents: TPE alone re-proposes what it already evaluated


def test_tpe_zc_start_up_trials_are_the_proxys_picks_then_tpe_decides(small_space: Path) -> None:
    """The default strategy (sampler auto, one objective): each start-up trial is the proxy's best of 8
    random configurations of the real space (conditional dimensions included); the enqueued baseline
    keeps its params; after the start-up TPE proposes alone and the proxy is not asked again."""
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare
    from searchcore.engine.strategies import ProxyStartSampler
    from searchcore.space import sample

    runner = prepare(load_space(small_space), get_host(), 1)
    asked: list[dict] = []

    def likes_se(params: dict) -> float:  # a proxy that likes the SE attention blocks
        return float(sum(v == "se" for v in params.values()))

    def scorer(params: dict) -> float:
        asked.append(params)
        return likes_se(params)

    sampler = make_sampler("auto", 0, ["maximize"], get_host(), dimensions=runner.space.dimensions, scorer=scorer)
    assert isinstance(sampler, ProxyStartSampler) and str(sampler) == "ZeroCostStart(NoRepeat(TPESampler))"
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(runner.baseline_params)
    chosen = []
    for _ in range(12):
        trial = study.ask()
        params = sample(trial, runner.space.dimensions)
        chosen.append(params)
        study.tell(trial, float(len(params)))
    assert runner.is_baseline(chosen[0])
    assert len(asked) == 8 * 7  # trials 1-7, eight candidates each; none for the baseline or after the start-up
    for k, params in enumerate(chosen[1:8]):
        group = asked[8 * k: 8 * (k + 1)]
        assert params == max(group, key=likes_se)  # the proxy's pick of its group, conditional params included


def test_without_a_scorer_tpe_zc_is_tpe() -> None:
    plain = make_sampler("tpe", 3, ["maximize"], get_host())
    zc = make_sampler("tpe-zc", 3, ["maximize"], get_host(), scorer=None)
    values = []
    for sampler in (plain, zc):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -(t.suggest_float("x", -2, 2) - 1) ** 2, n_trials=12)
        values.append([t.params["x"] for t in study.trials])
    assert values[0] == values[1]
