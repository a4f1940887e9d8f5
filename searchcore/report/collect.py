"""A search read back for reporting: its trials, its space's dimensions, its chosen architectures.

Everything a report shows comes from the study storage (trials, params, learning curves, the
space file the search ran) plus, when it answers, MLflow (test accuracies, registered models).
Reading it into one plain object first keeps plotting, credit and HTML free of Optuna and
MLflow calls, and lets the end-of-search hook pass in what it already has in memory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from searchcore.space import Dimension

ACCURACY = "val_accuracy"
COSTS = ("latency_ms", "macs", "params")  # cost axis of the Pareto plot: the first the search optimised, else params
COST_LABELS = {"latency_ms": "latency (ms, batch 1, CPU)", "macs": "MACs", "params": "parameters"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
CORE_COLOR = "#d9d9d9"


def plugin_colors(plugins: list[str]) -> dict[str, str]:
    """One colour per plugin, the same in every plot and in the diagram, so a reader learns it once."""
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(plugins)}


@dataclass
class TrialRow:
    """One trial as a report needs it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL (interrupted trials are FAIL)
    params: dict[str, Any]
    values: list[float]
    metrics: dict[str, float]
    curve: list[tuple[int, float]]  # (epoch, val accuracy) as reported while it trained
    spec: str | None = None
    reason: str = ""


@dataclass
class SearchData:
    """A finished (or running) search, read once."""

    name: str
    storage_url: str
    study_id: int
    objectives: list[str]
    directions: list[str]
    trials: list[TrialRow]
    dims: list[Dimension]
    chosen: list[int] = field(default_factory=list)
    space: Any = None  # SearchSpace when the space could be resolved: needed to rebuild variants of the winner
    config: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    experiment_id: str | None = None
    test_accuracy: dict[int, float] = field(default_factory=dict)
    model_uris: dict[int, str] = field(default_factory=dict)
    baseline_test_accuracy: float | None = None

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.state == "COMPLETE"]

    @property
    def winner(self) -> TrialRow | None:
        return self.row(self.chosen[0]) if self.chosen else None

    @property
    def finalised(self) -> list[int]:
        """The architectures the search retrained, tested and registered: what plots mark as chosen.

        A single-objective search registers only its winner (the others in ``chosen`` are merely
        the next best); a multi-objective one registers its whole Pareto front.
        """
        tested = [n for n in self.chosen if n in self.test_accuracy]
        if tested:
            return tested
        return list(self.chosen) if len(self.objectives) > 1 else self.chosen[:1]

    def row(self, number: int) -> TrialRow | None:
        return next((t for t in self.trials if t.number == number), None)

    @property
    def plugins(self) -> list[str]:
        """Plugins with at least one dimension, in the order the space lists them."""
        return list(dict.fromkeys(d.plugin for d in self.dims))

    @property
    def primary(self) -> str:
        """The accuracy-like objective every plot and estimate is about: val accuracy when trials have it."""
        done = self.complete
        if done and all(ACCURACY in t.metrics for t in done):
            return ACCURACY
        return self.objectives[0]

    @property
    def primary_maximize(self) -> bool:
        if self.primary in self.objectives:
            return self.directions[self.objectives.index(self.primary)] == "maximize"
        return True

    def value(self, t: TrialRow, name: str | None = None) -> float | None:
        """A trial's metric ``name`` (default: the primary objective), from its metrics or objective values."""
        name = name or self.primary
        if name in t.metrics:
            return float(t.metrics[name])
        if name in self.objectives and t.values:
            return float(t.values[self.objectives.index(name)])
        return None

    @property
    def cost(self) -> str:
        """The cost shown against accuracy: latency or MACs when the search optimised them, else parameters."""
        for c in COSTS:
            if c in self.objectives and all(c in t.metrics for t in self.complete):
                return c
        return "params"


def load(study: Any, space: Any = None, result: Any = None, tracking_uri: str | None = None, storage_url: str = "", top: int = 5,
         mlflow: bool = True) -> SearchData:
    """Read ``study`` (an Optuna study made by searchcore) into a :class:`SearchData`.

    ``space`` gives the plugin of every dimension and the value that switches it off; without it
    the dimensions are inferred from the trials (plugin = name prefix, off = first choice).
    ``result`` (a :class:`~searchcore.engine.api.SearchResult`) supplies the chosen architectures
    and their test accuracies when called at the end of a search; otherwise they are looked up.
    """
    from searchcore.engine.backends.optuna import interrupted
    from searchcore.engine.backends.optuna_search import best_architectures
    from searchcore.engine.results import ATTR_CONFIG, ATTR_PARENT, ATTR_TRACKING
    from searchcore.track.tracking import DEFAULT_TRACKING, absolute_uri, mask_url

    config = dict(study.user_attrs.get(ATTR_CONFIG, {}))
    objectives = list(config.get("objectives") or {}) or [f"objective_{i}" for i in range(len(study.directions))]
    directions = [d.name.lower() for d in study.directions]
    lost = interrupted(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("RUNNING", "WAITING"):
            continue
        state = "FAIL" if t.number in lost else t.state.name
        rows.append(TrialRow(
            number=t.number, state=state, params=dict(t.params), values=list(t.values or []),
            metrics={k: float(v) for k, v in (t.user_attrs.get("metrics") or {}).items()},
            curve=sorted((int(k), float(v)) for k, v in t.intermediate_values.items()),
            spec=t.user_attrs.get("spec"), reason=str(t.user_attrs.get("reason", "")),
        ))
    dims = list(space.dimensions) if space is not None else inferred_dimensions(study)
    data = SearchData(
        name=study.study_name, storage_url=mask_url(absolute_uri(storage_url)) if storage_url else "", study_id=int(getattr(study, "_study_id", 0)), objectives=objectives,
        directions=directions, trials=rows, dims=dims, space=space, config=config,
        tracking_uri=absolute_uri(tracking_uri or study.user_attrs.get(ATTR_TRACKING) or DEFAULT_TRACKING),
        parent_run_id=study.user_attrs.get(ATTR_PARENT),
    )
    if result is not None:
        data.storage_url = result.storage
        data.chosen = [a.trial for a in result.best]
        data.test_accuracy = {a.trial: a.test_accuracy for a in result.best if a.test_accuracy is not None}
        data.model_uris = {a.trial: a.model_uri for a in result.best if a.model_uri}
        data.baseline_test_accuracy = result.baseline_test_accuracy
    else:
        data.chosen = [a.trial for a in best_architectures(study, objectives, top=top)]
    if mlflow:
        _from_mlflow(data, fill=result is None)
    return data


def inferred_dimensions(study: Any) -> list[Dimension]:
    """Dimensions rebuilt from the trials' distributions when the space itself is not at hand."""
    import optuna.distributions as od

    seen: dict[str, Dimension] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if name in seen:
                continue
            plugin = name.split(".", 1)[0]
            if isinstance(dist, od.CategoricalDistribution):
                seen[name] = Dimension.categorical(name, dist.choices, plugin=plugin)
            elif isinstance(dist, od.IntDistribution):
                seen[name] = Dimension.int(name, dist.low, dist.high, step=dist.step, log=dist.log, plugin=plugin)
            elif isinstance(dist, od.FloatDistribution):
                seen[name] = Dimension.float(name, dist.low, dist.high, log=dist.log, plugin=plugin)
    return list(seen.values())


def _from_mlflow(data: SearchData, fill: bool) -> None:
    """Experiment id always; with ``fill``, test accuracies, model URIs and the baseline recorded in MLflow.

    MLflow being down only costs those extras: the report is still written from the study.
    """
    from mlflow.tracking import MlflowClient

    from searchcore.track.tracking import TAG_KIND, TAG_TRIAL, mask_url

    try:
        client = MlflowClient(tracking_uri=data.tracking_uri, registry_uri=data.tracking_uri)
        exp = client.get_experiment_by_name(data.name)
        if exp is None:
            return
        data.experiment_id = exp.experiment_id
        if data.trials and not any(t.curve for t in data.trials):
            _curves_from_mlflow(client, exp.experiment_id, data)
        if not fill:
            return
        if data.parent_run_id:
            parent = client.get_run(data.parent_run_id)
            if "baseline_test_accuracy" in parent.data.metrics:
                data.baseline_test_accuracy = float(parent.data.metrics["baseline_test_accuracy"])
        for run in client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'best'", max_results=200, order_by=["attributes.start_time ASC"]):
            trial = int(run.data.tags.get(TAG_TRIAL, -1))
            if "test_accuracy" in run.data.metrics:
                data.test_accuracy[trial] = float(run.data.metrics["test_accuracy"])
            versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
            data.model_uris[trial] = f"models:/{versions[0].name}/{versions[0].version}" if versions else f"runs:/{run.info.run_id}/model"
    except Exception as e:
        print(f"searchcore: note: MLflow at {mask_url(str(data.tracking_uri))} did not answer ({type(e).__name__}); "
              "the report leaves out test accuracies and models", file=sys.stderr)


def _curves_from_mlflow(client: Any, experiment_id: str, data: SearchData, limit: int = 300) -> None:
    """Learning curves from the trial runs' metric history, for searches whose study holds none
    (multi-objective studies cannot prune, so their trials report no intermediate values)."""
    from searchcore.track.tracking import TAG_KIND, TAG_STUDY, TAG_TRIAL

    by_number = {t.number: t for t in data.trials}
    query = f"tags.`{TAG_STUDY}` = '{data.name}' and tags.`{TAG_KIND}` = 'trial'"
    for run in client.search_runs([experiment_id], query, max_results=limit):
        t = by_number.get(int(run.data.tags.get(TAG_TRIAL, -1)))
        if t is not None:
            t.curve = sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run.info.run_id, ACCURACY))


def runner_from_study(study: Any, threads: int | None = None) -> Any:
    """The search's :class:`~searchcore.engine.runner.TrialRunner` (space, data, training settings), rebuilt from
    what the study recorded by the same two functions ``searchcore worker`` uses."""
    from searchcore.engine.results import ATTR_CONFIG, ATTR_SPACE
    from searchcore.engine.runner import config_from_study, prepare
    from searchcore.errors import UsageError
    from searchcore.plugins.host import get_host

    if ATTR_SPACE not in study.user_attrs:
        raise UsageError(f"search {study.study_name!r}: this study was not created by searchcore search")
    cfg = config_from_study(study.user_attrs[ATTR_SPACE], study.user_attrs.get(ATTR_CONFIG, {}), study.study_name)
    return prepare(cfg, get_host(), threads)


def switch_off(dims: list[Dimension], params: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """``params`` with the dimensions in ``names`` at their off value; conditions re-evaluated in order,
    so a child dimension disappears with its parent and nothing else changes."""
    out: dict[str, Any] = {}
    for d in dims:
        if not d.active(out):
            continue
        out[d.name] = d.off if d.name in names or d.name not in params else params[d.name]
    return out


def is_on(d: Dimension, params: dict[str, Any]) -> bool:
    """Whether ``params`` sets ``d`` to something other than its off value (a type-exact comparison:
    ``True`` is not ``1``)."""
    if d.name not in params:
        return False
    v = params[d.name]
    if d.kind == "categorical":
        return not (type(v) is type(d.off) and v == d.off)
    return bool(v != d.off)


def root_of(d: Dimension, by_name: dict[str, Dimension]) -> str:
    """The unconditional dimension a conditional one hangs from (``attention.s2.reduction`` -> ``attention.s2``)."""
    seen = set()
    while d.condition is not None and d.condition[0] in by_name and d.name not in seen:
        seen.add(d.name)
        d = by_name[d.condition[0]]
    return d.name
