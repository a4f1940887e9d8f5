"""The conformance kit: a pytest base class that every improvement plugin's tests inherit.

Why: a plugin that passes these checks loads next to the built-ins and any other conforming
plugin, samples the same way under every backend, replays a winner from its params, never
corrupts another plugin's input, and builds and trains for every value it declares. The
built-in plugins run the same class (``tests/test_conformance_builtin.py``)::

    from searchcore.authoring.testing import PluginConformance

    class TestConformance(PluginConformance):
        plugin_module = "searchcore_invres"   # module object or import path
        plugin_name = "invres"                # the entry-point name (derived when omitted)

The plugin need not be installed: an uninstalled module is loaded under ``plugin_name`` as
if it had an entry point. The host loads only the built-ins next to it, so the result does
not depend on what else happens to be installed. Assertion messages name the case (the
params) that failed, because pytest does not rewrite assertions outside test modules.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata as md
import json
import math
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import pytest

from searchcore.plugins.host import ENV_DISABLE, ENV_PLUGINS, GROUP, PluginHost
from searchcore.space import Dimension, ParamsTrial, SearchSpace

BUILTIN_PACKAGE = "searchcore"
IMPROVEMENT_HOOKS = ("searchcore_dimensions", "searchcore_transform")


# --- loading the plugin under test -----------------------------------------------------------


def import_plugin(target: ModuleType | str) -> ModuleType:
    """The plugin module from a module object or an import path."""
    if isinstance(target, ModuleType):
        return target
    if isinstance(target, str) and target:
        return importlib.import_module(target)
    raise TypeError(f"plugin_module must be a module or an import path, got {target!r}")


def builtin_entry_points() -> list[md.EntryPoint]:
    """The entry points searchcore itself ships (core and the built-in improvements)."""
    return [
        ep for ep in md.entry_points(group=GROUP) if ep.dist is not None and ep.dist.metadata["Name"] == BUILTIN_PACKAGE
    ]


def derive_plugin_name(module: ModuleType) -> str:
    """The name an installed entry point gives the module, else ``searchcore_ghost.plugin`` -> ``ghost``."""
    for ep in md.entry_points(group=GROUP):
        if ep.module == module.__name__:
            return ep.name
    parts = [p for p in module.__name__.split(".") if p not in ("plugin", "plugins")] or [module.__name__]
    return parts[-1].removeprefix("searchcore_")


@contextmanager
def _without_env_plugins() -> Iterator[None]:
    """Hide SEARCHCORE_PLUGINS/SEARCHCORE_DISABLE so the host under test is the same everywhere."""
    saved = {k: os.environ.pop(k) for k in (ENV_PLUGINS, ENV_DISABLE) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def make_host(module: ModuleType, name: str) -> PluginHost:
    """A host with the built-ins plus ``module`` under ``name``, installed or not."""
    eps = [ep for ep in builtin_entry_points() if ep.name != name and ep.module != module.__name__]
    own = [ep for ep in md.entry_points(group=GROUP) if ep.name == name and ep.module == module.__name__]
    eps.append(own[0] if own else md.EntryPoint(name=name, value=module.__name__, group=GROUP))
    with _without_env_plugins():
        return PluginHost(entry_points=eps)


# --- what the tests look at ------------------------------------------------------------------


@dataclass
class Case:
    """One assignment of the plugin's dimensions, labelled for failure messages."""

    label: str
    params: dict[str, Any]


@dataclass
class Subject:
    """The plugin under test, loaded once per test class."""

    name: str
    module: ModuleType
    host: PluginHost
    space: SearchSpace
    input_shape: list[int]
    classes: int
    cases: list[Case] = field(default_factory=list)

    @property
    def options(self) -> dict[str, Any]:
        return self.space.options.get(self.name, {})

    def transform(self, spec: dict, params: dict[str, Any]) -> dict:
        """Call only this plugin's ``searchcore_transform`` hook, as the host would."""
        got = self.host.call_each(
            "searchcore_transform", plugins=[self.name], spec=spec, params=params, options=self.options
        )
        return spec if not got or got[0][1] is None else got[0][1]

    def own_blocks(self) -> list[str]:
        return sorted(b for b in self.host.catalog("blocks") if self.host.provider("blocks", b) == self.name)


def value_domain(d: Dimension, limit: int = 8) -> list[Any]:
    """Values to try for one dimension: every choice, else the ends, the off value and a few between."""
    if d.kind == "categorical":
        return list(d.choices)
    if d.kind == "int":
        step = int(d.step or 1)
        values = list(range(int(d.low), int(d.high) + 1, step))
        if len(values) > limit:
            idx = {round(i * (len(values) - 1) / (limit - 1)) for i in range(limit)}
            values = sorted({values[i] for i in idx} | {d.off})
        return values
    lo, hi = float(d.low), float(d.high)
    mid = math.sqrt(lo * hi) if d.log else (lo + hi) / 2
    return sorted({lo, mid, hi, float(d.off)})


def _same(a: Any, b: Any) -> bool:
    """Equality that tells True from 1, as Optuna's categorical choices do."""
    return type(a) is type(b) and a == b


def activation(d: Dimension, by_name: dict[str, Dimension]) -> dict[str, Any]:
    """Parent values that make a conditional dimension active (its off value when that allows it)."""
    need: dict[str, Any] = {}
    while d.condition is not None:
        parent_name, allowed = d.condition
        parent = by_name.get(parent_name)
        if parent is None:
            raise AssertionError(
                f"dimension {d.name!r}: condition names {parent_name!r}, which this plugin does not declare"
            )
        usable = [v for v in allowed if parent.contains(v)]
        if not usable:
            raise AssertionError(
                f"dimension {d.name!r}: no value in its condition {list(allowed)} is a value of {parent_name!r}"
            )
        need[parent_name] = parent.off if any(_same(parent.off, v) for v in usable) else usable[0]
        d = parent
    return need


def assign(dims: list[Dimension], overrides: dict[str, Any]) -> dict[str, Any]:
    """Params with every active dimension at its off value except the overridden ones."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.active(params):
            params[d.name] = overrides.get(d.name, d.off)
    return params


def enumerate_cases(dims: list[Dimension], sampled: list[dict[str, Any]], limit: int) -> list[Case]:
    """All off; then each value of each dimension with the others off; then seeded samples; deduplicated, capped."""
    by_name = {d.name: d for d in dims}
    cases = [Case("all off", assign(dims, {}))]
    for d in dims:
        base = activation(d, by_name)
        for v in value_domain(d):
            cases.append(Case(f"{d.name}={v!r}", assign(dims, {**base, d.name: v})))
    cases += [Case(f"sample {i}", p) for i, p in enumerate(sampled)]
    seen: set[str] = set()
    unique = []
    for c in cases:
        key = json.dumps(c.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique[:limit]


def seeded_samples(space: SearchSpace, seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` params from Optuna's RandomSampler(seed), exactly as a random search would draw them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, 0.0)
    return out


def _each(cases: list[Case], check: Callable[[Case], None]) -> None:
    """Run ``check`` on every case and fail once, listing every case that failed."""
    failures = []
    for c in cases:
        try:
            check(c)
        except Exception as e:  # report all cases, not only the first
            where = traceback.extract_tb(e.__traceback__)[-1]
            message = " ".join(str(e).split())
            failures.append(f"  {c.label} {c.params}: {type(e).__name__}: {message} ({where.filename}:{where.lineno})")
    if failures:
        pytest.fail(f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures), pytrace=False)


# --- the base class ----------------------------------------------------------------------------


class PluginConformance:
    """Subclass it as ``TestSomething`` and set ``plugin_module``; every test below then runs on the plugin.

    Each value of each dimension is tried with the others off (the cases), plus ``samples``
    seeded random draws, capped at ``max_cases`` so the class stays a few seconds on a CPU.
    """

    plugin_module: ClassVar[ModuleType | str]
    plugin_name: ClassVar[str | None] = None
    backbone: ClassVar[str] = "seed-cnn"
    backbone_options: ClassVar[dict[str, Any]] = {}
    options: ClassVar[dict[str, Any]] = {}
    input_shape: ClassVar[list[int]] = [1, 8, 8]
    classes: ClassVar[int] = 10
    batch_size: ClassVar[int] = 2
    seed: ClassVar[int] = 0
    samples: ClassVar[int] = 6
    max_cases: ClassVar[int] = 64

    # --- fixtures ----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def loaded(cls) -> tuple[ModuleType, str, PluginHost]:
        """The module, its plugin name and a host holding it next to the built-ins."""
        return load_plugin(cls)

    @pytest.fixture(scope="class")
    @classmethod
    def subject(cls, loaded: tuple[ModuleType, str, PluginHost]) -> Subject:
        """The plugin's own search space over the backbone, with the cases to check."""
        return load_subject(cls, loaded)

    # --- registration ------------------------------------------------------------------------

    def test_registers_cleanly(self, loaded: tuple[ModuleType, str, PluginHost]) -> None:
        """Loads without error next to the built-ins, implements an improvement hook, takes no built-in's name."""
        module, name, host = loaded
        host.catalog("blocks")
        info = host.infos.get(name)
        assert info is not None, f"plugin {name!r} was not loaded; loaded: {sorted(host.infos)}"
        assert info.ok, f"plugin {name!r}: {info.status}"
        assert any(h in info.hooks for h in IMPROVEMENT_HOOKS), (
            f"plugin {name!r} implements {info.hooks}; an improvement plugin implements "
            f"{' and/or '.join(IMPROVEMENT_HOOKS)}"
        )
        builtin = {ep.name: ep.module for ep in builtin_entry_points()}
        assert builtin.get(name, module.__name__) == module.__name__, (
            f"plugin name {name!r} is a built-in plugin's name"
        )
        assert name.isidentifier() and name == name.lower(), f"plugin name {name!r}: use a lowercase identifier"

    def test_options_are_plain_data(self, subject: Subject) -> None:
        """Option defaults are what a YAML space file can override; the defaults pass the host's own type check."""
        defaults = subject.host.options(subject.name)
        for key, value in defaults.items():
            assert isinstance(key, str) and key.isidentifier(), f"option {key!r}: option names are identifiers"
            assert _plain(value), (
                f"option {key!r}={value!r}: defaults are None, bool, int, float, str, or lists/dicts of them"
            )
        assert subject.host.resolve_options(subject.name, copy.deepcopy(defaults), "<defaults>") == defaults

    # --- dimensions --------------------------------------------------------------------------

    def test_dimensions_valid_and_namespaced(self, subject: Subject) -> None:
        """Dimensions exist for the backbone, named ``<plugin>.`` and unique; off values and conditions are valid."""
        dims, name = subject.space.dimensions, subject.name
        assert dims, (
            f"plugin {name!r} declares no dimensions for backbone {type(self).backbone!r} "
            f"with input {subject.input_shape}; set backbone / input_shape / options in the test class "
            "to a setting the plugin applies to"
        )
        names = [d.name for d in dims]
        assert len(set(names)) == len(names), (
            f"duplicate dimension names: {sorted({n for n in names if names.count(n) > 1})}"
        )
        seen: set[str] = set()
        for d in dims:
            assert d.name.startswith(f"{name}.") and len(d.name) > len(name) + 1, (
                f"dimension {d.name!r} must start with {name + '.'!r}"
            )
            assert d.contains(d.off), (
                f"dimension {d.name!r}: off value {d.off!r} is not one of its values {d.describe()}"
            )
            if d.condition is not None:
                parent = d.condition[0]
                assert parent in seen, (
                    f"dimension {d.name!r}: its condition's dimension {parent!r} must be declared before it, "
                    "by this plugin"
                )
            seen.add(d.name)
        for block in subject.own_blocks():
            assert block.startswith(f"{name}."), f"block type {block!r} must start with {name + '.'!r}"

    def test_off_leaves_the_spec_unchanged(self, subject: Subject) -> None:
        """With every dimension off the transformation is the identity, so 'all off' is the backbone."""
        off = subject.space.off_params()
        got = subject.transform(copy.deepcopy(subject.space.base), off)
        assert got == subject.space.base, f"with every dimension off {off} the transformation changed the spec"

    def test_every_dimension_changes_the_spec(self, subject: Subject) -> None:
        """A dimension whose values never change the spec (often a name typo in the transform) wastes the budget."""
        dims = subject.space.dimensions
        by_name = {d.name: d for d in dims}
        dead = []
        for d in dims:
            base = activation(d, by_name)
            specs = {
                json.dumps(subject.space.spec(assign(dims, {**base, d.name: v})), sort_keys=True)
                for v in value_domain(d)
            }
            if len(specs) < 2:
                dead.append(d.name)
        assert not dead, (
            f"these dimensions never change the spec: {dead} (does the transformation read the same names?)"
        )

    # --- sampling and replay -----------------------------------------------------------------

    def test_sampling_is_seeded(self, subject: Subject) -> None:
        """The same seed draws the same params; every value drawn is a value of its dimension."""
        cls = type(self)
        first = seeded_samples(subject.space, cls.seed, cls.samples)
        again = seeded_samples(subject.space, cls.seed, cls.samples)
        assert first == again, f"RandomSampler(seed={cls.seed}) drew different params twice: {first} != {again}"
        by_name = {d.name: d for d in subject.space.dimensions}
        for params in first:
            for key, value in params.items():
                assert by_name[key].contains(value), (
                    f"sampled {key}={value!r}, not a value of {by_name[key].describe()}"
                )

    def test_replay_from_params(self, subject: Subject) -> None:
        """A fixed params dict (a winner's, also after a JSON round trip) replays to the same params and spec."""
        space = subject.space

        def check(c: Case) -> None:
            stored = json.loads(json.dumps(c.params))
            replayed = space.sample(ParamsTrial(stored, c.label))
            assert replayed == c.params, f"replayed {replayed}"
            assert space.rebuild_params(stored, c.label) == c.params
            assert space.spec(replayed) == space.spec(c.params), "the replayed params give another spec"

        _each(subject.cases, check)

    # --- the transformation ------------------------------------------------------------------

    def test_transform_is_pure(self, subject: Subject) -> None:
        """The transformation never mutates its spec, params or options and returns the same spec for the same input."""

        def check(c: Case) -> None:
            spec, params, options = (
                copy.deepcopy(subject.space.base),
                copy.deepcopy(c.params),
                copy.deepcopy(subject.options),
            )
            first = subject.transform(spec, params)
            assert spec == subject.space.base, (
                "the transformation mutated its input spec (copy it first: searchcore.arch.spec.copy_spec)"
            )
            assert params == c.params, "the transformation mutated its params"
            assert options == subject.options, "the transformation mutated its options"
            again = subject.transform(copy.deepcopy(subject.space.base), copy.deepcopy(c.params))
            assert first == again, "the same input gave two different specs"

        _each(subject.cases, check)

    def test_spec_round_trips(self, subject: Subject) -> None:
        """Every transformed spec is valid and survives JSON and the one-line form unchanged."""
        from searchcore.arch.spec import decode, encode, from_json, spec_hash, to_json, validate

        def check(c: Case) -> None:
            spec = validate(subject.space.spec(c.params), c.label)
            assert decode(encode(spec)) == spec, f"one-line form {encode(spec)!r} does not decode to the same spec"
            assert from_json(to_json(spec)) == spec, "JSON round trip changed the spec"
            assert spec_hash(copy.deepcopy(spec)) == spec_hash(spec)

        _each(subject.cases, check)

    # --- building ----------------------------------------------------------------------------

    def test_every_value_builds_and_trains(self, subject: Subject) -> None:
        """Each case builds, runs forward and backward on a tiny CPU batch, with finite outputs and gradients."""
        import torch
        from torch.nn import functional as F

        from searchcore.arch.build import build

        registry = subject.host.blocks()
        cls = type(self)
        gen = torch.Generator().manual_seed(cls.seed)
        x = torch.randn(cls.batch_size, *subject.input_shape, generator=gen)
        y = torch.randint(0, subject.classes, (cls.batch_size,), generator=gen)

        def check(c: Case) -> None:
            model = build(subject.space.spec(c.params), registry, seed=cls.seed).train()
            out = model(x)
            assert tuple(out.shape) == (cls.batch_size, subject.classes), f"output shape {tuple(out.shape)}"
            assert torch.isfinite(out).all(), "non-finite output"
            F.cross_entropy(out, y).backward()
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, f"parameters without a gradient (built but unused?): {missing[:5]}"
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            assert not bad, f"non-finite gradients in {bad[:5]}"

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a batch of 2: more threads only add overhead, and stall on a busy machine
        try:
            _each(subject.cases, check)
        finally:
            torch.set_num_threads(threads)

    # --- living next to others ---------------------------------------------------------------

    def test_no_clash_with_builtins(self, subject: Subject) -> None:
        """No dimension name or block type is also a built-in's, so the plugin installs next to all of them."""
        from searchcore.arch.build import CORE_BLOCKS

        host, name = subject.host, subject.name
        theirs: dict[str, str] = {}
        for other in host.improvement_plugins():
            if other == name:
                continue
            opts = {other: host.resolve_options(other, {}, "<defaults>")}
            for d in host.dimensions(subject.space.base, opts, [other]):
                theirs[d.name] = other
        clashes = [
            f"dimension {d.name!r} (also plugin {theirs[d.name]!r})"
            for d in subject.space.dimensions
            if d.name in theirs
        ]
        for block in subject.own_blocks():
            if block in CORE_BLOCKS:
                clashes.append(f"block type {block!r} (a core block)")
        for block, other in _block_clashes(host, name):
            clashes.append(f"block type {block!r} (also plugin {other!r})")
        assert not clashes, "name clashes: " + "; ".join(clashes)


def load_plugin(cls: type[PluginConformance]) -> tuple[ModuleType, str, PluginHost]:
    """What the ``loaded`` fixture returns; a function so the kit's own tests can call it."""
    if not hasattr(cls, "plugin_module"):
        pytest.fail(f"{cls.__name__}: set plugin_module to the plugin's module or import path", pytrace=False)
    module = import_plugin(cls.plugin_module)
    name = cls.plugin_name or derive_plugin_name(module)
    return module, name, make_host(module, name)


def load_subject(cls: type[PluginConformance], loaded: tuple[ModuleType, str, PluginHost]) -> Subject:
    """What the ``subject`` fixture returns: the plugin's own space over the backbone and its cases."""
    from searchcore.engine.config import SpaceConfig, resolve

    module, name, host = loaded
    host.catalog("blocks")  # a clash while registering blocks breaks the plugin: see it here
    info = host.infos.get(name)
    if info is None or not info.ok:
        pytest.fail(f"plugin {name!r} did not load: {info.status if info else 'not found'}", pytrace=False)
    cfg = SpaceConfig(
        source=f"<conformance {name}>",
        text="",
        dataset=None,
        backbone=cls.backbone,
        backbone_options=dict(cls.backbone_options),
        plugins={name: dict(cls.options)},
        input=list(cls.input_shape),
        classes=cls.classes,
    )
    space = resolve(cfg, host, cfg.input, cfg.classes)
    subject = Subject(name, module, host, space, list(cls.input_shape), cls.classes)
    subject.cases = enumerate_cases(space.dimensions, seeded_samples(space, cls.seed, cls.samples), cls.max_cases)
    return subject


def _block_clashes(host: PluginHost, name: str) -> list[tuple[str, str]]:
    """Block types this plugin registers that another loaded plugin registers too."""
    found: list[tuple[str, str]] = []
    mine: list[str] = []
    host.call_each("searchcore_blocks", plugins=[name], register=lambda t, f=None: mine.append(t))
    for t in mine:
        provider = host.provider("blocks", t)
        if provider not in (name, "?"):
            found.append((t, provider))
    return found


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


__all__ = [
    "PluginConformance",
    "Subject",
    "Case",
    "load_plugin",
    "load_subject",
    "make_host",
    "import_plugin",
    "enumerate_cases",
    "seeded_samples",
    "value_domain",
]
