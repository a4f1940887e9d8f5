"""The zero-cost rung: the proxies on real models of the default space over digits, the catalog
hook, the scorer a search hands its sampler, and its cost recorded on the study and the parent run."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

import searchcore.plugins.host as host_module
from searchcore.arch.build import build
from searchcore.engine.api import run_search
from searchcore.engine.config import load_space, parse_space, resolve
from searchcore.engine.samplers import make_sampler
from searchcore.engine.settings import Settings
from searchcore.engine.zero_cost import ATTR_PREFIX, ZeroCostScorer, combine, make_scorer, study_cost
from searchcore.plugins.host import PluginHost, configure, get_host
from searchcore.train import proxies
from searchcore.train.data import load_digits

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = str(Path(__file__).parent)


@pytest.fixture(autouse=True)
def keep_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "_HOST", host_module._HOST)


@pytest.fixture(scope="module")
def digits():
    return load_digits(None, None, False, 0, 0.2, 0.2)


@pytest.fixture(scope="module")
def space(digits):
    return resolve(load_space(None), get_host(), digits.input_shape, digits.classes)


@pytest.fixture(scope="module")
def batch(digits) -> torch.Tensor:
    return digits.train_x[:64]


class _Chosen:
    """A trial that answers ``changes`` and, for every other dimension, its off value (else its first choice)."""

    def __init__(self, space, changes: dict) -> None:
        self.changes, self.dims = changes, {d.name: d for d in space.dimensions}

    def suggest_categorical(self, name: str, choices):
        off = self.dims[name].off
        return self.changes.get(name, off if off is not None else list(choices)[0])


def params_for(space, **changes) -> dict:
    """A complete params dict of the default space, as a trial would have it (conditional dimensions included)."""
    return space.sample(_Chosen(space, changes))


def model_for(space, **changes) -> torch.nn.Module:
    """A real model of the default space: every plugin off (the seed CNN) except ``changes``."""
    return build(space.spec(params_for(space, **changes)), get_host().blocks(), seed=0)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the catalog -------------------------------------------------------------------------------------------


def test_core_registers_the_proxies() -> None:
    host = get_host()
    catalog = host.catalog("zero_cost")
    assert {"naswot", "synflow", "params", "macs"} <= set(catalog)
    assert host.provider("zero_cost", "naswot") == "core"
    assert proxies.direction(catalog["params"]) == "minimize" and proxies.direction(catalog["naswot"]) == "maximize"


def test_a_plugin_adds_its_own_proxy_and_cannot_take_a_core_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(TESTS)
    host = PluginHost(extra_modules=["plugins_zero_cost"])
    assert host.provider("zero_cost", "plugins_zero_cost.modules") == "plugins_zero_cost"
    (tmp_path / "zc_clash.py").write_text(
        "from searchcore.plugins.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef searchcore_zero_cost(register):\n    register('naswot', lambda model, batch: 0.0)\n")
    (tmp_path / "zc_notcallable.py").write_text(
        "from searchcore.plugins.hookspecs import hookimpl\n\n"
        "@hookimpl\ndef searchcore_zero_cost(register):\n    register('zc_notcallable.x', 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    host = PluginHost(extra_modules=["zc_clash", "zc_notcallable"])
    host.catalog("zero_cost")
    assert host.infos["zc_clash"].status == "broken: zero-cost proxy 'naswot' is already registered by plugin 'core'"
    assert host.infos["zc_notcallable"].status.startswith("broken: zero-cost proxy 'zc_notcallable.x': expected a callable")
    assert host.provider("zero_cost", "naswot") == "core"


# --- the proxies on real models ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["naswot", "synflow", "params", "macs"])
@pytest.mark.parametrize("changes", [{}, {"normact.bn": True, "normact.act": "gelu", "residual.s2": True, "attention.s1": "se"},
                                     {"normact.act": "silu", "dense.s1": True, "pooling.s3": "conv"}], ids=["seed", "bn-gelu", "silu-dense"])
def test_a_proxy_leaves_the_model_unchanged_and_repeats_itself(space, batch, name, changes) -> None:
    model = model_for(space, **changes)
    before, rng = state(model), torch.random.get_rng_state()
    first = proxies.BUILTIN[name](model, batch)
    second = proxies.BUILTIN[name](model, batch)
    assert first == second and math.isfinite(first)
    assert model.training  # built models come in training mode and stay so
    after = model.state_dict()
    assert set(after) == set(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)  # the caller's random stream is not consumed


def test_naswot_ranks_a_degenerate_network_below_the_seed_cnn(space, batch) -> None:
    """Half width and one stage instead of three: far fewer activation codes to tell the digits apart."""
    seed_cnn = model_for(space)
    spec = space.spec({**space.off_params(), "widthdepth.width": 0.5})
    spec["stages"] = spec["stages"][:1]  # one stage of 16 channels: 8x8 -> 4x4 codes, then the head
    degenerate = build(spec, get_host().blocks(), seed=0)
    assert proxies.naswot(degenerate, batch) < proxies.naswot(seed_cnn, batch)


def test_naswot_separates_different_inputs_better_than_identical_ones(space, batch) -> None:
    """The kernel counts agreements: a batch of copies of one digit has a singular kernel (-inf)."""
    model = model_for(space)
    assert proxies.naswot(model, batch[:1].repeat(8, 1, 1, 1)) == float("-inf")
    assert proxies.naswot(model, batch[:8]) > 0


def test_synflow_grows_with_width_and_needs_no_data(space, batch) -> None:
    scores = [proxies.synflow(model_for(space, **{"widthdepth.width": w})) for w in (0.5, 1.0, 2.0)]
    assert scores[0] < scores[1] < scores[2]
    assert proxies.synflow(model_for(space), batch) == proxies.synflow(model_for(space), None)


def test_params_and_macs_count_the_model(space, batch) -> None:
    from searchcore.arch.build import param_count
    from searchcore.train.objectives import count_macs

    model = model_for(space, **{"widthdepth.width": 2.0})
    assert proxies.params(model, batch) == param_count(model)
    assert proxies.macs(model, batch) == count_macs(model, [1, 8, 8]) > proxies.macs(model_for(space), batch)


# --- the scorer a search hands its sampler ----------------------------------------------------------------------


def test_the_scorer_scores_params_through_the_trials_path_and_counts_its_cost(space, digits) -> None:
    scorer = ZeroCostScorer(space, get_host(), ["naswot"], splits=digits, seed=0)
    assert scorer.candidates == 0 and scorer._batch is None  # nothing done before the first call
    off = space.off_params()
    score = scorer(off)
    assert score == proxies.naswot(build(space.spec(off), get_host().blocks(), seed=0), scorer.inputs())
    wide = scorer({**params_for(space, **{"widthdepth.width": 2.0, "kernel.s1": 5, "attention.s3": "se"}), "unused.param": 1})
    assert isinstance(wide, float) and wide != score
    # a candidate naming only some dimensions (Optuna's relative space leaves out conditional ones) is
    # scored as the network with the others at their off values
    assert scorer({"kernel.s1": 5}) == scorer({**off, "kernel.s1": 5}) != score
    assert scorer({"kernel.s1": 99}) is None  # a value the space refuses: not scorable, not a failure of the search
    assert scorer.candidates == 5 and scorer.failed == 1 and scorer.seconds > 0
    again = ZeroCostScorer(space, get_host(), ["naswot"], splits=digits, seed=0)
    assert again(off) == score  # deterministic: same seed, same batch, same score
    restored = pickle.loads(pickle.dumps(scorer))  # a Ray searcher checkpoint pickles its sampler
    assert restored.cost() == scorer.cost() and restored(off) is None


def test_several_proxies_combine_with_costs_negated(space, digits) -> None:
    scorer = ZeroCostScorer(space, get_host(), ["naswot", "synflow", "params"], splits=digits)
    values = scorer.values(space.off_params())
    assert set(values) == {"naswot", "synflow", "params"}
    expected = math.asinh(values["naswot"]) + math.asinh(values["synflow"]) - math.asinh(values["params"])
    assert scorer(space.off_params()) == pytest.approx(expected)
    assert combine([5.0], ["minimize"]) == -5.0 and combine([float("nan")], ["maximize"]) is None


def test_make_scorer_follows_the_space_file(space, digits) -> None:
    class Runner:
        host, splits = get_host(), digits

    Runner.space = space
    assert make_scorer(parse_space("", "x"), Runner).names == ["naswot"]
    assert make_scorer(parse_space("search: {zero_cost: none}\n", "x"), Runner) is None
    assert make_scorer(parse_space("search: {zero_cost: [synflow, macs]}\n", "x"), Runner).names == ["synflow", "macs"]
    assert make_scorer(parse_space("search: {evaluator: nb201}\n", "x"), Runner) is None


def test_make_sampler_gives_the_scorer_only_to_factories_that_take_it(monkeypatch: pytest.MonkeyPatch, space) -> None:
    import plugins_zero_cost as plugin

    monkeypatch.syspath_prepend(TESTS)
    host = PluginHost(extra_modules=["plugins_zero_cost"])
    plugin.CALLS.clear()

    def scorer(params: dict) -> float:
        return 1.0

    sampler = make_sampler("zc-screen", 0, ["maximize"], host, dimensions=space.dimensions, scorer=scorer)
    make_sampler("zc-plain", 0, ["maximize"], host, scorer=scorer)
    assert plugin.CALLS == [{"factory": "zc-screen", "scorer": scorer}, {"factory": "zc-plain"}]
    assert sampler.scorer is scorer


def test_a_local_search_screens_with_naswot_and_charges_the_cost(workdir: Path, small_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real search: the screening sampler scores SCREENED candidates per trial; the time goes on the
    study and on the parent run as ``zero_cost_seconds`` / ``zero_cost_candidates``."""
    import plugins_zero_cost as plugin

    monkeypatch.syspath_prepend(TESTS)
    configure(["plugins_zero_cost"])
    small_space.write_text(small_space.read_text().replace("sampler: tpe", "sampler: zc-screen, zero_cost: naswot"))
    result = run_search(small_space, Settings(trials=2, epochs=1, name="zc", progress=False, register=False, baseline=False))
    assert result.zero_cost["zero_cost_candidates"] == 2 * plugin.SCREENED
    assert result.zero_cost["zero_cost_seconds"] > 0
    study = optuna.load_study(study_name="zc", storage=f"sqlite:///{workdir / 'searchcore.db'}")
    charges = [v for k, v in study.user_attrs.items() if k.startswith(ATTR_PREFIX)]
    assert len(charges) == 1 and charges[0]["candidates"] == 2 * plugin.SCREENED and charges[0]["failed"] == 0
    assert study_cost(study.user_attrs) == {"zero_cost_seconds": charges[0]["seconds"], "zero_cost_candidates": 2 * plugin.SCREENED}
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["zero_cost_candidates"] == 2 * plugin.SCREENED
    assert parent.data.metrics["zero_cost_seconds"] == pytest.approx(charges[0]["seconds"])


class _Stop(Exception):
    """Ends a search at make_sampler, where the test looks."""


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_every_backend_hands_its_sampler_the_spaces_scorer(small_space: Path, workdir: Path, backend: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from searchcore.engine import samplers

    seen: list[dict] = []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        raise _Stop

    monkeypatch.setattr(samplers, "make_sampler", spy)
    monkeypatch.setattr("searchcore.engine.backends.optuna_search.make_sampler", spy)
    small_space.write_text(small_space.read_text().replace("seed: 0}", "seed: 0, zero_cost: [synflow, params]}"))
    with pytest.raises(_Stop):
        run_search(small_space, Settings(backend=backend, progress=False, tracking_uri=f"sqlite:///{workdir / 'm.db'}"))
    scorer = seen[0]["scorer"]
    assert isinstance(scorer, ZeroCostScorer) and scorer.names == ["synflow", "params"] and scorer.candidates == 0
    small_space.write_text(small_space.read_text().replace("[synflow, params]", "none"))
    seen.clear()
    with pytest.raises(_Stop):
        run_search(small_space, Settings(backend=backend, progress=False, tracking_uri=f"sqlite:///{workdir / 'm.db'}"))
    assert seen[0]["scorer"] is None


def test_the_charges_of_several_processes_add_up() -> None:
    attrs = {ATTR_PREFIX + "a:1:0": {"seconds": 0.5, "candidates": 10, "failed": 0},
             ATTR_PREFIX + "b:2:0": {"seconds": 0.25, "candidates": 5, "failed": 1}, "budget": 20}
    assert study_cost(attrs) == {"zero_cost_seconds": 0.75, "zero_cost_candidates": 15}
    assert study_cost({"budget": 20}) == {}
