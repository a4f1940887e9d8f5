"""The NAS-Bench-201 plugin, the general strategies (evolution, no-repeat, promotion pruner) and the benchmark.

Tests that need the CIFAR-10 table skip, saying how to provide it, when it is absent: the table is
data for tests and benchmarks, never part of the repository.
"""

from __future__ import annotations

import csv
import importlib
import itertools
import json
import os
from pathlib import Path

import optuna
import pytest
import torch
from searchcore_plugins import nasbench201 as nb
from torch.nn import functional as F

from searchcore.arch.build import CORE_BLOCKS, build
from searchcore.authoring.testing import PluginConformance
from searchcore.engine.strategies import (
    EvolutionSampler,
    NoRepeatSampler,
    PromotionPruner,
    ScheduledPromotionPruner,
    ZeroCostEvolutionSampler,
    param_key,
    spearman,
    zero_cost_evolution,
)
from searchcore.errors import SpecError, UsageError

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parent.parent
SHARED_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-bench-201" / "cifar10.csv"  # ../shared beside the checkout
TABLE = next((Path(p) for p in (os.environ.get(nb.TABLE_ENV), SHARED_TABLE) if p and Path(p).is_file()), None)
needs_table = pytest.mark.skipif(
    TABLE is None, reason=f"NAS-Bench-201 CIFAR-10 table not found: set ${nb.TABLE_ENV} to its cifar10.csv"
)
BEST_KNOWN = ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1"]


def registry() -> dict:
    blocks: dict = dict(CORE_BLOCKS)
    nb.searchcore_blocks(register=blocks.__setitem__)
    return blocks


def spec_for(ops: list[str], **options: object) -> dict:
    base = nb.backbone([3, 32, 32], 10, dict(options))
    params = dict(zip(nb.dimension_names(), ops))
    return nb.searchcore_transform(spec=base, params=params)


# --- the cell string ----------------------------------------------------------------------------------


def test_arch_str_round_trips_over_the_whole_space() -> None:
    strings = set()
    for ops in itertools.product(nb.OPS, repeat=len(nb.EDGES)):
        text = nb.arch_str(ops)
        assert nb.parse_arch_str(text) == list(ops)
        strings.add(text)
    assert len(strings) == 5**6
    assert nb.arch_str(BEST_KNOWN) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|none~0|+|none~0|none~1|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|conv~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    ],
)
def test_parse_arch_str_refuses_malformed_strings(bad: str) -> None:
    with pytest.raises(ValueError):
        nb.parse_arch_str(bad)


# --- the network ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ops",
    [
        BEST_KNOWN,
        list(nb.DEFAULT_OPS),
        ["none"] * 6,
        ["avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none", "avg_pool_3x3", "none"],
    ],
)
def test_cell_forward_backward_on_32x32(ops: list[str]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32, 32, requires_grad=True)
    cell = nb.Cell(16, 16, ops)
    y = cell(x)
    assert y.shape == (2, 16, 32, 32)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in cell.parameters())


def test_cell_changes_width_and_reduce_halves_resolution() -> None:
    x = torch.randn(2, 8, 32, 32)
    assert nb.Cell(8, 16, BEST_KNOWN)(x).shape == (2, 16, 32, 32)
    assert nb.Cell(8, 16, ["none", "skip_connect", "avg_pool_3x3", "none", "none", "none"])(x).shape == (2, 16, 32, 32)
    assert nb.ResNetReduce(8, 16)(x).shape == (2, 16, 16, 16)


def test_none_cell_outputs_zeros_and_ops_are_the_benchmarks() -> None:
    assert torch.count_nonzero(nb.Cell(4, 4, ["none"] * 6)(torch.randn(1, 4, 8, 8))) == 0
    cell = nb.Cell(4, 4, BEST_KNOWN)
    kinds = [type(m).__name__ for m in cell.edges]
    assert kinds == ["ReLUConvBN", "ReLUConvBN", "ReLUConvBN", "Identity", "ReLUConvBN", "ReLUConvBN"]
    assert cell.edges[5][1].kernel_size == (1, 1) and cell.edges[0][1].kernel_size == (3, 3)


def test_backbone_spec_builds_the_network_and_trains() -> None:
    spec = spec_for(BEST_KNOWN, cells=2)
    assert [len(st["body"]) for st in spec["stages"]] == [2, 2, 2]
    assert all(b["ops"] == BEST_KNOWN for st in spec["stages"] for b in st["body"])
    model = build(spec, registry(), seed=0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    out = model(x)
    assert out.shape == (2, 10)
    F.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_dimensions_only_for_the_cell_backbone_and_transform_is_pure() -> None:
    base = nb.backbone([3, 32, 32], 10, {})
    dims = nb.searchcore_dimensions(base=base, options={})
    assert [d.name for d in dims] == nb.dimension_names()
    assert [d.off for d in dims] == list(nb.DEFAULT_OPS)
    assert nb.searchcore_dimensions(base={"stages": [{"body": [{"type": "conv"}]}]}, options={}) == []
    before = json.dumps(base, sort_keys=True)
    spec = nb.searchcore_transform(spec=base, params=dict(zip(nb.dimension_names(), BEST_KNOWN)))
    assert json.dumps(base, sort_keys=True) == before
    assert nb.spec_ops(spec) == BEST_KNOWN


class TestConformance(PluginConformance):
    plugin_module = "searchcore_plugins.nasbench201"
    backbone = "nasbench201"
    input_shape = [3, 8, 8]
    max_cases = 24


# --- the table evaluator ----------------------------------------------------------------------------------


@needs_table
def test_evaluator_reports_the_12_epoch_validation_score_first_then_the_full_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(nb.TABLE_ENV, raising=False)
    arch = nb.arch_str(BEST_KNOWN)
    with TABLE.open() as f:
        row = next(r for r in csv.DictReader(f) if r["arch_str"] == arch)
    reports: list[tuple[int, dict]] = []
    config = {"plugins": {"nasbench201": {"table": str(TABLE)}}}
    got = nb.evaluate(spec_for(BEST_KNOWN), config, lambda epoch, metrics: reports.append((epoch, metrics)))
    assert reports == [(12, {"val_accuracy": pytest.approx(float(row["cifar10_valid_acc_12ep"]) / 100)})]
    assert float(row["cifar10_valid_acc_12ep"]) != float(row["cifar10_test_acc_12ep"])  # the honest column, not the test one
    assert got["val_accuracy"] == pytest.approx(float(row["cifar10_valid_acc"]) / 100)
    assert got["test_accuracy"] == pytest.approx(float(row["cifar10_test_acc"]) / 100)
    assert got["params"] == pytest.approx(float(row["params_M"]) * 1e6)


@needs_table
def test_evaluator_reads_the_table_from_the_environment_and_a_pruned_report_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(nb.TABLE_ENV, str(TABLE))

    def stop(epoch: int, metrics: dict) -> None:
        raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        nb.evaluate(spec_for(BEST_KNOWN), None, stop)


def test_evaluator_errors_are_one_line_naming_the_path_and_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(nb.TABLE_ENV, raising=False)
    spec = spec_for(BEST_KNOWN)
    with pytest.raises(UsageError, match=nb.TABLE_ENV):
        nb.evaluate(spec, {}, lambda *a: None)
    missing = tmp_path / "absent.csv"
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("index,arch_str,params_M\n0,x,1\n")
    bad_value = tmp_path / "value.csv"
    bad_value.write_text(",".join(nb.COLUMNS) + "\n0," + nb.arch_str(BEST_KNOWN) + ",1,not-a-number,2,3\n")
    for path in (missing, bad_header, bad_value):
        with pytest.raises(UsageError) as err:
            nb.evaluate(spec, {"plugins": {"nasbench201": {"table": str(path)}}}, lambda *a: None)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "cifar10_test_acc_12ep" in message


def write_table(path: Path, rows: list[tuple[list[str], str]]) -> Path:
    """A small table: one row per (ops, naswot cell text), made-up accuracies that differ per column."""
    lines = [",".join(nb.COLUMNS)]
    for i, (ops, naswot) in enumerate(rows):
        lines.append(f"{i},{nb.arch_str(ops)},1.5,{90 + i},{91 + i},{80 + i},{70 + i},{naswot}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_small_table_reads_the_honest_fidelity_and_naswot_and_tolerates_a_missing_score(tmp_path: Path) -> None:
    other = ["nor_conv_1x1"] * 6
    table = write_table(tmp_path / "small.csv", [(BEST_KNOWN, "-250.5"), (other, "")])
    config = {"plugins": {"nasbench201": {"table": str(table)}}}
    reports: list[tuple[int, dict]] = []
    got = nb.evaluate(spec_for(other), config, lambda epoch, metrics: reports.append((epoch, metrics)))
    assert reports == [(12, {"val_accuracy": pytest.approx(0.71)})]  # valid_12ep, not test_12ep (0.81)
    assert got == {"val_accuracy": pytest.approx(0.91), "test_accuracy": pytest.approx(0.92), "params": pytest.approx(1.5e6)}
    assert nb.zero_cost(spec_for(BEST_KNOWN), config) == {"naswot": pytest.approx(-250.5)}
    assert nb.zero_cost(spec_for(other), config) == {}  # not scored: no score, no error
    assert nb.load_table(table)[nb.arch_str(other)].naswot is None
    with pytest.raises(UsageError, match="no row"):
        nb.zero_cost(spec_for(["none"] * 6), config)


@needs_table
def test_zero_cost_lookup_on_the_real_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(nb.TABLE_ENV, str(TABLE))
    arch = nb.arch_str(BEST_KNOWN)
    with TABLE.open() as f:
        row = next(r for r in csv.DictReader(f) if r["arch_str"] == arch)
    assert nb.zero_cost(spec_for(BEST_KNOWN), None) == {"naswot": pytest.approx(float(row["naswot_score"]))}
    missing = sum(e.naswot is None for e in nb.load_table(TABLE).values())
    assert 0 < missing < 1000  # the README: 341 cells the authors did not score


def test_evaluator_refuses_specs_without_one_repeated_cell() -> None:
    spec = spec_for(BEST_KNOWN)
    spec["stages"][1]["body"][0]["ops"] = ["none"] * 6
    with pytest.raises(SpecError, match="one cell"):
        nb.spec_ops(spec)
    with pytest.raises(SpecError):
        nb.spec_ops({"stages": []})


# --- the strategies, on synthetic objectives (no table needed) ---------------------------------------------


def toy(trial: optuna.Trial) -> float:
    xs = [trial.suggest_categorical(f"x{i}", ["a", "b", "c", "d"]) for i in range(3)]
    return sum("abcd".index(x) for x in xs) + 0.1 * "abcd".index(xs[0])


def run_study(sampler: optuna.samplers.BaseSampler, n: int, objective=toy, directions=("maximize",)) -> optuna.Study:
    study = optuna.create_study(directions=list(directions), sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


def test_evolution_sampler_is_seeded_replayable_and_never_repeats() -> None:
    first = run_study(EvolutionSampler(population_size=8, tournament_size=3, seed=3), 64)
    again = run_study(EvolutionSampler(population_size=8, tournament_size=3, seed=3), 64)
    other = run_study(EvolutionSampler(population_size=8, tournament_size=3, seed=4), 64)
    params = [t.params for t in first.trials]
    assert params == [t.params for t in again.trials]
    assert params != [t.params for t in other.trials]
    names = sorted(params[0])
    assert len({param_key(p, names) for p in params}) == 64  # 4**3 configurations: the whole space, once each
    assert first.best_value == pytest.approx(9.3)


def test_evolution_children_are_one_mutation_from_a_population_member() -> None:
    study = run_study(EvolutionSampler(population_size=10, tournament_size=4, seed=0, avoid_duplicates=False), 40)
    trials = study.trials
    for t in trials[10:]:
        population = trials[t.number - 10 : t.number]
        distances = [sum(t.params[k] != p.params[k] for k in t.params) for p in population]
        assert 1 in distances  # the parent, one parameter changed


def test_evolution_handles_numbers_conditions_and_several_objectives() -> None:
    def mixed(trial: optuna.Trial) -> tuple[float, float]:
        kind = trial.suggest_categorical("kind", ["small", "big"])
        width = trial.suggest_int("width", 1, 8) if kind == "big" else 1
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return float(width), -abs(lr - 0.01)

    study = run_study(
        EvolutionSampler(population_size=6, tournament_size=3, seed=1), 40, mixed, ("maximize", "maximize")
    )
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all(1e-4 <= t.params["lr"] <= 1e-1 for t in study.trials)
    assert any(t.params["kind"] == "big" for t in study.trials[6:])


def test_spearman_is_a_rank_correlation() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0 and spearman([1, 2], [1, 2]) == 0.0


def toy_proxy(params: dict) -> float | None:
    """A noisy-free proxy of :func:`toy` that cannot score configurations starting with 'd'."""
    return None if params["x0"] == "d" else float(sum("abcd".index(v) for v in params.values()))


@pytest.mark.parametrize("with_scorer", [True, False])
def test_zero_cost_evolution_never_repeats_scores_full_dicts_once_and_works_without_a_proxy(with_scorer: bool) -> None:
    asked: list[dict] = []

    def scorer(params: dict) -> float | None:
        asked.append(dict(params))
        return toy_proxy(params)

    sampler = ZeroCostEvolutionSampler(scorer=scorer if with_scorer else None, seed=0, start=6, population_size=6)
    study = run_study(sampler, 40)
    names = sorted(study.trials[0].params)
    keys = [param_key(t.params, names) for t in study.trials]
    assert len(set(keys)) == len(keys)
    assert study.best_value >= 9.0  # 9.3 is the optimum of 64
    if with_scorer:
        assert asked and all(sorted(p) == names for p in asked)  # every dimension, every time
        assert len({param_key(p, names) for p in asked}) == len(asked) == sampler.scored_count  # never twice
    else:
        assert asked == [] and sampler.scored_count == 0


def test_zero_cost_evolution_follows_a_good_proxy_in_its_start() -> None:
    def start_mean(scorer) -> float:
        values = []
        for seed in range(5):
            study = run_study(ZeroCostEvolutionSampler(scorer=scorer, seed=seed, start=8, group=8, population_size=8), 8)
            values += [t.value for t in study.trials[1:]]  # the first trial is drawn before the space is known
        return sum(values) / len(values)

    assert start_mean(toy_proxy) > start_mean(None) + 1.0


def screened_study(pruner: ScheduledPromotionPruner, scores: list[tuple[str, float]]) -> optuna.Study:
    """Trials over one parameter, each reporting its score at step 12; continued ones complete with 10x it."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for x, score in scores:
        study.enqueue_trial({"x": x})
        trial = study.ask()
        trial.suggest_categorical("x", list("abcdefghij"))
        trial.report(score, 12)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 10 * score)
    return study


def test_scheduled_promotion_waits_then_promotes_the_best_screened_configuration() -> None:
    # 200-step trials screened at 12: one full training is worth 200/12 screenings; first after 1, then every 0.5
    pruner = ScheduledPromotionPruner(first=1.0, every=0.5, max_step=200)
    scores = [(x, v) for x, v in zip("abcdefghij", [0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.6, 0.1, 0.2, 0.3])]
    # 17 screenings before the first promotion is due; then only the best screened configuration ("b") may go on
    study = screened_study(pruner, scores + scores + [("b", 0.9), ("c", 0.2)])
    states = [t.state for t in study.trials]
    assert all(s == optuna.trial.TrialState.PRUNED for s in states[:20])  # "b" at 11 came too early, "h".."j" too low
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in complete] == [20] and complete[0].params == {"x": "b"}
    assert states[21] == optuna.trial.TrialState.PRUNED  # the next is due only after 0.5 more trainings' worth


def test_zero_cost_sampler_re_proposes_what_the_schedule_promotes() -> None:
    sampler, pruner = zero_cost_evolution(scorer=toy_proxy, seed=0, max_step=200, first=1.0, every=0.5)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for _ in range(40):
        trial = study.ask()
        value = toy(trial)
        trial.report(value, 12)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert complete, "a promotion was due after 17 screenings"
    first = complete[0]
    earlier = [t for t in pruned if t.number < first.number]
    assert first.value == max(t.intermediate_values[12] for t in earlier)  # the best screened so far
    assert any(t.params == first.params for t in earlier)  # a repeat of a screened configuration


def test_make_sampler_offers_the_scorer_only_to_factories_that_take_it() -> None:
    from searchcore.engine.samplers import make_sampler
    from searchcore.plugins.host import get_host

    zc = make_sampler("zc-evolution", 0, ["maximize"], get_host(), epochs=200, scorer=toy_proxy)
    assert isinstance(zc, ZeroCostEvolutionSampler) and zc.scorer is toy_proxy
    assert isinstance(zc.pruner, ScheduledPromotionPruner) and zc.pruner.max_step == 200
    assert make_sampler("zc-evolution", 0, ["maximize"], get_host()).scorer is None
    assert make_sampler("tpe", 0, ["maximize"], get_host(), scorer=toy_proxy) is not None


def test_no_repeat_wrapper_keeps_tpe_from_repeating() -> None:
    study = run_study(NoRepeatSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=5), seed=0), 40)
    names = sorted(study.trials[0].params)
    keys = [param_key(t.params, names) for t in study.trials]
    assert len(set(keys)) == len(keys)


def screen(study: optuna.Study, score: float, params: dict | None = None) -> bool:
    """One trial reporting ``score`` at the 12-epoch step; finished as the pruner decides. True: stopped."""
    if params is not None:
        study.enqueue_trial(params)
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution(["a", "b", "c"])} if params else {})
    trial.report(score, 12)
    stopped = trial.should_prune()
    if stopped:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, score)
    return stopped


def test_promotion_pruner_screens_then_promotes_the_top_fraction() -> None:
    study = optuna.create_study(direction="maximize", pruner=PromotionPruner(eta=4, min_trials=4))
    decisions = [screen(study, score) for score in [0.1, 0.2, 0.3, 0.4, 0.9, 0.0, 0.95, 0.5, 0.96]]
    # warm-up: the first 4 stop; then a trial goes on only when it is in the top quarter so far
    assert decisions == [True, True, True, True, False, True, False, True, False]


def test_promotion_pruner_stops_a_configuration_that_already_finished() -> None:
    study = optuna.create_study(direction="maximize", pruner=PromotionPruner(eta=2, min_trials=0))
    assert screen(study, 0.5, {"x": "a"}) is False
    assert screen(study, 0.9, {"x": "a"}) is True  # known already: its full result is in the study
    assert screen(study, 0.9, {"x": "b"}) is False


# --- the benchmark: budget accounting and a tiny run -----------------------------------------------------


@pytest.fixture
def nb201(monkeypatch: pytest.MonkeyPatch):
    """``benchmarks.nb201``: the ``benchmarks`` package lives beside ``tests``, not in the installed distribution."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.nb201")


@needs_table
@pytest.mark.parametrize("strategy", ["random", "mf-evolution", "zc-evolution"])
def test_benchmark_charges_every_lookup_the_strategy_sees(strategy: str, nb201) -> None:
    got = nb201.search(strategy, 0, [4.0], TABLE)
    assert got["spent"] <= 4.0 + 1e-9
    assert got["spent"] == pytest.approx(got["screened"] * 12 / 200 + got["full"] + got["proxy"] * 0.0005)
    assert (got["proxy"] > 0) == (strategy == "zc-evolution")
    if strategy == "random":
        assert (got["screened"], got["full"], got["trials"]) == (0, 4, 4)
    else:
        assert got["screened"] == got["trials"]  # every trial is screened first, promoted ones pay 1 + 12/200
        assert got["spent"] > 4.0 - 1.0 - 12 / 200  # it stops only when no full lookup fits any more
    result = got["budgets"]["4"]
    assert result["full"] == got["full"]
    assert (result["test"] is None) == (got["full"] == 0 and got["screened"] == 0)
    assert result["fidelity"] == ("full" if got["full"] else "12 epochs")


@needs_table
def test_benchmark_reports_the_best_by_validation_at_the_highest_fidelity_reached(nb201) -> None:
    got = nb201.search("zc-evolution", 1, [0.5, 10.0], TABLE)
    low, high = got["budgets"]["0.5"], got["budgets"]["10"]
    assert low["fidelity"] == "12 epochs" and low["full"] == 0 and low["test"] is not None
    assert high["fidelity"] == "full" and high["full"] >= 1


def test_ledger_refuses_a_lookup_that_would_overrun(nb201) -> None:
    ledger = nb201.Ledger(1.1)
    ledger.charge(nb201.LOW_COST)
    assert ledger.can(nb201.FULL_COST)
    ledger.charge(nb201.FULL_COST)
    assert not ledger.can(nb201.LOW_COST) and (ledger.low, ledger.full) == (1, 1)


@needs_table
def test_benchmark_smoke_run_writes_its_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture, nb201) -> None:
    out = tmp_path / "nb201.json"
    assert (
        nb201.main(["--table", str(TABLE), "--seeds", "2", "--budgets", "2", "3", "--jobs", "1", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert set(data["summary"]) == set(nb201.STRATEGIES)
    for strategy in nb201.STRATEGIES:
        assert strategy in printed
        assert (
            data["summary"][strategy]["budgets"]["3"]["n"] + data["summary"][strategy]["budgets"]["3"]["none_found"]
            == 2
        )
    assert len(data["runs"]) == 2 * len(nb201.STRATEGIES)
