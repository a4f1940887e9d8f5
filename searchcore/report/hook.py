"""The end of every search: its plots, credit, diagram and Grad-CAM logged to MLflow.

``run_search`` calls :func:`log_search_report` once, after the winner is retrained and
registered. What it logs on the search's parent run::

    plots/<name>.png      optimisation history, learning curves, importances, Pareto front,
                          parallel coordinates, per-plugin credit (matplotlib)
    report.html           the self-contained report, every plot interactive (plotly, offline)
    credit.json           the per-plugin and per-choice estimates, the estimator, exact costs
    diagram/best.svg|png  the winner's architecture, who changed what
    gradcam/best.png      Grad-CAM of the winner on validation images

and ``diagram/`` and ``gradcam/`` again on the winner's model run, next to the model. It also
writes a markdown summary into the parent run's description, tags the experiment as model
training (see :mod:`searchcore.report.links`), names the study's objectives and, when
optuna-dashboard is installed, puts the summary and the credit and Pareto plots on the study's
dashboard page.

It never raises: a plotting problem is one warning, and the search's results are untouched.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def log_search_report(study: Any, runner: Any, tracker: Any, parent: str, result: Any) -> float:
    """Make and log everything; returns the seconds it took (0 if it gave up)."""
    t0 = time.time()
    try:
        import matplotlib  # noqa: F401  (optional dependency: say so instead of failing deep inside)
        import plotly  # noqa: F401
    except ImportError as e:
        print(f"searchcore: note: no search plots ({e.name} is not installed: pip install 'searchcore[report]')", file=sys.stderr)
        return 0.0
    try:
        _log(study, runner, tracker, parent, result)
    except Exception as e:
        print(f"searchcore: warning: could not make the search's plots ({type(e).__name__}: {e}); the search's results are "
              f"unaffected, `searchcore report {study.study_name}` tries again", file=sys.stderr)
        return 0.0
    return time.time() - t0


def _log(study: Any, runner: Any, tracker: Any, parent: str, result: Any) -> None:
    from mlflow.entities import Metric

    from searchcore.report import assemble, collect, html, links
    from searchcore.track.tracking import TAG_KIND, TAG_TRIAL

    data = collect.load(study, space=getattr(runner, "space", None), result=result, tracking_uri=tracker.uri)
    data.experiment_id = data.experiment_id or tracker.experiment_id
    parts = assemble.assemble(study, data, splits=getattr(runner, "splits", None))
    client = tracker.client
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "plots").mkdir()
        for p in parts.plots:
            if p.png:
                (root / "plots" / f"{p.key}.png").write_bytes(p.png)
        html.write(parts, root / "report.html")
        summary = {"credit": parts.credit.to_dict(), "importances": {"method": parts.importances.method, "by_param": parts.importances.by_param,
                   "by_plugin": parts.importances.by_plugin, "note": parts.importances.note}, "notes": parts.notes, "seconds": parts.seconds}
        (root / "credit.json").write_text(json.dumps(summary, indent=2, default=str))
        extra = root / "extra"
        if parts.diagram_svg:
            (extra / "diagram").mkdir(parents=True)
            (extra / "diagram" / "best.svg").write_text(parts.diagram_svg)
            (extra / "diagram" / "best.png").write_bytes(parts.diagram_png or b"")
        if parts.gradcam_png:
            (extra / "gradcam").mkdir(parents=True)
            (extra / "gradcam" / "best.png").write_bytes(parts.gradcam_png)
        for sub in ("diagram", "gradcam"):
            if (extra / sub).is_dir():
                client.log_artifacts(parent, str(extra / sub), sub)
        client.log_artifacts(parent, str(root / "plots"), "plots")
        client.log_artifact(parent, str(root / "report.html"))
        client.log_artifact(parent, str(root / "credit.json"))
        winner = data.winner
        if winner is not None and extra.is_dir():
            query = f"tags.`{TAG_KIND}` = 'best' and tags.`{TAG_TRIAL}` = '{winner.number}'"
            for run in client.search_runs([data.experiment_id], query, max_results=5):
                if run.data.tags.get("mlflow.parentRunId") == parent:
                    for sub in ("diagram", "gradcam"):
                        if (extra / sub).is_dir():
                            client.log_artifacts(run.info.run_id, str(extra / sub), sub)
    links.mark_training(client, data.experiment_id)
    client.set_tag(parent, "mlflow.note.content", description(parts, result))
    now = int(time.time() * 1000)
    metrics = []
    for p in parts.credit.plugins:
        if p.accuracy.estimate is not None:
            metrics.append(Metric(f"credit.{p.plugin}.points", p.accuracy.estimate, now, 0))
        if p.cost.estimate is not None:
            metrics.append(Metric(f"credit.{p.plugin}.cost_pct", p.cost.estimate, now, 0))
    if metrics:
        client.log_batch(parent, metrics=metrics)
    _name_objectives(study, data.objectives)
    _to_dashboard(study, parts, result)


def _name_objectives(study: Any, names: list[str]) -> None:
    """Let optuna-dashboard label its axes ``val_accuracy`` instead of ``Objective 0``."""
    import warnings

    if len(names) != len(study.directions) or study.metric_names == names:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in some Optuna versions
        study.set_metric_names(names)


def _to_dashboard(study: Any, parts: Any, result: Any = None) -> None:
    """The headline, the credit table and two plots on the study's page in optuna-dashboard.

    optuna-dashboard keeps notes and plotly figures in the study storage, so they appear for
    anyone who opens the study, with no file to find; without the package this is skipped.
    """
    try:
        import optuna_dashboard
    except ImportError:
        return
    try:
        optuna_dashboard.save_note(study, description(parts, result))
        for p in parts.plots:
            if p.key in ("credit", "pareto") and p.figure is not None:
                optuna_dashboard.save_plotly_graph_object(study, p.figure, graph_object_id=f"searchcore-{p.key}")
    except Exception as e:  # e.g. a storage whose attribute column is too small for a figure: MLflow has it all anyway
        print(f"searchcore: note: optuna-dashboard extras not saved ({type(e).__name__}: {e})", file=sys.stderr)


def description(parts: Any, result: Any = None) -> str:
    """The parent run's description in MLflow (markdown, the first thing on its page): the winner
    against the baseline, the top plugin effect, the credit table, where the plots are."""
    from searchcore.report.credit import table_rows
    from searchcore.track.mlflow_view import headline

    c = parts.credit
    lines = [f"**{headline(result)}**", ""] if result is not None else [f"searchcore search {parts.data.name}", ""]
    lines += [f"**{c.headline}**", "",
             f"| plugin | trials on/off | effect on {c.metric} | effect on {c.cost_label} | winner's exact cost | in winner |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(c)]
    lines += ["", f"Estimator: {c.estimator}.", "",
              "Plots: artifacts `plots/`; everything interactive in `report.html`; the winner in `diagram/` and `gradcam/`."]
    return "\n".join(lines)
