"""Everything a report shows, made once: used by the end-of-search hook and by ``searchcore report``.

Each part is made on its own and a part that fails becomes a note in the report, never an
exception: a report with the diagram missing is still worth sending.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from searchcore.report.collect import SearchData, is_on
from searchcore.report.credit import Credit, describe_choice
from searchcore.report.plots import Importances, Plot

ATTR_ABLATION = "searchcore_ablation"
TOP = 10
GRADCAM_IMAGES = 8
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass
class TopRow:
    rank: int
    trial: int
    values: dict[str, float]
    metrics: dict[str, float]
    test_accuracy: float | None
    choices: list[str]
    spec: str


@dataclass
class Parts:
    data: SearchData
    credit: Credit
    importances: Importances
    plots: list[Plot]
    top: list[TopRow]
    diagram_svg: str | None = None
    diagram_png: bytes | None = None
    gradcam_png: bytes | None = None
    gradcam_layer: str = ""
    ablation: dict | None = None
    notes: list[str] = field(default_factory=list)
    generated: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def assemble(study: Any, data: SearchData, splits: Any = None, model: Any = None, html: bool = True, gradcam: bool = True) -> Parts:
    """Credit, plots, diagram, Grad-CAM and the top-10 table of ``data``.

    ``model`` is the trained winner if the caller has it; otherwise it is loaded from MLflow
    (the registered model) when ``gradcam`` is on. ``splits`` supplies the validation images.
    """
    from searchcore.report import credit as credit_mod
    from searchcore.report import plots as plots_mod

    t = time.time()
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.time()
        timing[name] = round(now - t, 3)
        t = now

    notes: list[str] = []
    credit = credit_mod.estimate(data)
    lap("credit")
    importances = plots_mod.param_importances(study, data)
    lap("importances")
    plots = plots_mod.render(study, data, credit, importances, html=html)
    notes += [f"plot '{p.title}' not drawn: {p.error}" for p in plots if p.error]
    lap("plots")
    parts = Parts(data, credit, importances, plots, top_rows(data), notes=notes, generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  ablation=study.user_attrs.get(ATTR_ABLATION))
    winner = data.winner
    if winner is None or not winner.spec:
        notes.append("no complete trial yet: no best architecture to draw")
        parts.seconds = timing
        return parts
    from searchcore.arch.spec import decode

    spec = decode(winner.spec)
    try:
        from searchcore.report import diagram

        d = diagram.describe(spec, data.space, data.dims, winner.params)
        parts.diagram_svg, parts.diagram_png = d.svg(), d.png()
    except Exception as e:
        notes.append(f"architecture diagram not drawn: {type(e).__name__}: {e}")
    lap("diagram")
    if gradcam:
        _gradcam(parts, data, splits, model, spec)
    lap("gradcam")
    parts.seconds = timing
    return parts


def _gradcam(parts: Parts, data: SearchData, splits: Any, model: Any, spec: dict) -> None:
    from searchcore.report import gradcam

    winner = data.winner
    if splits is None:
        parts.notes.append("Grad-CAM skipped: the search's dataset is not loaded (the space could not be rebuilt)")
        return
    if model is None:
        uri = data.model_uris.get(winner.number)
        if not uri:
            parts.notes.append("Grad-CAM skipped: the best architecture has no trained model in MLflow (search run with --no-register?)")
            return
        try:
            model = load_model(uri, data.tracking_uri)
        except Exception as e:
            parts.notes.append(f"Grad-CAM skipped: could not load {uri}: {type(e).__name__}: {e}")
            return
    try:
        images, labels = gradcam.pick_images(splits.val_x, splits.val_y, GRADCAM_IMAGES)
        cam = gradcam.grad_cam(model, images)
        parts.gradcam_png = gradcam.figure_png(images, labels, cam, f"Grad-CAM of trial {winner.number} on validation images ({cam.layer})")
        parts.gradcam_layer = cam.layer
    except Exception as e:
        parts.notes.append(f"Grad-CAM not drawn: {type(e).__name__}: {e}")


def load_model(uri: str, tracking_uri: str | None) -> Any:
    """The trained model behind ``models:/NAME/VERSION`` or ``runs:/ID/model``, on the CPU in eval mode."""
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    source = uri
    if uri.startswith("models:/"):
        name, version = uri[len("models:/") :].split("/", 1)
        source = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_model_version_download_uri(name, version)
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"  # a progress bar per download would land in the middle of the search's output
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri)
            model = mlflow.pytorch.load_model(local, map_location="cpu")
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = previous
    return model.cpu().eval()


def top_rows(data: SearchData, n: int = TOP) -> list[TopRow]:
    """The best ``n`` complete trials by the primary objective, with the plugin choices each made."""
    done = [t for t in data.complete if data.value(t) is not None]
    done.sort(key=lambda t: (data.value(t), -t.number), reverse=data.primary_maximize)
    rows = []
    for rank, t in enumerate(done[:n], 1):
        choices = [describe_choice(d, t.params[d.name]) for d in data.dims if is_on(d, t.params)]
        values = dict(zip(data.objectives, t.values))
        rows.append(TopRow(rank, t.number, values, t.metrics, data.test_accuracy.get(t.number), choices, t.spec or ""))
    return rows
