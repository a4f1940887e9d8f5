"""``searchcore ablate NAME``: the winner's improvements measured by taking them away.

The credit estimate (:mod:`searchcore.report.credit`) reads effects off trials the sampler chose,
where improvements come bundled. An ablation answers the question directly: take the best
architecture, switch one improvement off (every dimension of one plugin, or with
``--by dimension`` one searched choice with its sub-choices), retrain with the search's epochs
and the same seeds as the full winner, and compare. Differences are paired by seed (same
initialisation seed, same data order), which removes most of the seed-to-seed noise from the
comparison; the spread over seeds is reported with every mean.

The result is stored in the study (user attribute ``searchcore_ablation``) so ``searchcore
report`` shows it, and logged to MLflow as a run under the search's parent run.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from searchcore.errors import UsageError
from searchcore.report.assemble import ATTR_ABLATION
from searchcore.report.collect import is_on, root_of, switch_off
from searchcore.report.credit import describe_choice, measure
from searchcore.space import Dimension

BY = ("plugin", "dimension")


@dataclass
class Group:
    """One improvement to switch off: a plugin, or one root dimension with its conditional children."""

    key: str
    label: str
    names: set[str]


def groups(dims: list[Dimension], params: dict[str, Any], by: str = "plugin") -> list[Group]:
    """The improvements ``params`` uses, in the space's order."""
    if by not in BY:
        raise UsageError(f"--by: expected one of {', '.join(BY)}, got {by!r}")
    out: list[Group] = []
    if by == "plugin":
        for plugin in dict.fromkeys(d.plugin for d in dims):
            mine = [d for d in dims if d.plugin == plugin]
            on = [d for d in mine if is_on(d, params)]
            if on:
                out.append(Group(plugin, f"{plugin}: " + "; ".join(describe_choice(d, params[d.name]) for d in on), {d.name for d in mine}))
        return out
    by_name = {d.name: d for d in dims}
    for d in dims:
        if root_of(d, by_name) != d.name:
            continue
        members = {x.name for x in dims if root_of(x, by_name) == d.name}
        if any(is_on(by_name[m], params) for m in members):
            on = [by_name[m] for m in members if is_on(by_name[m], params)]
            out.append(Group(d.name, f"{d.plugin}: " + "; ".join(describe_choice(x, params[x.name]) for x in on), members))
    return out


def train_and_score(runner: Any, spec: dict, seed: int, epochs: int | None = None) -> tuple[float, float]:
    """Train ``spec`` as the search trains its winner (same path, same settings), return (val, test) accuracy."""
    from searchcore.train.trainer import evaluate

    config = runner.train_config(epochs=epochs, seed=seed)
    try:
        from searchcore.train.fit import fit
    except ImportError:  # older trees: plain build and train, what fit() does when no plugin shapes training
        from searchcore.arch.build import build
        from searchcore.train.trainer import train_model

        model = build(spec, runner.host.blocks(), seed=config.seed)
        train_model(model, runner.splits, config)
    else:
        model = fit(spec, runner.host, runner.splits, config, runner.space.options, final=True).model
    s = runner.splits
    return evaluate(model, s.val_x, s.val_y), evaluate(model, s.test_x, s.test_y)


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def ablate(study: Any, runner: Any, by: str = "plugin", repeats: int = 3, trial: int | None = None, epochs: int | None = None,
           log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Retrain the winner (or ``trial``) and each ablated variant ``repeats`` times; return the comparison."""
    from searchcore.report import collect

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.time()
    data = collect.load(study, space=runner.space, mlflow=False)
    row = data.row(trial) if trial is not None else data.winner
    if row is None or row.state != "COMPLETE":
        raise UsageError(f"trial {trial} is not a complete trial of search {study.study_name!r}" if trial is not None
                         else f"search {study.study_name!r} has no complete trial to ablate")
    dims = runner.space.dimensions
    gs = groups(dims, row.params, by)
    if not gs:
        raise UsageError(f"trial {row.number} uses no improvement (it is the plain backbone): nothing to switch off")
    seeds = [int(runner.cfg.seed) + i for i in range(repeats)]
    epochs = epochs or int(runner.cfg.epochs)
    full_spec = runner.space.spec(row.params)
    variants: list[tuple[str, dict]] = [("", full_spec)] + [(g.key, runner.space.spec(switch_off(dims, row.params, g.names))) for g in gs]
    scores: dict[str, list[tuple[float, float]]] = {k: [] for k, _ in variants}
    for seed in seeds:
        for key, spec in variants:
            val, test = train_and_score(runner, spec, seed, epochs)
            scores[key].append((val, test))
            say(f"ablate: seed {seed}, {'full winner' if not key else key + ' off'}: val {val:.4f}, test {test:.4f}")
    full_cost = measure(full_spec)
    full_val = [v for v, _ in scores[""]]
    full_test = [t for _, t in scores[""]]
    rows = []
    for g, (_, spec) in zip(gs, variants[1:]):
        dval = [100.0 * (f - a) for f, (a, _) in zip(full_val, scores[g.key])]
        dtest = [100.0 * (f - a) for f, (_, a) in zip(full_test, scores[g.key])]
        cost = measure(spec)
        sv, st = _spread(dval), _spread(dtest)
        rows.append({
            "group": g.key, "label": g.label, "dimensions": sorted(g.names),
            "val": [v for v, _ in scores[g.key]], "test": [t for _, t in scores[g.key]],
            "val_diffs": dval, "test_diffs": dtest,
            "val_diff_mean": sv["mean"], "val_diff_sd": sv["sd"], "test_diff_mean": st["mean"], "test_diff_sd": st["sd"],
            "test_diff_min": st["min"], "test_diff_max": st["max"],
            "params": cost[0], "macs": cost[1],
            "params_pct": 100.0 * (full_cost[0] - cost[0]) / max(1, cost[0]), "macs_pct": 100.0 * (full_cost[1] - cost[1]) / max(1, cost[1]),
        })
    return {
        "trial": row.number, "by": by, "seeds": seeds, "epochs": epochs, "spec": row.spec,
        "full": {"val": full_val, "test": full_test, "val_mean": statistics.fmean(full_val), "test_mean": statistics.fmean(full_test),
                 "params": full_cost[0], "macs": full_cost[1]},
        "rows": rows, "seconds": round(time.time() - t0, 1), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "method": "each improvement switched off in turn, retrained with the search's epochs and the same seeds as the full winner; "
                  "differences full minus ablated, paired by seed, in points",
    }


def record(study: Any, result: dict[str, Any], tracking_uri: str | None) -> str | None:
    """Keep the result in the study (for ``searchcore report``) and log it to MLflow under the parent run.

    Returns the MLflow run id, or None when MLflow is not answering (the study still has it).
    """
    import json

    from searchcore.engine.results import ATTR_PARENT
    from searchcore.track.tracking import TAG_KIND, TAG_STUDY, TAG_TRIAL, mask_url

    study.set_user_attr(ATTR_ABLATION, result)
    parent = study.user_attrs.get(ATTR_PARENT)
    if not tracking_uri or not parent:
        return None
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_run(parent).info.experiment_id
        tags = {MLFLOW_PARENT_RUN_ID: parent, TAG_KIND: "ablation", TAG_STUDY: study.study_name, TAG_TRIAL: str(result["trial"])}
        run = client.create_run(exp, run_name=f"ablation-trial-{result['trial']}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [Metric("full.test_accuracy", result["full"]["test_mean"], now, 0)]
        for r in result["rows"]:
            metrics += [Metric(f"{r['group']}.test_gain_points", r["test_diff_mean"], now, 0),
                        Metric(f"{r['group']}.test_gain_sd", r["test_diff_sd"], now, 0),
                        Metric(f"{r['group']}.val_gain_points", r["val_diff_mean"], now, 0),
                        Metric(f"{r['group']}.params_added_pct", r["params_pct"], now, 0)]
        client.log_batch(run.info.run_id, metrics=metrics)
        client.log_text(run.info.run_id, json.dumps(result, indent=2), "ablation.json")
        client.set_terminated(run.info.run_id)
        return run.info.run_id
    except Exception as e:
        print(f"searchcore: warning: MLflow at {mask_url(tracking_uri)} did not take the ablation ({type(e).__name__}); "
              "the study keeps it and `searchcore report` shows it", file=sys.stderr)
        return None
