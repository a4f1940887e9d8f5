"""The MLflow record layout every backend must write; one check, shared by the backends' tests.

A search is one experiment holding one parent run (``searchcore.kind=search``: the configuration
as params, the space file as ``space.yaml``) and one child run per trial, whatever machine or
backend ran it: params are the trial's sampled params and rebuild its spec, the spec is an
artifact and a tag, each epoch's metrics are a history with steps 1..E, and the run's status
matches the trial's state.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAILED": "FAILED"}
EPOCH_METRICS = ("train_loss", "val_accuracy", "lr", "epoch_seconds")


@dataclass
class Layout:
    """What the check found, for a test's own further assertions."""

    client: MlflowClient
    parent: Any
    children: dict[int, Any] = field(default_factory=dict)
    epochs: int = 0

    def tag(self, key: str) -> dict[int, str]:
        return {n: r.data.tags.get(key, "") for n, r in self.children.items()}


def _typed(dim: Any, text: str) -> Any:
    """An MLflow param (a string) back to the dimension's value."""
    if dim.kind == "categorical":
        matches = [c for c in dim.choices if str(c) == text]
        assert len(matches) == 1, f"param {dim.name}={text!r} is not one of {dim.choices}"
        return matches[0]
    return int(text) if dim.kind == "int" else float(text)


def _space(space_text: str) -> Any:
    from searchcore.engine.config import parse_space, resolve
    from searchcore.engine.runner import dataset_shape
    from searchcore.plugins.host import get_host

    cfg = parse_space(space_text, "space.yaml of the parent run")
    host = get_host()
    shape, classes = dataset_shape(cfg, host)
    return cfg, resolve(cfg, host, shape, classes)


def check_layout(tracking_uri: str, experiment: str, expected_trials: int) -> Layout:
    """Assert the record layout of search ``experiment`` with ``expected_trials`` trial runs."""
    import torch

    from searchcore.arch.spec import decode, from_json, spec_hash
    from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {tracking_uri}"
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("searchcore.kind") == "search"]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    parent = parents[0]
    assert parent.data.tags.get("searchcore.study") == experiment
    assert {"config.epochs", "config.trials", "config.seed"} <= set(parent.data.params)
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"space.yaml", "config.json"}
    epochs = int(parent.data.params["config.epochs"])

    children = [r for r in runs if r.data.tags.get("searchcore.kind") == "trial"]
    numbers = [int(r.data.tags["searchcore.trial"]) for r in children]
    assert len(numbers) == len(set(numbers)), f"duplicate trial numbers: {sorted(numbers)}"
    assert len(children) == expected_trials, f"expected {expected_trials} trial runs, found {len(children)}: {sorted(numbers)}"
    layout = Layout(client, parent, {int(r.data.tags["searchcore.trial"]): r for r in children}, epochs)

    with tempfile.TemporaryDirectory(prefix="layout-") as tmp:
        space_text = Path(client.download_artifacts(parent.info.run_id, "space.yaml", tmp)).read_text()
        cfg, space = _space(space_text)
        dims = {d.name: d for d in space.dimensions}
        for number, run in sorted(layout.children.items()):
            tags, where = run.data.tags, f"trial {number}"
            assert tags["mlflow.parentRunId"] == parent.info.run_id, where
            assert tags.get("searchcore.study") == experiment, where
            state = tags["searchcore.state"]
            assert state in STATUS, f"{where}: state {state!r}"
            assert run.info.status == STATUS[state], f"{where}: status {run.info.status} for state {state}"

            params = {k: _typed(dims[k], v) for k, v in run.data.params.items()}
            assert set(params) == set(space.rebuild_params(params, where)), f"{where}: params are not the sampled params"
            if state != "FAILED" or "searchcore.spec" in tags:
                spec = from_json(Path(client.download_artifacts(run.info.run_id, "spec.json", tmp)).read_text(), where)
                assert decode(tags["searchcore.spec"]) == spec, where
                assert tags["searchcore.spec_hash"] == spec_hash(spec), where
                assert space.spec(params) == spec, f"{where}: params do not rebuild the spec"
                model = build(spec).eval()
                with torch.no_grad():
                    assert model(torch.zeros(1, *spec["input"])).shape == (1, spec["classes"]), where

            steps = {}
            for key in EPOCH_METRICS:
                history = [m for m in client.get_metric_history(run.info.run_id, key) if m.step > 0]
                steps[key] = sorted(m.step for m in history)
            assert len({tuple(s) for s in steps.values()}) == 1, f"{where}: epoch metrics disagree on steps: {steps}"
            seen = steps["val_accuracy"]
            assert seen == list(range(1, len(seen) + 1)), f"{where}: epoch steps {seen}"
            if state == "COMPLETE":
                assert len(seen) == epochs, f"{where}: a complete trial has {epochs} epochs, got {seen}"
                for name in cfg.objectives:
                    assert name in run.data.metrics, f"{where}: objective {name} not recorded"
            else:
                assert len(seen) <= epochs, where
    return layout
