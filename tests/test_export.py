"""Export to TorchScript and ONNX (checked with onnxruntime), the ``export`` command, and ``train --finetune``."""

from __future__ import annotations

import copy
import json

import onnxruntime as ort
import pytest
import torch
from mlflow.tracking import MlflowClient
from searchcore_plugins import torchvision_base as tv

from searchcore.builtin.core import seed_cnn
from searchcore.cli import main
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks
from searchcore.track.export import TOLERANCE, export
from searchcore.track.tracking import TAG_SPEC, Tracker
from searchcore.train import data
from searchcore.train.trainer import TrainConfig, evaluate, train_model

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),  # TorchScript is the format asked for
    pytest.mark.usefixtures("one_thread"),
]




@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A small seed CNN (with batch norm and SE attention) trained one epoch and registered: (uri, tracking, model)."""
    tracking = f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"
    splits = data.load_digits(None, None, False, 0, 0.2, 0.2)
    spec = seed_cnn([1, 8, 8], 10, {"channels": [8, 16]})
    for st in spec["stages"]:
        st["body"][0]["bn"] = True
    spec["stages"][1]["attention"] = [{"type": "attention.se", "reduction": 4}]
    model = build(spec, seed=0)
    train_model(model, splits, TrainConfig(epochs=1, threads=1))
    tracker = Tracker(tracking, experiment="small")
    uri = tracker.log_model(model, spec, "small", evaluate(model, splits.test_x, splits.test_y), 0, tracker.start_search("small", {}, "", {}))
    return uri, tracking, model.eval()


def test_torchscript_and_onnx_reproduce_pytorch(registered, tmp_path):
    _, _, model = registered
    spec = model.spec
    x = torch.randn(5, *spec["input"], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x)
    ts = export(model, spec, "torchscript", tmp_path / "m.pt")
    assert ts.max_abs_diff <= TOLERANCE
    torch.testing.assert_close(torch.jit.load(str(ts.path))(x), expected, rtol=0, atol=TOLERANCE)
    onnx = export(model, spec, "onnx", tmp_path / "m.onnx")
    assert onnx.max_abs_diff <= TOLERANCE
    session = ort.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)


def test_an_fx_edited_torchvision_model_exports(tmp_path):
    """resnet18 with a changed kernel, SE and a residual link (a torch.fx GraphModule inside) exports to both formats."""
    spec = tv.torchvision_backbone([3, 16, 16], 10, {"model": "resnet18"})
    spec["stem"][0]["edits"] = [
        {"type": "tvbase.kernel", "at": "layer1.0.conv1", "k": 5},
        {"type": "tvbase.se", "after": "layer2", "reduction": 8},
        {"type": "tvbase.residual", "first": "layer3", "last": "layer3"},
    ]
    model = build(spec, seed=0).eval()
    with torch.no_grad():  # non-zero gates and link, so the export is checked on the edits' real arithmetic
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.add_(0.1)
    for fmt, name in (("torchscript", "r.pt"), ("onnx", "r.onnx")):
        assert export(model, spec, fmt, tmp_path / name).max_abs_diff <= TOLERANCE


def test_the_export_command_logs_the_file_next_to_the_registered_model(registered, tmp_path, capsys):
    uri, tracking, _ = registered
    out = tmp_path / "small.onnx"
    assert main(["export", uri, "--format", "onnx", "--out", str(out), "--tracking-uri", tracking]) == 0
    printed = capsys.readouterr().out
    assert "checked: outputs on 3 inputs within" in printed and f"logged next to {uri}" in printed
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    mv = client.get_model_version("small", "1")
    assert [a.path for a in client.list_artifacts(mv.run_id, "export/onnx")] == ["export/onnx/small.onnx"]
    assert mv.tags["searchcore.export.onnx"].endswith("export/onnx/small.onnx") and TAG_SPEC in mv.tags


def test_train_finetunes_a_registered_model_and_its_weights_export(registered, tmp_path, capsys):
    uri, tracking, model = registered
    weights, spec_file = tmp_path / "w.pt", tmp_path / "spec.json"
    assert main(["train", uri, "--finetune", "--epochs", "1", "--tracking-uri", tracking, "--save", str(weights)]) == 0
    assert "test accuracy:" in capsys.readouterr().out
    spec_file.write_text(json.dumps(model.spec))
    out = tmp_path / "small.pt"
    assert main(["export", str(spec_file), "--weights", str(weights), "--format", "torchscript", "--out", str(out)]) == 0
    retrained = build(copy.deepcopy(model.spec))
    retrained.load_state_dict(torch.load(weights))
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(torch.jit.load(str(out))(x), retrained.eval()(x), rtol=0, atol=TOLERANCE)


def test_bad_export_input_is_one_line_and_exit_2(registered, tmp_path, capsys):
    uri, tracking, _ = registered
    assert main(["export", str(tmp_path / "missing.json"), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert main(["export", uri, "--format", "onnx", "--out", str(tmp_path / "no" / "x.onnx"), "--tracking-uri", tracking]) == 2
    assert main(["train", str(tmp_path / "missing.json"), "--finetune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("searchcore: error: ") for line in err)
    with pytest.raises(SystemExit) as e:
        main(["export", uri, "--format", "tflite", "--out", "x"])
    assert e.value.code == 2
