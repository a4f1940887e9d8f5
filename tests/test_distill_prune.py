"""Distillation from a registered teacher and pruning, trained for real on digits, recorded in a real MLflow store."""

from __future__ import annotations

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from searchcore_plugins.distill import distillation_loss
from torch import nn

from searchcore.authoring.testing import PluginConformance
from searchcore.builtin.core import seed_cnn
from searchcore.engine.config import SpaceConfig
from searchcore.engine.runner import prepare
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host
from searchcore.space import ParamsTrial
from searchcore.track.tracking import Tracker
from searchcore.train import data
from searchcore.train.fit import fit
from searchcore.train.outcome import COMPLETE
from searchcore.train.trainer import TrainConfig, evaluate, train_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits():
    return data.load_digits(None, None, False, 0, 0.2, 0.2)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, splits):
    """The seed CNN trained three epochs and registered: (uri, tracking URI, model)."""
    tracking = f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"
    spec = seed_cnn([1, 8, 8], 10, {})
    model = build(spec, seed=0)
    train_model(model, splits, TrainConfig(epochs=3, threads=1))
    tracker = Tracker(tracking, experiment="teacher")
    parent = tracker.start_search("teacher", {}, "", {})
    uri = tracker.log_model(model, spec, "teacher", evaluate(model, splits.test_x, splits.test_y), 0, parent)
    return uri, tracking, model.eval()


def runner_for(plugins: dict, channels: list[int] | None = None, epochs: int = 2):
    cfg = SpaceConfig(source="<test>", text="", backbone_options={"channels": channels} if channels else {}, plugins=plugins, epochs=epochs)
    return prepare(cfg, get_host(), 1)


def test_the_distillation_loss_is_cross_entropy_plus_the_teachers_soft_targets():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    same = distillation_loss(teacher, temperature=4.0, alpha=0.7)(teacher(x), y, x)
    assert torch.allclose(same, 0.3 * nn.functional.cross_entropy(teacher(x), y)), "a student equal to its teacher pays no KL term"
    other = distillation_loss(teacher, temperature=4.0, alpha=1.0)(torch.zeros(5, 3), y, x)
    assert other > 0


def test_a_distilled_student_is_recorded_next_to_its_teacher(teacher, splits):
    uri, tracking, model = teacher
    runner = runner_for({"distill": {"teacher": uri, "tracking_uri": tracking, "alphas": [0.0, 0.7], "temperatures": [4.0]}}, channels=[8, 16, 16])
    assert [d.name for d in runner.space.dimensions] == ["distill.alpha", "distill.temperature"]
    out = runner.run(ParamsTrial({"distill.alpha": 0.7, "distill.temperature": 4.0}), 0, lambda e, m: None)
    assert out.state == COMPLETE, out.reason
    assert out.spec["head"][-1] == {"type": "distill.teacher", "uri": uri, "tracking": tracking, "temperature": 4.0, "alpha": 0.7}
    m = out.metrics
    teacher_params = sum(p.numel() for p in model.parameters())
    assert m["teacher_params"] == teacher_params and m["student_params"] == m["params"] < teacher_params / 10
    assert m["teacher_val_accuracy"] == pytest.approx(evaluate(model, splits.val_x, splits.val_y))
    assert 0.15 < m["val_accuracy"] <= 1.0 and m["params_ratio"] == pytest.approx(m["params"] / teacher_params)
    tracker = Tracker(tracking, experiment="distill-trials")
    run_id = tracker.write_trial(out, "distill-trials", tracker.start_search("distill-trials", {}, "", {}), {})
    recorded = MlflowClient(tracking_uri=tracking).get_run(run_id).data.metrics
    assert {"val_accuracy", "params", "teacher_val_accuracy", "teacher_params"} <= set(recorded)
    assert recorded["teacher_params"] == teacher_params and recorded["params"] == m["params"]
    plain = runner.run(ParamsTrial({"distill.alpha": 0.0}), 1, lambda e, m: None)
    assert plain.state == COMPLETE and "teacher_params" not in plain.metrics, "alpha 0: no teacher, no record of one"


def test_magnitude_pruning_reaches_the_sparsity_and_the_model_still_trains_and_predicts(splits):
    runner = runner_for({"prune": {"enabled": True, "amounts": [0.0, 0.6], "methods": ["magnitude"], "finetune": [1]}})
    params = runner.space.rebuild_params({"prune.amount": 0.6, "prune.method": "magnitude", "prune.finetune": 1})
    spec = runner.space.spec(params)
    fitted = fit(spec, runner.host, splits, runner.train_config(), runner.space.options)
    weights = [m.weight for m in fitted.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.6 and fitted.metrics["sparsity"] == pytest.approx(zeros)
    m = fitted.metrics
    assert m["params_after"] < 0.5 * m["params_before"]
    assert m["latency_before_ms"] > 0 and m["latency_after_ms"] > 0 and "val_accuracy_before_prune" in m
    assert [row["epoch"] for row in fitted.history] == [3], "one fine-tuning epoch after the two of the run"
    assert fitted.result.val_accuracy > 0.5, "the pruned, fine-tuned model still predicts"
    again = train_model(fitted.model, splits, TrainConfig(epochs=1, threads=1))
    assert math.isfinite(again.history[0]["train_loss"]) and again.val_accuracy > 0.5
    assert fitted.model(splits.test_x[:4]).shape == (4, 10)


def test_structured_pruning_zeroes_whole_channels_and_is_recorded(splits):
    runner = runner_for({"prune": {"enabled": True, "amounts": [0.5], "methods": ["structured"], "finetune": [0]}}, epochs=1)
    out = runner.run(ParamsTrial({"prune.amount": 0.5, "prune.method": "structured", "prune.finetune": 0}), 0, lambda e, m: None)
    assert out.state == COMPLETE, out.reason
    assert out.metrics["sparsity"] == pytest.approx(0.5) and out.metrics["params_after"] < out.metrics["params_before"]
    fitted = fit(out.spec, runner.host, splits, runner.train_config(), runner.space.options)
    for conv in [m for m in fitted.model.modules() if isinstance(m, nn.Conv2d)]:
        dead = (conv.weight.flatten(1).abs().sum(dim=1) == 0) & (conv.bias == 0)
        assert int(dead.sum()) == conv.out_channels // 2
    assert fitted.result.val_accuracy == pytest.approx(evaluate(fitted.model, splits.val_x, splits.val_y)), "the score is the pruned model's"


class TestPruneConformance(PluginConformance):
    """The conformance kit on the prune plugin, switched on."""

    plugin_module = "searchcore_plugins.prune"
    options = {"enabled": True}
    samples = 3
    max_cases = 12
