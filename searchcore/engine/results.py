"""What a search returns and how every backend ends one: the best architectures retrained, tested
and registered, the seed backbone as the bar to beat, the summary on the parent run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ATTR_BASELINE = "baseline"  # on the enqueued first trial: the unimproved backbone
ATTR_CONFIG = "searchcore_config"
ATTR_SPACE = "searchcore_space"
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_TRACKING = "mlflow_tracking_uri"


@dataclass
class Architecture:
    """One of the best architectures a search found."""

    trial: int
    spec: dict
    params: dict[str, Any]
    values: list[float]
    metrics: dict[str, float]
    test_accuracy: float | None = None
    model_uri: str | None = None

    @property
    def one_line(self) -> str:
        from searchcore.arch.spec import encode

        return encode(self.spec)


@dataclass
class SearchResult:
    """What a search returns; everything in it is also in the study storage and in MLflow."""

    name: str
    storage: str
    tracking_uri: str
    parent_run_id: str | None
    objectives: list[str]
    directions: list[str]
    best: list[Architecture] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    baseline_test_accuracy: float | None = None
    baseline: Architecture | None = None  # the baseline trial (every plugin off), when it completed
    baseline_won: bool = False  # no trial beat it: it is best[0], and what gets registered
    seconds: float = 0.0
    stopped_reason: str = ""
    zero_cost: dict[str, float] = field(default_factory=dict)  # zero_cost_seconds, zero_cost_candidates: screening charged


def summary(result: SearchResult) -> dict[str, Any]:
    """What the parent run keeps of the outcome: objectives, and each chosen architecture."""
    return {
        "objectives": dict(zip(result.objectives, result.directions)),
        "pareto": len(result.objectives) > 1,
        "baseline_test_accuracy": result.baseline_test_accuracy,
        "baseline_trial": None if result.baseline is None else result.baseline.trial,
        "baseline_won": result.baseline_won,
        "zero_cost": dict(result.zero_cost),
        "architectures": [
            {"trial": a.trial, "values": a.values, "test_accuracy": a.test_accuracy, "model_uri": a.model_uri,
             "params": a.params, "one_line": a.one_line, "metrics": a.metrics}
            for a in result.best
        ],
    }


def finish_mlflow_view(tracker: Any, result: SearchResult, name: str, directions: list[str]) -> None:
    """The winner's numbers on its trial run and model page, params and MACs on every trial run."""
    from searchcore.track import mlflow_view

    try:
        mlflow_view.finish(tracker, result, name, [str(d).lower() for d in directions])
    except Exception as e:  # a nicer MLflow page is not worth failing a finished search for
        print(f"searchcore: warning: could not finish the MLflow view ({type(e).__name__}: {e})", file=sys.stderr)


def finalize_best(result: SearchResult, runner: Any, tracker: Any, parent: str | None, name: str) -> None:
    """Retrain the winner(s) with the search's budget and seed, test once, log and register."""
    from searchcore.train.fit import fit
    from searchcore.train.trainer import evaluate

    chosen = result.best if len(result.directions) > 1 else result.best[:1]
    for arch in chosen:
        # the same path as a trial (plugins' distillation, pruning), so the registered model is the one scored
        fitted = fit(arch.spec, runner.host, runner.splits, runner.train_config(), runner.space.options, final=True)
        model = fitted.model
        arch.test_accuracy = evaluate(model, runner.splits.test_x, runner.splits.test_y)
        if parent is None or tracker.down:
            continue
        try:
            arch.model_uri = tracker.log_model(model, arch.spec, name, arch.test_accuracy, arch.trial, parent, metrics=fitted.metrics)
        except Exception as e:
            print(f"searchcore: warning: could not register the best model in MLflow: {type(e).__name__}: {e}", file=sys.stderr)


def never_worse(result: SearchResult, directions: list[str]) -> None:
    """The best is never worse than what the user started with: when no trial beat the baseline
    trial on the objective (a tie included: the simpler model wins), the baseline becomes the best.
    Judged on the trials' own values (validation), as the winner was chosen; one objective only."""
    base = result.baseline
    if base is None or len(directions) != 1 or not result.best:
        return
    sign = 1.0 if directions[0] == "maximize" else -1.0
    if sign * result.best[0].values[0] > sign * base.values[0]:
        return
    result.best = [base] + [a for a in result.best if a.trial != base.trial]
    result.baseline_won = True


def baseline_test_accuracy(runner: Any) -> float:
    """The unimproved backbone (every plugin off), trained like any trial: the bar to beat."""
    from searchcore.train.fit import fit
    from searchcore.train.trainer import evaluate

    spec = runner.space.spec(runner.space.off_params())
    model = fit(spec, runner.host, runner.splits, runner.train_config(), runner.space.options).model
    return evaluate(model, runner.splits.test_x, runner.splits.test_y)


def finish_search(result: SearchResult, runner: Any, tracker: Any, parent: str | None, cfg: Any, s: Any, name: str,
                  report: Callable[[], None] | None = None) -> None:
    """How every backend ends a search: the winner (never worse than the baseline trial, see
    :func:`never_worse`) retrained, tested and registered, the baseline trained the same way unless
    it is the winner, then the MLflow view, the report (``report``, never raising), the summary
    and the parent run's closing metrics. While MLflow is down the parent run is left for
    ``searchcore sync`` to close."""
    final: dict[str, float] = {}
    never_worse(result, runner.directions)
    if result.best and s.register and cfg.evaluator == "train":
        finalize_best(result, runner, tracker, parent, name)
        final["best_test_accuracy"] = max(a.test_accuracy or 0.0 for a in result.best)
    if result.baseline_won and result.best[0].test_accuracy is not None:
        result.baseline_test_accuracy = result.best[0].test_accuracy  # the same spec, trained the same way: once is enough
        final["baseline_test_accuracy"] = result.baseline_test_accuracy
    elif s.baseline and cfg.evaluator == "train":
        result.baseline_test_accuracy = baseline_test_accuracy(runner)
        final["baseline_test_accuracy"] = result.baseline_test_accuracy
    final.update({f"trials_{k.lower()}": v for k, v in result.counts.items()})
    final.update(result.zero_cost)  # what screening candidates without training cost the search
    if parent is None or tracker.down:
        return
    finish_mlflow_view(tracker, result, name, runner.directions)
    if report is not None and s.plots:
        report()
    try:
        tracker.log_summary(parent, summary(result))
        tracker.end_search(parent, metrics=final)
    except Exception as e:  # an outage at the very end loses nothing: sync writes it later
        print(f"searchcore: warning: could not close the MLflow parent run: {type(e).__name__}", file=sys.stderr)
