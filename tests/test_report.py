"""Search results made readable: plots on the parent run, per-plugin credit, the diagram, Grad-CAM,
the offline report and ablations. One real search on digits (SQLite study, SQLite MLflow store)
feeds every test here; the credit estimator is also checked on synthetic trials with planted effects."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from searchcore.cli import main
from searchcore.engine.api import run_search
from searchcore.engine.results import Architecture, SearchResult
from searchcore.engine.settings import Settings
from searchcore.plugins.building import build, param_count  # build(spec) with the loaded plugins' blocks
from searchcore.report import assemble, collect, credit, diagram, gradcam, links, plots
from searchcore.report.hook import log_search_report
from searchcore.space import Dimension
from searchcore.track.tracking import Tracker

SPACE = """\
name: rep
dataset: digits
backbone: seed-cnn
plugins:
  kernel: {choices: [3, 5]}
  residual: {}
  attention: {kinds: [none, se]}
objectives: [val_accuracy]
budget: {trials: 8, epochs: 2}
search: {sampler: tpe, pruner: median, seed: 0}  # the first 4 trials complete: enough to credit plugins
"""
PLOTS = ("history", "learning_curves", "importances", "pareto", "parallel", "credit")


@dataclass
class Searched:
    root: Path
    storage: str
    tracking: str
    result: Any
    stderr: str

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="rep", storage=self.storage)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking, registry_uri=self.tracking)


def shared_search(factory: pytest.TempPathFactory) -> Searched:
    """One real search (its end-of-search hook included) for this module and ``test_browser.py``.

    The search is the expensive part of both, so the first module to ask runs it and leaves it,
    with what it returned and printed to stderr, under the session's base temp folder; the other
    reads it back. The stores are real: later tests add to them (an ablation run), never remove.
    """
    keep = os.environ.get("SEARCHCORE_TEST_SEARCH_DIR")  # set it to keep the search between runs while developing
    root = Path(keep) if keep else factory.getbasetemp() / "searchcore-report-search"
    saved = root / "searched.json"
    storage, tracking = f"sqlite:///{root / 'searchcore.db'}", f"sqlite:///{root / 'mlflow.db'}"
    if not saved.exists():
        root.mkdir(parents=True, exist_ok=True)
        space = root / "space.yaml"
        space.write_text(SPACE)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result = run_search(space, Settings(name="rep", progress=False, baseline=True, storage=storage, tracking_uri=tracking), report=log_search_report)
        saved.write_text(json.dumps({"result": asdict(result), "stderr": err.getvalue()}))
    info = json.loads(saved.read_text())
    r = dict(info["result"])
    r["best"] = [Architecture(**a) for a in r["best"]]
    return Searched(root, storage, tracking, SearchResult(**r), info["stderr"])


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    return shared_search(tmp_path_factory)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


# --- the end-of-search hook --------------------------------------------------------------------------


def test_search_logs_plots_credit_diagram_and_gradcam_to_mlflow(searched: Searched) -> None:
    assert "could not make the search's plots" not in searched.stderr
    client = searched.client()
    parent = searched.result.parent_run_id
    arts = _artifacts(client, parent)
    assert {f"plots/{k}.png" for k in PLOTS} <= arts
    assert {"report.html", "credit.json", "diagram/best.svg", "diagram/best.png", "gradcam/best.png"} <= arts
    for name in ("plots/pareto.png", "gradcam/best.png", "diagram/best.png"):
        assert Path(client.download_artifacts(parent, name, str(searched.root))).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(client.download_artifacts(parent, "report.html", str(searched.root))).read_text()
    assert page.count("js-plotly-plot") >= 5 or page.count("Plotly.newPlot") >= 5

    summary = json.loads(Path(client.download_artifacts(parent, "credit.json", str(searched.root))).read_text())
    assert "ridge regression" in summary["credit"]["estimator"] and "bootstrap" in summary["credit"]["estimator"]
    assert [p["plugin"] for p in summary["credit"]["plugins"]] == ["attention", "kernel", "residual"]
    assert summary["importances"]["method"].startswith("fANOVA")

    # the winner's model run carries its diagram and Grad-CAM next to the model
    best = [r for r in client.search_runs([client.get_run(parent).info.experiment_id], "tags.`searchcore.kind` = 'best'")]
    assert len(best) == 1
    assert {"diagram/best.svg", "gradcam/best.png"} <= _artifacts(client, best[0].info.run_id)

    # at a glance in MLflow: the training view, the headline in the run's description, credit metrics
    run = client.get_run(parent)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags[links.KIND_TAG] == links.KIND_TRAINING
    assert summary["credit"]["headline"] in run.data.tags["mlflow.note.content"]
    assert any(k.startswith("credit.") and k.endswith(".points") for k in run.data.metrics)
    study = searched.study()
    assert study.metric_names == ["val_accuracy"]  # optuna-dashboard labels its axes by name
    try:
        import optuna_dashboard
    except ImportError:
        return
    assert summary["credit"]["headline"] in optuna_dashboard.get_note(study)  # at a glance on the dashboard too


def test_a_plotting_failure_only_warns(searched: Searched, capsys: pytest.CaptureFixture) -> None:
    tracker = Tracker(searched.tracking, experiment="rep")
    seconds = log_search_report(searched.study(), None, tracker, "0" * 32, searched.result)  # no such parent run
    assert seconds == 0.0
    assert "warning: could not make the search's plots" in capsys.readouterr().err


# --- plots ---------------------------------------------------------------------------------------------


def _synthetic(rows: list[collect.TrialRow], dims: list[Dimension], chosen: list[int]) -> collect.SearchData:
    return collect.SearchData(name="synthetic", storage_url="", study_id=0, objectives=["val_accuracy"], directions=["maximize"],
                              trials=rows, dims=dims, chosen=chosen)


def test_learning_curves_mark_where_trials_were_pruned() -> None:
    dims = [Dimension.categorical("attention.s1", ["none", "se"], plugin="attention")]
    rows = [
        collect.TrialRow(0, "COMPLETE", {"attention.s1": "se"}, [0.9], {"val_accuracy": 0.9, "params": 1000.0}, [(1, 0.6), (2, 0.8), (3, 0.9)]),
        collect.TrialRow(1, "PRUNED", {"attention.s1": "none"}, [], {}, [(1, 0.3)]),
        collect.TrialRow(2, "COMPLETE", {"attention.s1": "none"}, [0.7], {"val_accuracy": 0.7, "params": 800.0}, [(1, 0.5), (2, 0.6), (3, 0.7)]),
    ]
    data = _synthetic(rows, dims, chosen=[0])
    got = {p.key: p for p in plots.render(None, data, credit.estimate(data, exact=False), plots.Importances("none", {}, {}))}
    curves = got["learning_curves"]
    assert curves.png[:4] == b"\x89PNG" and not curves.error
    marks = [t for t in curves.figure.data if t.name == "pruned here"]
    assert len(marks) == 1 and list(marks[0].x) == [1] and list(marks[0].y) == [0.3]
    pareto = got["pareto"]
    front = [t for t in pareto.figure.data if t.name == "Pareto front"][0]
    assert list(front.x) == [800.0, 1000.0]  # both trade accuracy for parameters: both on the front
    chosen = [t for t in pareto.figure.data if t.name == "chosen"][0]
    assert list(chosen.x) == [1000.0] and list(chosen.y) == [0.9]
    assert got["parallel"].error  # no study given: that one plot is skipped, the others are drawn
    assert plots.pareto_front([(1, 0.5), (2, 0.4), (3, 0.9)], maximize=True) == [0, 2]


# --- credit --------------------------------------------------------------------------------------------


def test_credit_recovers_planted_effects_despite_correlated_choices() -> None:
    """SE adds +3 points and 20 % parameters, kernel 5 costs 1 point for +50 %, residual does nothing
    but was sampled mostly together with SE: a plain on/off comparison would credit it, the
    regression must not."""
    dims = [Dimension.categorical("attention.s1", ["none", "se"], plugin="attention"),
            Dimension.categorical("kernel.s1", [3, 5], plugin="kernel"),
            Dimension.categorical("residual.s1", [False, True], plugin="residual")]
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        se = bool(rng.random() < 0.5)
        k5 = bool(rng.random() < 0.5)
        res = bool(rng.random() < (0.85 if se else 0.15))
        acc = 0.80 + 0.03 * se - 0.01 * k5 + rng.normal(0, 0.002)
        params = 10_000 * (1.2 if se else 1.0) * (1.5 if k5 else 1.0)
        p = {"attention.s1": "se" if se else "none", "kernel.s1": 5 if k5 else 3, "residual.s1": res}
        rows.append(collect.TrialRow(i, "COMPLETE", p, [acc], {"val_accuracy": acc, "params": params}, []))
    winner = next(t.number for t in rows if t.params == {"attention.s1": "se", "kernel.s1": 3, "residual.s1": True})
    c = credit.estimate(_synthetic(rows, dims, [winner]), exact=False)
    by = {p.plugin: p for p in c.plugins}
    assert by["attention"].accuracy.estimate == pytest.approx(3.0, abs=0.3)
    assert by["attention"].accuracy.low < 3.0 < by["attention"].accuracy.high
    assert by["kernel"].accuracy.estimate == pytest.approx(-1.0, abs=0.3)
    assert abs(by["residual"].accuracy.estimate) < 0.5
    assert by["residual"].raw_on - by["residual"].raw_off > 1.0  # the confounding is there in the raw means
    assert by["attention"].cost.estimate == pytest.approx(20.0, abs=2.0)
    assert by["kernel"].cost.estimate == pytest.approx(50.0, abs=3.0)
    assert by["attention"].in_winner and by["residual"].in_winner and not by["kernel"].in_winner
    m = re.fullmatch(r"squeeze-and-excitation in stage 1 \(attention\) gave \+(\S+) points of val_accuracy "
                     r"\[90% interval \+(\S+) to \+(\S+)\] for \+(\d+)% parameters", c.headline)
    assert m, c.headline
    assert float(m[1]) == pytest.approx(3.0, abs=0.3) and float(m[2]) < 3.0 < float(m[3]) and int(m[4]) == pytest.approx(20, abs=2)
    assert c.trials == 60 and "ridge regression" in c.estimator


def test_credit_with_too_few_trials_says_so() -> None:
    dims = [Dimension.categorical("residual.s1", [False, True], plugin="residual")]
    rows = [collect.TrialRow(0, "COMPLETE", {"residual.s1": True}, [0.8], {"val_accuracy": 0.8, "params": 10.0}, [])]
    c = credit.estimate(_synthetic(rows, dims, [0]), exact=False)
    assert c.plugins[0].accuracy.estimate is None and "at least 3" in c.note
    assert c.headline == c.note


def test_choices_are_described_in_words() -> None:
    d = credit.describe_choice
    assert d(Dimension.categorical("attention.s2", ["none", "se"], plugin="attention"), "se") == "squeeze-and-excitation in stage 2"
    assert d(Dimension.categorical("residual.s1", [False, True], plugin="residual"), True) == "residual in stage 1"
    assert d(Dimension.categorical("widthdepth.width", [1.0, 1.5], plugin="widthdepth"), 1.5) == "width 1.5"
    assert d(Dimension.categorical("widthdepth.s2.depth", [1, 2], plugin="widthdepth"), 2) == "depth 2 in stage 2"
    assert d(Dimension.categorical("normact.act", ["relu", "gelu"], plugin="normact"), "gelu") == "GELU activation"
    assert d(Dimension.categorical("kernel.s3", [3, 5], plugin="kernel"), 5) == "kernel 5 in stage 3"


# --- exact costs, the diagram, Grad-CAM (on the real search) ------------------------------------------------


@pytest.fixture(scope="module")
def runner(searched: Searched) -> Any:
    return collect.runner_from_study(searched.study())


def test_exact_costs_of_the_winner_are_its_real_parameter_counts(searched: Searched, runner: Any) -> None:
    data = collect.load(searched.study(), space=runner.space, mlflow=False)
    winner = data.winner
    assert winner.number == searched.result.best[0].trial
    exact = credit.exact_costs(data)
    on = {d.plugin for d in data.dims if collect.is_on(d, winner.params)}
    assert {e.plugin for e in exact} == on
    for e in exact:
        assert e.params_with == int(winner.metrics["params"])  # the count the trial itself recorded
        assert e.params_without < e.params_with and e.macs_without <= e.macs_with  # each of these plugins adds capacity


def test_diagram_shows_shapes_and_which_plugin_changed_what(runner: Any) -> None:
    space, dims = runner.space, runner.space.dimensions
    params = collect.switch_off(dims, {}, set())
    params.update({"attention.s2": "se", "residual.s2": True})
    params = collect.switch_off(dims, params, set())  # the now-active child (attention.s2.reduction) at its off value
    spec = space.spec(params)
    d = diagram.describe(spec, space, dims, params)
    rows = {r.label: r for r in d.rows}
    assert [b.type for b in rows["stage 2"].blocks] == ["conv", "attention.se", "maxpool"]
    se = rows["stage 2"].blocks[1]
    assert se.plugins == ["attention"] and se.shape == [64, 4, 4] and se.params > 0
    assert rows["stage 2"].shortcut and rows["stage 2"].shortcut_plugins == ["residual"]
    assert not rows["stage 1"].shortcut and all(not b.plugins for b in rows["stage 1"].blocks)
    assert [b.shape for b in rows["stage 1"].blocks] == [[32, 8, 8], [32, 4, 4]]
    assert rows["head"].blocks[-1].shape == [10]
    assert d.params == param_count(build(spec))
    assert d.changes == {"attention": ["squeeze-and-excitation in stage 2"], "residual": ["residual in stage 2"]}
    svg = d.svg()
    assert "<svg" in svg and "attention.se" in svg and "shortcut (residual)" in svg and "64x4x4" in svg
    assert d.png()[:4] == b"\x89PNG"


def test_gradcam_explains_the_winner_on_validation_images(searched: Searched, runner: Any) -> None:
    model = assemble.load_model(searched.result.best[0].model_uri, searched.tracking)
    images, labels = gradcam.pick_images(runner.splits.val_x, runner.splits.val_y, 8)
    assert len(set(labels.tolist())) == 8  # one image per class first
    cam = gradcam.grad_cam(model, images)
    assert cam.maps.shape == (8, 8, 8) and cam.layer.startswith("stage 2 output (4x4)")  # 8x8 digits: the 4x4 map
    assert float(cam.maps.min()) >= 0.0 and float(cam.maps.max()) <= 1.0
    assert sum(float(m.max()) == pytest.approx(1.0) for m in cam.maps) >= 4
    with torch.no_grad():
        assert torch.equal(cam.predicted, model(images).argmax(1))
    again = gradcam.grad_cam(model, images)
    assert torch.allclose(cam.maps, again.maps)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert gradcam.figure_png(images, labels, cam)[:4] == b"\x89PNG"


# --- the commands ------------------------------------------------------------------------------------


def test_ablate_then_report(searched: Searched, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ablate", "rep", "--storage", searched.storage, "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "ablation of trial" in out and "test gain (pts)" in out
    study = searched.study()
    a = study.user_attrs[assemble.ATTR_ABLATION]
    winner = searched.result.best[0]
    assert a["trial"] == winner.trial and a["seeds"] == [0, 1] and a["epochs"] == 2
    assert [r["group"] for r in a["rows"]] == sorted({d.plugin for d in _dims(searched) if collect.is_on(d, winner.params)})
    for r in a["rows"]:
        assert len(r["test_diffs"]) == 2 and r["test_diff_sd"] >= 0 and r["params_pct"] > 0
    # same budget and seed as the search's own retraining of the winner: the same test accuracy
    assert a["full"]["test"][0] == pytest.approx(winner.test_accuracy, abs=1e-9)
    runs = searched.client().search_runs([_experiment(searched)], "tags.`searchcore.kind` = 'ablation'")
    assert len(runs) == 1 and runs[0].data.tags["mlflow.parentRunId"] == searched.result.parent_run_id

    assert main(["report", "rep", "--storage", searched.storage, "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    page = (tmp_path / "rep" / "index.html").read_text()
    assert str(tmp_path / "rep" / "index.html") in out
    # self-contained: nothing is loaded from anywhere
    assert not re.findall(r"<(?:script|img|link|iframe|source)[^>]*\s(?:src|href)=[\"']?(?:https?:)?//", page)
    assert page.count("data:image/png;base64,") >= 7 and "<svg" in page
    assert "id='ablation-table'" in page and "id='credit-table'" in page
    assert "id='measured-headline'>Measured: " in page  # measured beats estimated at a glance
    complete = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    top = re.search(r"<table id='top-table'>(.*?)</table>", page, re.S).group(1)
    assert top.count("<tr") == 1 + min(10, complete)
    assert "workflowType=machine_learning" in page and "optuna-dashboard sqlite:///" in page
    assert "ridge regression" in page


def test_report_of_an_unknown_search_is_one_line(searched: Searched, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "nope", "--storage", searched.storage]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no search named 'nope'" in err[0]


def test_ui_prints_a_training_view_link_per_search(searched: Searched, capsys: pytest.CaptureFixture) -> None:
    links.print_ui_links(searched.tracking, "127.0.0.1", 5999)
    out = capsys.readouterr().out
    exp = _experiment(searched)
    assert f"search rep: http://127.0.0.1:5999/#/experiments/{exp}/runs?viewStateShareKey=searchcore&workflowType=machine_learning" in out


def test_mlflow_records_answer_who_won_and_by_how_much(searched: Searched) -> None:
    """What MLflow's pages are built from (tests/test_browser.py looks at the pages themselves)."""
    client, exp, r = searched.client(), _experiment(searched), searched.result
    winner = r.best[0]
    # the saved runs view: trial runs only, best first by the objective, the columns that answer the question
    envelope = json.loads(client.get_experiment(exp).tags["mlflow.sharedViewState.searchcore"])
    state = json.loads(envelope["state"])
    assert state["orderByKey"] == "metrics.`val_accuracy`" and state["orderByAsc"] is False
    assert state["searchFilter"] == "tags.`searchcore.kind` = 'trial'"
    assert {"metrics.`test_accuracy`", "metrics.`gain_vs_baseline_pts`", "metrics.`params`", "metrics.`macs`",
            "tags.`searchcore.state`", "tags.`searchcore.spec`"} <= set(state["selectedColumns"])
    runs = {int(t.data.tags["searchcore.trial"]): t for t in client.search_runs([exp], "tags.`searchcore.kind` = 'trial'")}
    for t in searched.study().trials:
        run = runs[t.number]
        state_name = {"COMPLETE": "", "PRUNED": "pruned", "FAIL": "failed"}[t.state.name]
        words = ", ".join(w for w in ("baseline" if t.number == 0 else "", state_name) if w)  # trial 0: every plugin off
        assert (run.data.tags.get("searchcore.baseline") == "true") is (t.number == 0)
        if t.number == winner.trial:
            assert run.info.run_name == f"trial-{t.number} ★ best" + (" (baseline)" if t.number == 0 else "")
        else:
            assert run.info.run_name == f"trial-{t.number}" + (f" ({words})" if words else "")
        if t.state.name != "FAIL":
            assert run.data.metrics["params"] > 0 and run.data.metrics["macs"] > 0  # pruned trials too
    best = runs[winner.trial].data.metrics
    assert best["test_accuracy"] == pytest.approx(winner.test_accuracy)
    assert best["gain_vs_baseline_pts"] == pytest.approx(round(100 * (winner.test_accuracy - r.baseline_test_accuracy), 2))
    # the parent run's description opens with the winner against the baseline
    note = client.get_run(r.parent_run_id).data.tags["mlflow.note.content"]
    assert f"Best: trial {winner.trial}, test accuracy {winner.test_accuracy:.4f} vs {r.baseline_test_accuracy:.4f}" in note
    # the registered model's page: the numbers and how to use it
    model = client.get_registered_model("rep")
    assert model.tags["test_accuracy"] == f"{winner.test_accuracy:.4f}" and model.tags["baseline_test_accuracy"] == f"{r.baseline_test_accuracy:.4f}"
    assert client.get_model_version("rep", "1").tags["architecture"] == winner.one_line
    for words in ("searchcore train models:/rep/1", "searchcore export models:/rep/1", "searchcore.build.build(spec)", f"{winner.test_accuracy:.4f}"):
        assert words in model.description


def test_trial_run_names_tell_pruned_failed_and_crashed_apart() -> None:
    from searchcore.track.mlflow_view import trial_run_name

    assert trial_run_name(4, "PRUNED", "pruned at epoch 1") == "trial-4 (pruned)"
    assert trial_run_name(5, "FAILED", "out of memory") == "trial-5 (failed)"
    assert trial_run_name(6, "FAILED", "interrupted: its worker died (process killed)") == "trial-6 (crashed)"
    assert trial_run_name(7, "COMPLETE") == "trial-7"


def _experiment(searched: Searched) -> str:
    return searched.client().get_experiment_by_name("rep").experiment_id


def _dims(searched: Searched) -> list[Dimension]:
    return collect.runner_from_study(searched.study()).space.dimensions


def test_mlflow_view_marks_the_winner_and_unmarks_a_resumed_searchs_old_one(searched: Searched, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from searchcore.track import mlflow_view
    from searchcore.train.outcome import TrialOutcome

    spec = searched.result.best[0].spec
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="resumed")
    parent = tracker.start_search("resumed", {"objectives": {"val_accuracy": {}}}, "", {})
    outcomes = [TrialOutcome(0, {}, spec, "COMPLETE", metrics={"val_accuracy": 0.9}, start=1.0, end=2.0),
                TrialOutcome(1, {}, spec, "PRUNED", "pruned at epoch 1", history=[{"epoch": 1, "val_accuracy": 0.3}], start=1.0, end=2.0),
                TrialOutcome(2, {}, None, "FAILED", "interrupted: its worker died (process killed)", start=1.0, end=2.0),
                TrialOutcome(3, {}, spec, "COMPLETE", metrics={"val_accuracy": 0.95}, start=1.0, end=2.0)]
    for o in outcomes[:3]:
        tracker.write_trial(o, "resumed", parent, {})

    def arch(n: int, acc: float) -> Architecture:
        return Architecture(n, spec, {}, [acc], {}, test_accuracy=acc)

    def runs() -> dict[int, Any]:
        return {int(r.data.tags["searchcore.trial"]): r for r in tracker.client.search_runs([tracker.experiment_id])
                if r.data.tags.get("searchcore.kind") == "trial"}

    mlflow_view.finish(tracker, SimpleNamespace(objectives=["val_accuracy"], baseline_test_accuracy=0.5, best=[arch(0, 0.8)]), "resumed", ["maximize"])
    first = runs()
    assert [first[n].info.run_name for n in range(3)] == ["trial-0 ★ best", "trial-1 (pruned)", "trial-2 (crashed)"]
    assert first[0].data.metrics["gain_vs_baseline_pts"] == pytest.approx(30.0)
    assert first[1].data.metrics["macs"] > 0 and "Not a crash" in first[1].data.tags["mlflow.note.content"]
    assert "macs" not in first[2].data.metrics  # no spec, no cells
    tracker.write_trial(outcomes[3], "resumed", parent, {})  # resumed: a better trial
    mlflow_view.finish(tracker, SimpleNamespace(objectives=["val_accuracy"], baseline_test_accuracy=0.5, best=[arch(3, 0.9)]), "resumed", ["maximize"])
    second = runs()
    assert second[0].info.run_name == "trial-0" and "searchcore.winner" not in second[0].data.tags
    assert second[3].info.run_name == "trial-3 ★ best"
