"""Search-space files: YAML read with ``yaml.safe_load`` (never executes code or imports
modules), validated key by key, every error one line naming the file and the key path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from searchcore.errors import SpaceFileError, UsageError
from searchcore.plugins.host import PluginHost
from searchcore.space import SearchSpace

DEFAULT_SPACE = "default.yaml"
PRUNERS = ("hyperband", "median", "successive_halving", "none")
OPTIMIZERS = ("adamw", "sgd")

TOP = ("name", "dataset", "backbone", "plugins", "objectives", "budget", "search", "train", "input", "classes")
DATASET = ("name", "root", "download", "val_fraction", "test_fraction")
BACKBONE = ("name", "options")
BUDGET = ("trials", "epochs", "timeout")
SEARCH = ("sampler", "pruner", "seed", "evaluator", "zero_cost")
TRAIN = ("batch_size", "lr", "optimizer", "weight_decay", "momentum", "label_smoothing", "deterministic")


@dataclass
class SpaceConfig:
    """A validated space file. ``source`` is the file's path (or ``<default>``) for error messages."""

    source: str
    text: str
    name: str | None = None
    dataset: dict[str, Any] | None = field(default_factory=lambda: {"name": "digits"})
    backbone: str = "seed-cnn"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] | None = None  # None: every loaded improvement plugin
    objectives: dict[str, dict[str, Any]] = field(default_factory=lambda: {"val_accuracy": {}})
    trials: int = 20
    epochs: int = 5
    timeout: float | None = None
    sampler: str = "auto"
    pruner: str = "hyperband"
    seed: int = 0
    evaluator: str = "train"
    zero_cost: list[str] = field(default_factory=lambda: ["naswot"])  # proxies a strategy may screen with; [] is none
    train: dict[str, Any] = field(default_factory=dict)
    input: list[int] | None = None
    classes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The resolved configuration, as recorded on the search's parent run."""
        return {
            "name": self.name, "dataset": self.dataset, "backbone": self.backbone, "backbone_options": self.backbone_options,
            "plugins": self.plugins, "objectives": self.objectives, "trials": self.trials, "epochs": self.epochs,
            "timeout": self.timeout, "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
            "evaluator": self.evaluator, "zero_cost": self.zero_cost, "train": self.train, "input": self.input, "classes": self.classes,
        }


def load_space(path: str | Path | None = None) -> SpaceConfig:
    """Read and validate a space file; the default space ships inside the package."""
    if path is None:
        text = resources.files("searchcore_spaces").joinpath(DEFAULT_SPACE).read_text()
        return parse_space(text, "<default space>")
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such space file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read space file: {e}") from None
    return parse_space(text, str(path))


MAX_VALUES = 100_000  # values in a space file, an alias counting once per use: no "billion laughs"
MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (no tags that build objects or import modules), except that a key
    given twice in one mapping is an error instead of silently the last value."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the validation refuses it with its own message
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _check_values(data: Any, source: str) -> None:
    """Only what JSON can hold (the configuration is recorded in the study and on MLflow runs), not
    too deep, not too many values: YAML dates, binary and sets, or an alias bomb, fail here in one line."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    count = 0
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise SpaceFileError(source, "", f"more than {MAX_VALUES:,} values (aliases count once per use); a space file is small")
        if depth > MAX_DEPTH:
            raise SpaceFileError(source, path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            raise SpaceFileError(source, path or "top level", f"expected null, true/false, a number, a string, a list or a mapping, got {_kind(value)}")


def parse_space(text: str, source: str) -> SpaceConfig:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise SpaceFileError(source, "", f"not valid YAML ({problem} at {where})") from None
    except RecursionError:
        raise SpaceFileError(source, "", f"not valid YAML (nested more than {MAX_DEPTH} levels deep)") from None
    if data is None:
        data = {}
    _check_values(data, source)
    v = _V(source)
    v.mapping(data, "", TOP)
    cfg = SpaceConfig(source=source, text=text)
    if "name" in data:
        cfg.name = v.name(data["name"], "name")
    if "dataset" in data:
        cfg.dataset = v.dataset(data["dataset"])
    if "backbone" in data:
        b = data["backbone"]
        if isinstance(b, str):
            cfg.backbone = v.name(b, "backbone")
        else:
            v.mapping(b, "backbone", BACKBONE, required=("name",))
            cfg.backbone = v.name(b["name"], "backbone.name")
            cfg.backbone_options = v.mapping(b.get("options") or {}, "backbone.options", None)
    if "plugins" in data:
        cfg.plugins = v.plugins(data["plugins"])
    if "objectives" in data:
        cfg.objectives = v.objectives(data["objectives"])
    if "budget" in data:
        b = v.mapping(data["budget"], "budget", BUDGET)
        cfg.trials = v.integer(b.get("trials", cfg.trials), "budget.trials", 1, 1_000_000)
        cfg.epochs = v.integer(b.get("epochs", cfg.epochs), "budget.epochs", 1, 10_000)
        if b.get("timeout") is not None:
            cfg.timeout = v.number(b["timeout"], "budget.timeout", 1.0, 1e9)
    if "search" in data:
        s = v.mapping(data["search"], "search", SEARCH)
        cfg.sampler = v.name(s.get("sampler", cfg.sampler), "search.sampler")
        cfg.pruner = v.choice(s.get("pruner", cfg.pruner), "search.pruner", PRUNERS)
        cfg.seed = v.integer(s.get("seed", cfg.seed), "search.seed", 0, 2**31 - 1)
        cfg.evaluator = v.name(s.get("evaluator", cfg.evaluator), "search.evaluator")
        if "zero_cost" in s:
            cfg.zero_cost = v.proxies(s["zero_cost"], "search.zero_cost")
    if "train" in data:
        t = v.mapping(data["train"], "train", TRAIN)
        out: dict[str, Any] = {}
        if "batch_size" in t:
            out["batch_size"] = v.integer(t["batch_size"], "train.batch_size", 1, 65536)
        for key, lo, hi in (("lr", 1e-7, 10.0), ("weight_decay", 0.0, 1.0), ("momentum", 0.0, 1.0), ("label_smoothing", 0.0, 0.5)):
            if key in t:
                out[key] = v.number(t[key], f"train.{key}", lo, hi)
        if "optimizer" in t:
            out["optimizer"] = v.choice(t["optimizer"], "train.optimizer", OPTIMIZERS)
        if out.get("momentum", 0.0) >= 1.0:  # the trainer needs momentum < 1: refuse it here, not in every trial
            raise SpaceFileError(source, "train.momentum", f"{out['momentum']} is out of range; allowed: 0 <= momentum < 1")
        if "deterministic" in t:
            if not isinstance(t["deterministic"], bool):
                raise SpaceFileError(source, "train.deterministic", f"expected true or false, got {_kind(t['deterministic'])}")
            out["deterministic"] = t["deterministic"]
        cfg.train = out
    if "input" in data:
        shape = data["input"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(x) and 0 < x <= 4096 for x in shape)):
            raise SpaceFileError(source, "input", f"expected [channels, height, width] of positive integers, got {shape!r}")
        cfg.input = list(shape)
    if "classes" in data:
        cfg.classes = v.integer(data["classes"], "classes", 2, 100_000)
    if cfg.dataset is None and (cfg.input is None or cfg.classes is None):
        raise SpaceFileError(source, "dataset", "is null, so 'input' and 'classes' must be given")
    return cfg


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _kind(x: Any) -> str:
    if x is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(type(x), type(x).__name__)


class _V:
    """Validators that raise one-line :class:`SpaceFileError` s."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> SpaceFileError:
        return SpaceFileError(self.source, key, problem)

    def mapping(self, value: Any, key: str, allowed: tuple | None, required: tuple = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key or "top level", f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key or "top level", f"keys must be strings, got {_kind(k)} {k!r}")
            if allowed is not None and k not in allowed:
                path = f"{key}.{k}" if key else k
                raise self.fail(path, f"unknown key; allowed: {', '.join(allowed)}")
        for k in required:
            if k not in value:
                raise self.fail(f"{key}.{k}", "is required")
        return value

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple) -> str:
        if value not in allowed or not isinstance(value, str):
            raise self.fail(key, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if not _is_int(value):
            raise self.fail(key, f"expected an integer, got {_kind(value)} {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is out of range; allowed: {lo}..{hi}")
        return value

    def number(self, value: Any, key: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise self.fail(key, f"expected a number, got {_kind(value)} {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"{value} is out of range; allowed: {lo:g}..{hi:g}")
        return float(value)

    def proxies(self, value: Any, key: str) -> list[str]:
        """A proxy name or a list of them; ``none`` alone switches the zero-cost rung off. The names are
        checked against the plugins' proxies when the space is resolved."""
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise self.fail(key, f"expected a proxy name or a non-empty list of names, got {_kind(value)} {value!r}")
        if "none" in names:
            if len(names) > 1:
                raise self.fail(key, "'none' cannot be combined with other proxies")
            return []
        if len(set(names)) != len(names):
            raise self.fail(key, f"a proxy is named twice in {names!r}")
        return list(names)

    def dataset(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return {"name": self.name(value, "dataset")}
        d = self.mapping(value, "dataset", DATASET, required=("name",))
        out: dict[str, Any] = {"name": self.name(d["name"], "dataset.name")}
        if d.get("root") is not None:
            out["root"] = self.name(d["root"], "dataset.root")
        if "download" in d:
            if not isinstance(d["download"], bool):
                raise self.fail("dataset.download", f"expected true or false, got {_kind(d['download'])}")
            out["download"] = d["download"]
        for k in ("val_fraction", "test_fraction"):
            if k in d:
                out[k] = self.number(d[k], f"dataset.{k}", 0.01, 0.5)
        return out

    def plugins(self, value: Any) -> dict[str, dict[str, Any]]:
        if isinstance(value, list):
            for i, v in enumerate(value):
                self.name(v, f"plugins[{i}]")
            return {v: {} for v in value}
        m = self.mapping(value, "plugins", None)
        out = {}
        for name, opts in m.items():
            if opts is None:
                opts = {}
            out[name] = self.mapping(opts, f"plugins.{name}", None)
        return out

    def objectives(self, value: Any) -> dict[str, dict[str, Any]]:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise self.fail("objectives", "expected at least one objective")
            out: dict[str, dict[str, Any]] = {}
            for i, v in enumerate(value):
                if isinstance(v, dict) and len(v) == 1:
                    (name, opts), = v.items()
                    out[self.name(name, f"objectives[{i}]")] = self.mapping(opts or {}, f"objectives.{name}", None)
                else:
                    out[self.name(v, f"objectives[{i}]")] = {}
            return out
        m = self.mapping(value, "objectives", None)
        if not m:
            raise self.fail("objectives", "expected at least one objective")
        return {k: self.mapping(o or {}, f"objectives.{k}", None) for k, o in m.items()}


OVERRIDABLE = ("trials", "epochs", "timeout", "sampler", "pruner", "seed")


def apply_overrides(cfg: SpaceConfig, values: dict[str, Any]) -> SpaceConfig:
    """Set command-line values (None: keep the file's) through the space file's own validators, so
    ``--epochs 20000`` is refused as ``budget.epochs: 20000`` is; the error names the flag."""
    v = _V("command line")
    rules: dict[str, Callable[[Any, str], Any]] = {
        "trials": lambda x, k: v.integer(x, k, 1, 1_000_000),
        "epochs": lambda x, k: v.integer(x, k, 1, 10_000),
        "timeout": lambda x, k: v.number(x, k, 1.0, 1e9),
        "sampler": v.name,
        "pruner": lambda x, k: v.choice(x, k, PRUNERS),
        "seed": lambda x, k: v.integer(x, k, 0, 2**31 - 1),
    }
    for key in OVERRIDABLE:
        value = values.get(key)
        if value is None:
            continue
        flag = "--" + key
        try:
            setattr(cfg, key, rules[key](value, flag))
        except SpaceFileError as e:
            raise UsageError(f"{flag}: {e.problem}") from None
    return cfg


def resolve(cfg: SpaceConfig, host: PluginHost, input_shape: list[int], classes: int) -> SearchSpace:
    """The search space a config describes: backbone spec plus the enabled plugins' dimensions."""
    from searchcore.engine.zero_cost import check_proxies

    check_proxies(cfg.zero_cost, host, cfg.source)
    backbones = host.catalog("backbones")
    if cfg.backbone not in backbones:
        raise SpaceFileError(cfg.source, "backbone", f"unknown backbone {cfg.backbone!r}; available: {', '.join(sorted(backbones))}")
    try:
        base = backbones[cfg.backbone](list(input_shape), int(classes), dict(cfg.backbone_options))
    except Exception as e:  # the factory refused the options the space file gave it (or has a bug)
        if not cfg.backbone_options:
            raise
        raise SpaceFileError(cfg.source, "backbone.options", f"refused by backbone {cfg.backbone!r}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    available = host.improvement_plugins()
    if cfg.plugins is None:
        plugins = available
        overrides: dict[str, dict] = {}
    else:
        for name in cfg.plugins:
            if name not in available:
                status = host.infos[name].status if name in host.infos else "not installed"
                raise SpaceFileError(cfg.source, f"plugins.{name}", f"plugin is {status}; available: {', '.join(available)}")
        plugins = [p for p in available if p in cfg.plugins]
        overrides = cfg.plugins
    options = {p: host.resolve_options(p, overrides.get(p, {}), cfg.source) for p in plugins}
    dims = host.dimensions(base, options, plugins)
    owners = {d.name: d.plugin for d in dims}

    def transform(spec: dict, params: dict) -> dict:
        return host.transform(spec, params, plugins, options, owners)

    return SearchSpace(base, dims, plugins, options, transform)
