"""Backend-neutral search-space dimensions and the one function that samples them.

A dimension is plain data; :func:`sample` turns any trial-like object (an Optuna trial, a
``FixedTrial``, :class:`ParamsTrial` over a dict of best params, Ray Tune's ``OptunaSearch``
define-by-run trial) into a params dict, so the same space drives every backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from searchcore.errors import UsageError

Scalar = Any  # None, bool, int, float or str: what Optuna categorical choices allow

KINDS = ("categorical", "int", "float")


@dataclass(frozen=True)
class Dimension:
    """One searched choice.

    ``condition`` is ``(other_name, allowed_values)``: the dimension exists only when the
    other dimension was sampled with one of those values. ``off`` is the value that leaves
    the architecture unchanged (the seed network when every dimension is off).
    """

    name: str
    kind: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | float | None = None
    off: Scalar = None
    condition: tuple[str, tuple] | None = None
    help: str = ""
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dimension {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"dimension {self.name!r}: categorical needs at least one choice")
            for c in self.choices:
                if c is not None and not isinstance(c, (bool, int, float, str)):
                    raise ValueError(f"dimension {self.name!r}: choice {c!r} is not None, bool, int, float or str")
        else:
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"dimension {self.name!r}: {self.kind} needs low <= high")
            if self.log and self.low <= 0:
                raise ValueError(f"dimension {self.name!r}: log scale needs low > 0")
        if self.condition is not None:
            parent, values = self.condition
            object.__setattr__(self, "condition", (parent, tuple(values)))

    @classmethod
    def categorical(cls, name: str, choices: Iterable, off: Scalar = None, **kw: Any) -> Dimension:
        choices = tuple(choices)
        return cls(name, "categorical", choices=choices, off=choices[0] if off is None else off, **kw)

    @classmethod
    def int(cls, name: str, low: int, high: int, off: int | None = None, step: int = 1, log: bool = False, **kw: Any) -> Dimension:
        return cls(name, "int", low=low, high=high, step=step, log=log, off=low if off is None else off, **kw)

    @classmethod
    def float(cls, name: str, low: float, high: float, off: float | None = None, log: bool = False, **kw: Any) -> Dimension:
        return cls(name, "float", low=low, high=high, log=log, off=low if off is None else off, **kw)

    def size(self) -> float:
        """Number of distinct values (inf for a continuous float)."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int":
            step = self.step or 1
            return (int(self.high) - int(self.low)) // step + 1
        return math.inf if self.step is None else math.floor((self.high - self.low) / self.step) + 1

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(_fmt(c) for c in self.choices) + "}"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step not in (None, 1) else ""
        return f"[{_fmt(self.low)}, {_fmt(self.high)}]{scale}{step}"

    def active(self, params: dict[str, Any]) -> bool:
        if self.condition is None:
            return True
        parent, values = self.condition
        return parent in params and params[parent] in values

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        return self.low <= value <= self.high


def _fmt(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float: ...


def sample(trial: TrialLike, dims: Iterable[Dimension]) -> dict[str, Any]:
    """Ask ``trial`` for every active dimension, in declaration order (parents before children)."""
    params: dict[str, Any] = {}
    for d in dims:
        if not d.active(params):
            continue
        if d.kind == "categorical":
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), step=d.step, log=d.log)
    return params


def off_params(dims: Iterable[Dimension]) -> dict[str, Any]:
    """Params with every active dimension at its ``off`` value: the unimproved backbone."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.active(params):
            params[d.name] = d.off
    return params


class ParamsTrial:
    """A trial over a fixed dict of params, to rebuild a winner; refuses missing or out-of-range values."""

    def __init__(self, params: dict[str, Any], source: str = "params") -> None:
        self.params = dict(params)
        self.source = source
        self.used: set[str] = set()

    def _get(self, name: str) -> Any:
        if name not in self.params:
            raise UsageError(f"{self.source}: missing parameter {name!r}")
        self.used.add(name)
        return self.params[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._get(name)
        if not any(type(value) is type(c) and value == c for c in choices):
            raise UsageError(f"{self.source}: {name}={value!r} is not one of {list(choices)}")
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"{self.source}: {name}={value!r} is not an integer in [{low}, {high}]")
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise UsageError(f"{self.source}: {name}={value!r} is not a number in [{low}, {high}]")
        return float(value)


def count(dims: list[Dimension]) -> float:
    """Number of distinct parameter assignments, honouring conditions (inf if any float is continuous)."""
    children: dict[str, list[Dimension]] = {}
    roots = []
    for d in dims:
        if d.condition is None:
            roots.append(d)
        else:
            children.setdefault(d.condition[0], []).append(d)

    def subtree(d: Dimension) -> float:
        kids = children.get(d.name, [])
        if not kids:
            return d.size()
        values = _values(d)
        if values is None:  # a continuous parent: infinitely many assignments anyway
            return math.inf
        return sum(math.prod(subtree(k) for k in kids if v in k.condition[1]) for v in values)

    return math.prod(subtree(d) for d in roots)


def _values(d: Dimension) -> list | None:
    """Every value of a discrete dimension, so children conditioned on some of them count right; None if continuous."""
    if d.kind == "categorical":
        return list(d.choices)
    if d.kind == "int":
        return list(range(int(d.low), int(d.high) + 1, int(d.step or 1)))
    if d.step is None:
        return None
    return [d.low + i * d.step for i in range(int(d.size()))]


class SearchSpace:
    """The combined space of the enabled plugins over one backbone.

    ``spec(params)`` applies each plugin's transformation to the base spec in plugin order;
    ``to_spec(trial)`` is the one function every backend calls.
    """

    def __init__(self, base: dict, dimensions: list[Dimension], plugins: list[str], options: dict[str, dict], transform: Any) -> None:
        self.base = base
        self.dimensions = dimensions
        self.plugins = plugins
        self.options = options
        self._transform = transform

    def sample(self, trial: TrialLike) -> dict[str, Any]:
        return sample(trial, self.dimensions)

    def spec(self, params: dict[str, Any]) -> dict:
        return self._transform(self.base, params)

    def to_spec(self, trial: TrialLike) -> tuple[dict, dict[str, Any]]:
        params = self.sample(trial)
        return self.spec(params), params

    def off_params(self) -> dict[str, Any]:
        return off_params(self.dimensions)

    def count(self) -> float:
        return count(self.dimensions)

    def rebuild_params(self, params: dict[str, Any], source: str = "params") -> dict[str, Any]:
        """Validate a fixed params dict against the space (a winner's params) and return the used subset."""
        trial = ParamsTrial(params, source)
        used = self.sample(trial)
        extra = sorted(set(params) - trial.used)
        if extra:
            raise UsageError(f"{source}: unknown parameter {extra[0]!r} for this space")
        return used
