"""Per-plugin credit: what each improvement did to accuracy and to cost, from the trials already run.

The estimator (named in every report, because a reader must know how much to trust it):

* **Features.** Every choice a plugin offers that differs from its off value is one 0/1 column
  (``attention.s2 = se``), a numeric dimension one column scaled to its range; a trial's row says
  which choices it made.
* **Model.** Ridge regression (``alpha = 0.1``, intercept not penalised) of the trial's val
  accuracy in points, and separately of the log of its cost (parameters, or the latency/MACs the
  search optimised), on those columns, over the *complete* trials. Pruned trials stopped early and
  would read as worse than they are, so they are left out. A joint regression rather than
  plain "on minus off" means: a sampler that learned to pair SE with a wide network does not
  credit SE for the width. The ridge term only keeps the fit defined when there are more choices
  than trials or two choices always came together; it is kept small because it pulls correlated
  effects towards each other (a 0/1 choice made in half of 20 trials has a column sum of squares
  of 5, so 0.1 shrinks it by about 2 %; ``alpha = 1`` visibly biased planted effects in tests).
* **Per-choice effect** = that column's coefficient: accuracy points, and ``exp(coef) - 1`` as
  a percentage of cost.
* **Per-plugin effect** = the model's average predicted change, over the trials that used the
  plugin, from switching all of that plugin's choices off in them.
* **Spread.** 90 % percentile intervals from 200 bootstrap resamples of the trials (seeded).

It is an estimate from a handful of correlated trials: ``searchcore ablate`` measures the same
thing by retraining the winner without each improvement. Costs of the winner without each plugin
are also computed exactly (build and count, no training).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from searchcore.report.collect import COST_LABELS, SearchData, is_on, switch_off
from searchcore.space import Dimension

ALPHA = 0.1
BOOTSTRAP = 200
LEVEL = 90  # percent
ESTIMATOR = (
    f"ridge regression (alpha={ALPHA:g}) of val accuracy (points) and of log cost on one-hot plugin choices, over the "
    "complete trials; a plugin's effect is the average predicted change, over the trials that used it, from switching "
    f"the plugin off; {LEVEL}% intervals from {BOOTSTRAP} bootstrap resamples of the trials"
)
MIN_TRIALS = 3

NICE_VALUES = {"se": "squeeze-and-excitation", "cbam": "CBAM", "mhsa": "self-attention", "max": "max pooling",
               "avg": "average pooling", "conv": "strided conv", "relu": "ReLU", "gelu": "GELU", "silu": "SiLU"}
NICE_ATTRS = {"act": "activation", "bn": "batch norm"}
_STAGE = re.compile(r"s(\d+)")


@dataclass
class Effect:
    """A point estimate with its bootstrap interval; ``None`` where the data cannot say."""

    estimate: float | None = None
    low: float | None = None
    high: float | None = None

    def text(self, unit: str = "", digits: int = 1) -> str:
        if self.estimate is None:
            return "n/a"
        ci = f" [{self.low:+.{digits}f}, {self.high:+.{digits}f}]" if self.low is not None and self.high is not None else ""
        return f"{self.estimate:+.{digits}f}{unit}{ci}"


@dataclass
class ChoiceCredit:
    plugin: str
    dim: str
    value: Any
    label: str
    trials: int  # complete trials that made this choice
    accuracy: Effect = field(default_factory=Effect)  # points of val accuracy
    cost: Effect = field(default_factory=Effect)  # percent of cost
    in_winner: bool = False


@dataclass
class PluginCredit:
    plugin: str
    on: int  # complete trials with any of the plugin's choices on
    off: int
    accuracy: Effect = field(default_factory=Effect)
    cost: Effect = field(default_factory=Effect)
    raw_on: float | None = None  # plain mean accuracy (points) of the trials with / without it, for reference
    raw_off: float | None = None
    in_winner: bool = False


@dataclass
class ExactCost:
    """The winner's cost with and without one plugin: built and counted, nothing estimated."""

    plugin: str
    params_with: int
    params_without: int
    macs_with: int
    macs_without: int

    @property
    def params_pct(self) -> float:
        return 100.0 * (self.params_with - self.params_without) / max(1, self.params_without)

    @property
    def macs_pct(self) -> float:
        return 100.0 * (self.macs_with - self.macs_without) / max(1, self.macs_without)


@dataclass
class Credit:
    estimator: str
    metric: str
    cost_metric: str
    trials: int
    plugins: list[PluginCredit] = field(default_factory=list)
    choices: list[ChoiceCredit] = field(default_factory=list)
    exact: list[ExactCost] = field(default_factory=list)
    note: str = ""

    @property
    def cost_label(self) -> str:
        return COST_LABELS.get(self.cost_metric, self.cost_metric)

    @property
    def headline(self) -> str:
        """One sentence a user can act on: the winner's best-supported improvement, its gain and its cost."""
        cands = [c for c in self.choices if c.accuracy.estimate is not None and c.in_winner]
        cands = cands or [c for c in self.choices if c.accuracy.estimate is not None]
        if not cands:
            return self.note or "not enough complete trials to credit any plugin"
        c = max(cands, key=lambda c: c.accuracy.estimate)
        acc = c.accuracy
        cost = f" for {c.cost.estimate:+.0f}% {self.cost_label}" if c.cost.estimate is not None else ""
        return (f"{c.label} ({c.plugin}) gave {acc.estimate:+.1f} points of {self.metric} "
                f"[{LEVEL}% interval {acc.low:+.1f} to {acc.high:+.1f}]{cost}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["headline"] = self.headline
        for e, x in zip(d["exact"], self.exact):
            e["params_pct"], e["macs_pct"] = x.params_pct, x.macs_pct
        return d


def describe_choice(d: Dimension, value: Any) -> str:
    """Plain words for one choice: ``attention.s2 = se`` -> ``squeeze-and-excitation in stage 2``."""
    plugin = d.plugin or d.name.split(".", 1)[0]
    tokens = d.name.split(".")[1:]
    stage = next((f" in stage {t[1:]}" for t in tokens if _STAGE.fullmatch(t)), "")
    attrs = [t for t in tokens if not _STAGE.fullmatch(t)]
    attr = NICE_ATTRS.get(attrs[-1], attrs[-1]) if attrs else ""
    if isinstance(value, bool):
        core = attr or plugin
        core = core if value else f"no {core}"
    elif isinstance(value, str):
        nice = NICE_VALUES.get(value, value)
        core = f"{nice} {attr}" if attr else nice
    else:
        core = f"{attr or plugin} {value:g}" if isinstance(value, float) else f"{attr or plugin} {value}"
    return core + stage


# --- the estimator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Feature:
    dim: Dimension
    value: Any  # the categorical value; None for a numeric dimension


def _features(dims: list[Dimension]) -> list[_Feature]:
    out = []
    for d in dims:
        if d.kind == "categorical":
            out.extend(_Feature(d, v) for v in d.choices if not (type(v) is type(d.off) and v == d.off))
        elif d.high != d.low:
            out.append(_Feature(d, None))
    return out


def _column(f: _Feature, params: dict[str, Any]) -> float:
    if f.dim.name not in params:
        return 0.0
    v = params[f.dim.name]
    if f.value is None:
        return (float(v) - float(f.dim.off)) / float(f.dim.high - f.dim.low)
    return 1.0 if type(v) is type(f.value) and v == f.value else 0.0


def ridge(x: np.ndarray, y: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Ridge coefficients with an unpenalised intercept (both sides centred)."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    a = xc.T @ xc + alpha * np.eye(x.shape[1])
    return np.linalg.solve(a, xc.T @ yc)


def _interval(samples: list[float]) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [(100 - LEVEL) / 2, 100 - (100 - LEVEL) / 2])
    return float(lo), float(hi)


def estimate(data: SearchData, exact: bool = True, seed: int = 0) -> Credit:
    """Credit every plugin and every choice from ``data``'s complete trials (see the module docstring)."""
    cost_metric = data.cost
    rows = [t for t in data.complete if data.value(t) is not None and data.value(t, cost_metric) is not None]
    credit = Credit(ESTIMATOR, data.primary, cost_metric, len(rows))
    winner = data.winner
    wparams = winner.params if winner is not None else {}
    feats = _features(data.dims)
    if exact:
        try:
            credit.exact = exact_costs(data)
        except Exception as e:  # a plugin that cannot rebuild the winner's variants must not lose the estimates
            credit.note = f"exact costs unavailable: {type(e).__name__}: {e}"
    if len(rows) < MIN_TRIALS or not feats:
        credit.note = credit.note or f"only {len(rows)} complete trials: at least {MIN_TRIALS} are needed to estimate effects"
        _fill_without_estimates(credit, data, rows, feats, wparams)
        return credit
    if len(rows) < len(feats):
        rough = (f"{len(rows)} complete trials for {len(feats)} choices: the estimates are rough (many choices were "
                 "tried once or never); `searchcore ablate` measures the winner's improvements directly")
        credit.note = f"{credit.note}; {rough}" if credit.note else rough
    x = np.array([[_column(f, t.params) for f in feats] for t in rows], dtype=float)
    scale = 100.0 if data.primary == "val_accuracy" or data.primary.endswith("accuracy") else 1.0
    y_acc = np.array([scale * data.value(t) for t in rows], dtype=float)
    y_cost = np.log(np.maximum(np.array([data.value(t, cost_metric) for t in rows], dtype=float), 1e-12))
    rng = np.random.default_rng(seed)
    fits = [(ridge(x, y_acc), ridge(x, y_cost))]
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(rows), len(rows))
        fits.append((ridge(x[idx], y_acc[idx]), ridge(x[idx], y_cost[idx])))

    for j, f in enumerate(feats):
        n = int(np.count_nonzero(x[:, j]))
        c = ChoiceCredit(f.dim.plugin, f.dim.name, f.value, describe_choice(f.dim, f.value) if f.value is not None else f"{f.dim.name} (low to high)",
                         n, in_winner=_column(f, wparams) != 0.0)
        if 0 < n < len(rows):  # a choice no trial made, or every trial made, has no contrast to learn from
            c.accuracy = _effect([b[0][j] for b in fits])
            c.cost = _effect([b[1][j] for b in fits], pct=True)
        credit.choices.append(c)

    for plugin in data.plugins:
        cols = [j for j, f in enumerate(feats) if f.dim.plugin == plugin]
        on = np.array([any(is_on(d, t.params) for d in data.dims if d.plugin == plugin) for t in rows])
        p = PluginCredit(plugin, int(on.sum()), int((~on).sum()), in_winner=any(is_on(d, wparams) for d in data.dims if d.plugin == plugin))
        if on.any():
            p.raw_on = float(y_acc[on].mean())
        if (~on).any():
            p.raw_off = float(y_acc[~on].mean())
        if cols and 0 < on.sum():
            xs = x[on][:, cols]
            p.accuracy = _effect([float((xs @ b[0][cols]).mean()) for b in fits])
            p.cost = _effect([float((xs @ b[1][cols]).mean()) for b in fits], pct=True)
        credit.plugins.append(p)
    return credit


def _effect(samples: list[float], pct: bool = False) -> Effect:
    """First sample is the fit on all trials; the rest are bootstrap refits."""
    conv = (lambda v: 100.0 * (math.exp(v) - 1.0)) if pct else (lambda v: float(v))
    point, boot = conv(samples[0]), [conv(v) for v in samples[1:]]
    lo, hi = _interval(boot)
    return Effect(point, lo, hi)


def _fill_without_estimates(credit: Credit, data: SearchData, rows: list, feats: list[_Feature], wparams: dict) -> None:
    """Counts and plain means only, so a tiny search still shows which plugins it tried."""
    for f in feats:
        n = sum(1 for t in rows if _column(f, t.params) != 0.0)
        label = describe_choice(f.dim, f.value) if f.value is not None else f.dim.name
        credit.choices.append(ChoiceCredit(f.dim.plugin, f.dim.name, f.value, label, n, in_winner=_column(f, wparams) != 0.0))
    for plugin in data.plugins:
        on = [any(is_on(d, t.params) for d in data.dims if d.plugin == plugin) for t in rows]
        credit.plugins.append(PluginCredit(plugin, sum(on), len(on) - sum(on), in_winner=any(is_on(d, wparams) for d in data.dims if d.plugin == plugin)))


# --- exact costs of the winner ------------------------------------------------------------------------


def measure(spec: dict) -> tuple[int, int]:
    """``(parameters, MACs)`` of the model a spec describes: built untrained, counted on one example."""
    from searchcore.arch.build import build, param_count
    from searchcore.plugins.host import get_host
    from searchcore.train.objectives import count_macs

    model = build(spec, get_host().blocks())
    return param_count(model), count_macs(model, spec["input"])


def exact_costs(data: SearchData) -> list[ExactCost]:
    """For every plugin the winner uses: its parameters and MACs with and without that plugin."""
    winner = data.winner
    if winner is None or data.space is None:
        return []
    full = measure(data.space.spec(winner.params))
    out = []
    for plugin in data.plugins:
        names = {d.name for d in data.dims if d.plugin == plugin}
        if not any(is_on(d, winner.params) for d in data.dims if d.name in names):
            continue
        without = measure(data.space.spec(switch_off(data.dims, winner.params, names)))
        out.append(ExactCost(plugin, full[0], without[0], full[1], without[1]))
    return out


def table_rows(credit: Credit) -> list[tuple[str, ...]]:
    """The per-plugin table as text rows (plugin, trials on/off, accuracy effect, cost effect, winner's exact cost)."""
    exact = {e.plugin: e for e in credit.exact}
    rows = []
    for p in credit.plugins:
        e = exact.get(p.plugin)
        winner = f"{e.params_pct:+.1f}% params, {e.macs_pct:+.1f}% MACs" if e else "-"
        rows.append((p.plugin, f"{p.on}/{p.off}", p.accuracy.text(" pts"), p.cost.text("%", 0), winner, "yes" if p.in_winner else ""))
    return rows
