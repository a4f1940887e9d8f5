"""What MLflow's own UI shows of a search, so its pages answer "which architecture won, by how
much, and what helped" without a click. Checked against MLflow 3.17's UI (tests/test_browser.py).

* **The runs view.** MLflow keeps a saved view of the runs table ("Views" menu, top right) as the
  experiment tag ``mlflow.sharedViewState.<key>``: a JSON envelope ``{name, createdAt, updatedAt,
  state}`` whose ``state`` is the table's search facets and UI state (filter, sort, columns). The
  URL ``#/experiments/ID/runs?viewStateShareKey=<key>`` opens it. searchcore saves one per search:
  the trial runs only, sorted by the first objective, with the objectives, test accuracy, the gain
  over the baseline, params, MACs, state and the one-line architecture as columns. A table sorted
  by anything but its creation date lists child runs flat, so every trial is a row.
* **Model training, not GenAI.** MLflow 3 picks the GenAI or the model-training view from the URL's
  ``workflowType`` or else from the browser's ``localStorage`` (``mlflow.workflowType_v1``,
  default GenAI), not from the experiment: a run opened from the table (its link carries no
  ``workflowType``) opens as a GenAI evaluation. ``searchcore ui`` therefore serves MLflow through
  :data:`app` (an ``mlflow.app`` plugin, ``mlflow ui --app-name searchcore``), which only adds to
  MLflow's page a default of ``machine_learning`` for browsers that have not chosen a view. It is
  an ASGI app, for MLflow's default uvicorn server (not ``--gunicorn-opts`` / ``--waitress-opts``).
* **Run names.** A trial's state is in its name (``trial-4 (pruned)``, ``trial-5 (failed)``,
  ``trial-6 (crashed)``), the winner's too (``trial-3 ★ best``): the name is the one column
  MLflow always shows, on every page.
* **The winner and the registered model.** The winning trial's run gets ``test_accuracy`` and
  ``gain_vs_baseline_pts``; the registered model gets the numbers as tags and a description that
  says how to rebuild, retrain and export it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from searchcore.train.outcome import FAILED, PRUNED, TAG_BASELINE

VIEW_KEY = "searchcore"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
KIND_TAG = "mlflow.experimentKind"
KIND_TRAINING = "custom_model_development"
WORKFLOW = "machine_learning"
APP_NAME = "searchcore"  # the ``mlflow.app`` entry point in pyproject.toml
TEST = "test_accuracy"
GAIN = "gain_vs_baseline_pts"  # test accuracy minus the baseline's, in points
COSTS = ("params", "macs")
TAG_STATE = "searchcore.state"
TAG_SPEC = "searchcore.spec"
TAG_WINNER = "searchcore.winner"
CRASHED = "interrupted"  # how sync and resume word the reason of a trial whose worker died
WINNER_MARK = "★"


def runs_url(base: str, experiment_id: str) -> str:
    """The search's saved runs view (trials sorted by the objective) in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType={WORKFLOW}"


def trial_run_name(number: int, state: str, reason: str = "", baseline: bool = False) -> str:
    """``trial-4 (pruned)``: the state where MLflow always shows it. A trial whose worker died is
    ``crashed``, one that raised is ``failed``; MLflow's status alone cannot tell these apart. The
    unimproved backbone's trial says ``baseline``: ``trial-0 (baseline)``."""
    words = ["baseline"] if baseline else []
    if state == PRUNED:
        words.append("pruned")
    elif state == FAILED:
        words.append("crashed" if reason.startswith(CRASHED) else "failed")
    return f"trial-{number} ({', '.join(words)})" if words else f"trial-{number}"


def trial_note(state: str, reason: str = "", baseline: bool = False) -> str | None:
    """The run page's description for a trial that did not complete: what stopped it, in words.
    MLflow shows a pruned trial's status as *Killed* (stopped on purpose), a failed one's as *Failed*.
    The baseline's trial says what it is for, whatever its state."""
    first = ("**Baseline**: the backbone with every plugin off, run first in every search; the search's best must "
             "beat it, or it is the best.") if baseline else None
    if state == PRUNED:
        note = (f"**Pruned** ({reason or 'stopped early'}): the pruner stopped this trial on purpose because its "
                "val accuracy trailed the others at the same epoch. Not a crash; MLflow's status for it is *Killed*.")
    elif state == FAILED and reason.startswith(CRASHED):
        note = f"**Crashed**: {reason}. The process running it died before the trial ended, so it has no result."
    elif state == FAILED:
        note = f"**Failed**: {reason or 'see traceback.txt'}. The full traceback is the artifact `traceback.txt` when there is one."
    else:
        note = None
    return "\n\n".join(n for n in (first, note) if n) or None


def _key(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"


def view_state(objectives: list[str], directions: list[str]) -> dict[str, Any]:
    """The runs table's state: trial runs, best first by the first objective, the columns that matter."""
    metrics = list(dict.fromkeys([*objectives, TEST, GAIN, *COSTS]))
    columns = [_key("metrics", m) for m in metrics] + [_key("tags", TAG_STATE), _key("tags", TAG_SPEC)]
    widths = {c: 112 for c in columns} | {_key("metrics", GAIN): 160, _key("tags", TAG_STATE): 110, _key("tags", TAG_SPEC): 520}
    return {
        "searchFilter": "tags.`searchcore.kind` = 'trial'",
        "orderByKey": _key("metrics", objectives[0]),
        "orderByAsc": bool(directions) and directions[0] == "minimize",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": widths,
    }


def save_view(client: Any, experiment_id: str, objectives: list[str], directions: list[str]) -> None:
    """Write the search's runs view as an experiment tag (MLflow's saved views) and mark the
    experiment as model training."""
    now = int(time.time() * 1000)
    name = f"searchcore: trials by {objectives[0]}"
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(view_state(objectives, directions))}
    client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(envelope))
    client.set_experiment_tag(experiment_id, KIND_TAG, KIND_TRAINING)


def has_view(client: Any, experiment_id: str) -> bool:
    return VIEW_TAG in client.get_experiment(experiment_id).tags


def guess_directions(objectives: list[str]) -> list[str]:
    """Directions of built-in objectives, before the study exists (``finish`` writes the study's)."""
    from searchcore.train.objectives import BUILTIN

    known = {o.name: o.direction for o in BUILTIN}
    return [known.get(n, "maximize") for n in objectives]


def headline(result: Any) -> str:
    """``Best: trial 3, test accuracy 0.9861 vs 0.9053 for the baseline (+8.1 points)``; or, when no
    trial beat the unimproved backbone, that it is the best and what was registered."""
    best = result.best[0] if result.best else None
    if best is None or best.test_accuracy is None:
        return "No architecture was retrained and tested."
    if getattr(result, "baseline_won", False):
        return (f"No trial beat the baseline (every plugin off, trial {best.trial}): it is the best, "
                f"test accuracy {best.test_accuracy:.4f}")
    text = f"Best: trial {best.trial}, test accuracy {best.test_accuracy:.4f}"
    base = result.baseline_test_accuracy
    if base is not None:
        text += f" vs {base:.4f} for the baseline, every plugin off ({100 * (best.test_accuracy - base):+.1f} points)"
    return text


def _trial_runs(client: Any, experiment_id: str, study: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`searchcore.study` = '{study}' and tags.`searchcore.kind` = 'trial'",
                                  max_results=1000, page_token=token)
        for r in page:
            out[int(r.data.tags["searchcore.trial"])] = r
        token = page.token
        if not token:
            return out


def _costs(spec: dict) -> dict[str, float]:
    """Params and MACs of ``spec``, without touching the global random state (determinism)."""
    import torch

    from searchcore.arch.build import param_count
    from searchcore.plugins.building import build
    from searchcore.train.objectives import count_macs

    with torch.random.fork_rng(devices=[]):
        model = build(spec)
        return {"params": float(param_count(model)), "macs": float(count_macs(model, spec["input"]))}


def finish(tracker: Any, result: Any, study: str, directions: list[str], limit: int = 500) -> None:
    """After the winner is tested and the baseline trained: the view with the study's directions,
    params and MACs on every trial run (the first ``limit``: each is a model built), the winner's
    numbers, the registered model's page. A resumed search's earlier winner loses its mark."""
    from mlflow.entities import Metric

    from searchcore.arch.spec import decode

    client, exp = tracker.client, tracker.experiment_id
    save_view(client, exp, list(result.objectives) or ["val_accuracy"], directions)
    runs = _trial_runs(client, exp, study)
    now = int(time.time() * 1000)
    for _, run in sorted(runs.items())[:limit]:
        missing = [c for c in COSTS if c not in run.data.metrics]
        spec = run.data.tags.get(TAG_SPEC)
        if not missing or not spec:
            continue
        try:
            costs = _costs(decode(spec))
        except Exception:  # a spec cut short in the tag, or one that does not build (a failed trial): no cells
            continue
        client.log_batch(run.info.run_id, metrics=[Metric(c, costs[c], now, 0) for c in missing])
    base = result.baseline_test_accuracy
    pareto = len(result.objectives) > 1
    tested = {a.trial for a in result.best if a.test_accuracy is not None}
    for number, run in runs.items():
        if TAG_WINNER in run.data.tags and number not in tested:
            tags = run.data.tags
            client.update_run(run.info.run_id, name=trial_run_name(number, tags.get(TAG_STATE, ""), tags.get("searchcore.reason", ""),
                                                                    tags.get(TAG_BASELINE) == "true"))
            client.delete_tag(run.info.run_id, TAG_WINNER)
            client.delete_tag(run.info.run_id, "mlflow.note.content")
    for arch in result.best:
        run = runs.get(arch.trial)
        if arch.test_accuracy is None or run is None:
            continue
        metrics = [Metric(TEST, float(arch.test_accuracy), now, 0)]
        if base is not None:
            metrics.append(Metric(GAIN, round(100 * (arch.test_accuracy - base), 2), now, 0))
        client.log_batch(run.info.run_id, metrics=metrics)
        own = " (baseline)" if run.data.tags.get(TAG_BASELINE) == "true" else ""
        client.update_run(run.info.run_id, name=f"trial-{arch.trial} {WINNER_MARK} {'Pareto' if pareto else 'best'}{own}")
        words = headline(result) if not pareto else f"On the Pareto front: trial {arch.trial}, test accuracy {arch.test_accuracy:.4f}"
        client.set_tag(run.info.run_id, TAG_WINNER, words)
        model = f"\n\nRegistered as `{arch.model_uri}`." if arch.model_uri else ""
        client.set_tag(run.info.run_id, "mlflow.note.content", f"**{words}**\n\nArchitecture: `{arch.one_line}`{model}")
        if arch.model_uri:
            describe_model(client, arch, base, study)


def describe_model(client: Any, arch: Any, baseline: float | None, name: str) -> None:
    """The registered model's page: the numbers as tags, how to use it as the description."""
    model, version = arch.model_uri[len("models:/"):].rsplit("/", 1)
    gain = f"{100 * (arch.test_accuracy - baseline):+.1f} points" if baseline is not None else "no baseline trained"
    tags = {TEST: f"{arch.test_accuracy:.4f}", "gain_vs_baseline": gain, "architecture": arch.one_line[:5000], "trial": str(arch.trial)}
    if baseline is not None:
        tags["baseline_test_accuracy"] = f"{baseline:.4f}"
    for k, v in tags.items():
        if k != "architecture":  # long: on the model's page it is in the description, above the tags
            client.set_registered_model_tag(model, k, v)
        client.set_model_version_tag(model, version, k, v)
    vs = f" against {baseline:.4f} for the baseline ({gain})" if baseline is not None else ""
    text = (f"Trial {arch.trial} of search `{name}`: test accuracy **{arch.test_accuracy:.4f}**{vs}.\n\n"
            f"Architecture: `{arch.one_line}`\n\n"
            f"Rebuild it: `searchcore.build.build(spec)` with the run's `spec.json` (or `searchcore build spec.json`).\n\n"
            f"Retrain it: `searchcore train models:/{model}/{version} --epochs E` (add `--finetune` to start from these weights).\n\n"
            f"Export it: `searchcore export models:/{model}/{version} --format onnx --out model.onnx` (or `--format torchscript`).")
    client.update_registered_model(model, description=text)
    client.update_model_version(model, version, description=text)


# --- serving MLflow's UI with the model-training view as the default ------------------------------------

# MLflow's useLocalStorage keys (``{key}_v{version}``, JSON values), set only where the browser has none:
# the model-training view, and the Assistant panel counted as already shown once, so that it does not
# open by itself over the right half of the runs table (its button still opens it)
DEFAULTS = {"mlflow.workflowType_v1": WORKFLOW, "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}
_SCRIPT = "<script>try{" + "".join(
    f"if(!localStorage.getItem({json.dumps(k)}))localStorage.setItem({json.dumps(k)},{json.dumps(json.dumps(v))});" for k, v in DEFAULTS.items()
) + "}catch(e){}</script>"


class TrainingViewFirst:
    """ASGI wrapper of MLflow's server: its page, with the model-training view as the default.

    Only the HTML page at ``/`` changes; every API call and asset goes to MLflow untouched. A
    browser that already chose a view (MLflow's GenAI / Model training switch) keeps it.
    """

    def __init__(self, inner: Any, page: bytes) -> None:
        self.inner, self.page = inner, page.replace(b"<head>", b"<head>" + _SCRIPT.encode(), 1)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD") and scope.get("path") in ("/", "/index.html"):
            headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(self.page)).encode()),
                       (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.page if scope["method"] == "GET" else b""})
            return
        await self.inner(scope, receive, send)


def __getattr__(name: str) -> Any:
    """``app``, built on first use, so importing this module does not start MLflow's server code."""
    if name != "app":
        raise AttributeError(name)
    from pathlib import Path

    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as inner

    wrapped = TrainingViewFirst(inner, Path(flask_app.static_folder, "index.html").read_bytes())
    globals()["app"] = wrapped
    return wrapped
