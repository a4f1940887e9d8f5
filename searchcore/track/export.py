"""``searchcore export``: a trained model as TorchScript or ONNX, checked against PyTorch before it ships.

Why check: an exporter can trace a shape into a constant or drop an operator's detail, and
the file would still load. So every export is read back and run on fresh inputs (a batch size
other than the one traced, so a batch size baked into the graph is caught) and its outputs must
match PyTorch's within ``tolerance`` (1e-4 by default); ONNX files run in onnxruntime. A
registered source (``models:/NAME/VERSION``) gets the file logged as an artifact of the run that
registered it, and the model version tagged with where it is and how close it came.

ONNX: the torch.export-based exporter needs ``onnxscript``; without it (or if it fails) the
TorchScript-based exporter is used, which needs nothing beyond ``onnx``. Install the optional
group ``searchcore[export]`` for onnx, onnxruntime and onnxscript.
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from searchcore.errors import SearchcoreError, UsageError

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4
TAG_EXPORT = "searchcore.export"


class ExportMismatch(SearchcoreError):
    """The exported file does not compute what the PyTorch model computes (beyond the tolerance)."""


@dataclass
class Exported:
    """One exported, verified file."""

    path: Path
    format: str
    exporter: str
    max_abs_diff: float
    checked_on: int  # inputs compared
    artifact_uri: str | None = None


def load_source(source: str, tracking_uri: str | None = None, weights: str | None = None) -> tuple[nn.Module, dict, Any]:
    """The model to export, its spec and (for ``models:/``) its registry record.

    A spec file without ``weights`` is built with its seeded initial weights: useful to check
    that an architecture exports at all, before training it.
    """
    from searchcore.arch.spec import from_json
    from searchcore.track import models

    if source.startswith("models:/"):
        if weights is not None:
            raise UsageError("--weights is for a SPEC.json source; a registered model has its own weights")
        info, model = models.load(source, tracking_uri)
        return model, info.spec, info
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{source}: no such spec file (or use models:/NAME/VERSION)")
    from searchcore.arch.build import build
    from searchcore.plugins.host import get_host

    spec = from_json(path.read_text(), str(path))
    model = build(spec, get_host().blocks())
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError:
            raise UsageError(f"--weights {weights}: no such file") from None
        except Exception as e:
            raise UsageError(f"--weights {weights}: does not fit {source}: {' '.join(str(e).split())[:300]}") from None
    return model, spec, None


def inputs(spec: dict, n: int, seed: int) -> torch.Tensor:
    """Seeded inputs of the spec's shape; the data is normalised, so a standard normal is in range."""
    return torch.randn(n, *spec["input"], generator=torch.Generator().manual_seed(seed))


def _torchscript(model: nn.Module, example: torch.Tensor, out: Path) -> tuple[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, but TorchScript is what was asked for
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(out))
        loaded = torch.jit.load(str(out), map_location="cpu")
    return "torch.jit.trace", loaded


def _onnx(model: nn.Module, example: torch.Tensor, out: Path) -> str:
    for mod in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(mod) is None:
            raise UsageError(f"ONNX export needs {mod}: pip install 'searchcore[export]'")
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, (example,), str(out), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: batch},), external_data=False)
            return "torch.onnx (dynamo)"
        except Exception:  # fall back to the exporter that needs no onnxscript; the check below judges the result
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that it is legacy
        torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    return "torch.onnx (torchscript)"


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def export(model: nn.Module, spec: dict, fmt: str, out: str | Path, tolerance: float = TOLERANCE, seed: int = 0) -> Exported:
    """Write ``model`` to ``out`` in ``fmt``, read it back and compare its outputs with PyTorch's."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    model = model.cpu().eval()
    example = inputs(spec, 2, seed)
    check = inputs(spec, 3, seed + 1)  # another batch size: a batch size traced into the graph shows up here
    with torch.no_grad():
        expected = model(check)
        if fmt == "torchscript":
            exporter, loaded = _torchscript(model, example, out)
            got = loaded(check)
        else:
            exporter = _onnx(model, example, out)
            got = _run_onnx(out, check)
    if got.shape != expected.shape:
        raise ExportMismatch(f"{out}: the {fmt} file gives shape {list(got.shape)}, PyTorch {list(expected.shape)}")
    diff = float((got.float() - expected.float()).abs().max())
    if not diff <= tolerance:
        raise ExportMismatch(f"{out}: the {fmt} file's outputs differ from PyTorch's by up to {diff:.3g} (tolerance {tolerance:g})")
    return Exported(out, fmt, exporter, diff, len(check))


def log_next_to(info: Any, result: Exported) -> str | None:
    """Log the file as an artifact of the run that registered the model, and tag the model version."""
    from mlflow.tracking import MlflowClient

    if info is None or not info.run_id:
        return None
    client = MlflowClient(tracking_uri=info.tracking_uri, registry_uri=info.tracking_uri)
    folder = f"export/{result.format}"
    client.log_artifact(info.run_id, str(result.path), folder)
    uri = f"{client.get_run(info.run_id).info.artifact_uri}/{folder}/{result.path.name}"
    client.set_model_version_tag(info.name, info.version, f"{TAG_EXPORT}.{result.format}", uri)
    client.set_model_version_tag(info.name, info.version, f"{TAG_EXPORT}.{result.format}.max_abs_diff", f"{result.max_abs_diff:.3g}")
    return uri


def add_command(sub: Any, types: dict[str, Any]) -> None:
    """The ``export`` subcommand; kept here so commands.py only has to call it."""
    sp = sub.add_parser("export", help="export a registered model or a spec to TorchScript or ONNX, checked against PyTorch")
    sp.add_argument("source", help="models:/NAME/VERSION or SPEC.json")
    sp.add_argument("--format", required=True, choices=FORMATS)
    sp.add_argument("--out", required=True, help="the file to write")
    sp.add_argument("--weights", help="state-dict file for a SPEC.json source (default: its seeded initial weights)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI of the registry (default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    sp.add_argument("--tolerance", type=types["positive_float"], default=TOLERANCE, help="largest absolute output difference allowed")
    sp.add_argument("--no-log", action="store_true", help="do not log the file next to the registered model")
    sp.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    model, spec, info = load_source(args.source, args.tracking_uri, args.weights)
    result = export(model, spec, args.format, args.out, tolerance=args.tolerance)
    print(f"exported {args.source} to {result.path} ({result.format}, {result.exporter})")
    print(f"checked: outputs on {result.checked_on} inputs within {result.max_abs_diff:.3g} of PyTorch (tolerance {args.tolerance:g})")
    if info is not None and not args.no_log:
        result.artifact_uri = log_next_to(info, result)
        if result.artifact_uri:
            print(f"logged next to {args.source}: {result.artifact_uri}")
    return 0


__all__ = ["export", "load_source", "log_next_to", "Exported", "ExportMismatch", "FORMATS", "TOLERANCE"]
