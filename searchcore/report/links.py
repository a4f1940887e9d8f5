"""Links into MLflow's UI and optuna-dashboard that land where a searchcore user wants to be.

MLflow 3 opens an experiment in its GenAI view (traces, sessions, judges) unless told
otherwise; a search is model training. Its UI reads the view from the ``workflowType`` query
parameter of the hash route (``genai`` or ``machine_learning``) before the value it remembers
in the browser, so every link we print carries ``workflowType=machine_learning``. A search's
link also names its saved runs view (``viewStateShareKey``, see :mod:`searchcore.track.mlflow_view`):
the trials flat, best first, with their metrics as columns. We also tag the experiment
``mlflow.experimentKind = custom_model_development`` for MLflow versions that pick the view
from the experiment.
"""

from __future__ import annotations

import shlex
from typing import Any

WORKFLOW = "machine_learning"
KIND_TAG = "mlflow.experimentKind"
KIND_TRAINING = "custom_model_development"


def base_url(host: str = "127.0.0.1", port: int = 5000) -> str:
    return f"http://{host}:{port}"


def experiment_url(base: str, experiment_id: str, view: bool = True) -> str:
    """The search's trials, best first, in the model-training view (``view=False``: MLflow's
    plain run table, for an experiment written before searchcore saved a view)."""
    if view:
        from searchcore.track.mlflow_view import runs_url

        return runs_url(base, experiment_id)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType={WORKFLOW}"


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """One run's page (``tab``: ``artifacts``, ``model-metrics`` ... or empty for the overview)."""
    suffix = f"/{tab}" if tab else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{suffix}?workflowType={WORKFLOW}"


def dashboard_url(base: str, study_id: int) -> str:
    """optuna-dashboard's page of one study (its id in the storage, not its name)."""
    return f"{base.rstrip('/')}/dashboard/studies/{study_id}"


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    return f"searchcore ui --tracking-uri {shlex.quote(tracking_uri)} --port {port}"


def dashboard_command(storage_url: str, port: int = 8080) -> str:
    return f"optuna-dashboard {shlex.quote(storage_url)} --host 127.0.0.1 --port {port}"


def mark_training(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training, so MLflow does not open it as a GenAI app."""
    client.set_experiment_tag(experiment_id, KIND_TAG, KIND_TRAINING)


def search_experiments(tracking_uri: str) -> list[tuple[str, str, bool]]:
    """``(name, experiment_id, has_view)`` of every experiment holding a searchcore search, newest first.

    Read before the UI starts, so ``searchcore ui`` can print a link per search; an empty or
    unreachable store simply gives no links.
    """
    from mlflow.tracking import MlflowClient

    from searchcore.track.mlflow_view import VIEW_TAG
    from searchcore.track.tracking import TAG_KIND

    client = MlflowClient(tracking_uri=tracking_uri)
    out = []
    for exp in client.search_experiments(order_by=["creation_time DESC"], max_results=200):
        runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'", max_results=1)
        if runs:
            out.append((exp.name, exp.experiment_id, VIEW_TAG in exp.tags))
    return out


def print_ui_links(tracking_uri: str, host: str, port: int) -> None:
    """What ``searchcore ui`` prints: one training-view link per search (or the experiment list)."""
    import sys

    from searchcore.track.tracking import mask_url

    base = base_url(host, port)
    try:
        found = search_experiments(tracking_uri)
    except Exception as e:  # a missing or locked store must not stop the UI from starting
        print(f"searchcore: note: could not list the searches in {mask_url(tracking_uri)} ({type(e).__name__})", file=sys.stderr)
        found = []
    print(f"MLflow UI for {mask_url(tracking_uri)} at {base}/#/experiments (Ctrl-C to stop)")
    for name, eid, view in found:
        print(f"  search {name}: {experiment_url(base, eid, view=view)}")
