"""Transfer from a registered model: the shipped transfer space, frozen stages, the scratch control.

The source is a real seed CNN trained on digits and registered in a real MLflow SQLite store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import searchcore
from searchcore.builtin.core import seed_cnn
from searchcore.cli import main
from searchcore.engine.config import load_space
from searchcore.engine.runner import prepare
from searchcore.errors import UsageError
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host
from searchcore.space import ParamsTrial
from searchcore.track import models
from searchcore.track.tracking import Tracker
from searchcore.train import data
from searchcore.train.fit import fit
from searchcore.train.outcome import COMPLETE
from searchcore.train.trainer import TrainConfig, evaluate, train_model

SPACE = Path(searchcore.__file__).parents[1] / "spaces" / "transfer.yaml"
PREFIX = "stem.0.net.root."  # where the source network's parameters sit inside the transfer model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A seed CNN trained for two epochs on digits, registered as models:/seed/1; returns (uri, tracking, model)."""
    tracking = f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"
    splits = data.load_digits(None, None, False, 0, 0.2, 0.2)
    spec = seed_cnn([1, 8, 8], 10, {"channels": [16, 32, 64]})
    model = build(spec, seed=0)
    train_model(model, splits, TrainConfig(epochs=2, threads=1))
    tracker = Tracker(tracking, experiment="seed")
    parent = tracker.start_search("seed", {}, "", {})
    uri = tracker.log_model(model, spec, "seed", evaluate(model, splits.test_x, splits.test_y), 0, parent)
    return uri, tracking, model.eval()


def transfer_runner(source, **backbone):
    uri, tracking, _ = source
    cfg = load_space(SPACE)
    cfg.backbone_options.update({"uri": uri, "tracking_uri": tracking, **backbone})
    cfg.epochs = 2
    return prepare(cfg, get_host(), 1)


def test_the_transfer_space_freezes_searches_and_adds_a_conv(source):
    runner = transfer_runner(source)
    dims = {d.name: d for d in runner.space.dimensions}
    names = set(dims)
    assert dims["transfer.freeze"].choices == (0, 1, 2, 3) and dims["transfer.freeze"].off == 0
    assert {"kernel.s1", "attention.s1", "residual.s1"} <= names, "the other plugins search the appended conv stage"
    block = runner.space.base["stem"][0]
    assert block["type"] == "tvbase.mlflow" and block["parts"] == ["stages.0", "stages.1", "stages.2"]
    assert runner.space.base["stages"][0]["body"][0]["out"] == 128


def test_frozen_parameters_are_bitwise_unchanged_and_only_the_others_moved(source):
    _, _, trained = source
    runner = transfer_runner(source)
    params = {**runner.space.off_params(), "transfer.freeze": 2}
    spec = runner.space.spec(params)
    initial = {k: v.clone() for k, v in build(spec, runner.host.blocks(), seed=runner.cfg.seed).state_dict().items()}
    for k, v in trained.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(initial[PREFIX + k], v), f"{k} did not start from the source's weights"
    fitted = fit(spec, runner.host, runner.splits, runner.train_config(), runner.space.options)
    after = fitted.model.state_dict()
    frozen = [k for k in after if k.startswith((PREFIX + "stages.0.", PREFIX + "stages.1."))]
    trainable = [n for n, p in fitted.model.named_parameters() if p.requires_grad]
    assert frozen and trainable
    assert all(torch.equal(after[k], initial[k]) for k in frozen), "a frozen parameter moved"
    assert all(not torch.equal(after[k], initial[k]) for k in trainable), "a trainable parameter did not move"
    assert {n for n, p in fitted.model.named_parameters() if not p.requires_grad} == set(frozen)
    assert fitted.metrics["frozen_params"] == sum(after[k].numel() for k in frozen)
    assert fitted.result.val_accuracy > 0.5


def test_a_transfer_trial_is_recorded_and_the_scratch_control_loads_nothing(source):
    _, _, trained = source
    runner = transfer_runner(source)
    out = runner.run(ParamsTrial({**runner.space.off_params(), "transfer.freeze": 3}), 0, lambda e, m: None)
    assert out.state == COMPLETE, out.reason
    assert out.metrics["trainable_params"] < out.metrics["params"] and out.spec["stem"][0]["freeze"] == 3
    scratch = transfer_runner(source, scratch=True)
    assert "transfer.freeze" not in [d.name for d in scratch.space.dimensions], "nothing learned, nothing to freeze"
    model = build(scratch.space.base, scratch.host.blocks(), seed=0)
    first = model.state_dict()[PREFIX + "stages.0.body.0.0.weight"]
    assert not torch.equal(first, trained.state_dict()["stages.0.body.0.0.weight"])


def test_bad_sources_are_one_line_usage_errors(source, tmp_path, capsys):
    uri, tracking, _ = source
    with pytest.raises(UsageError, match="expected a registered model as models:/NAME/VERSION"):
        models.parse_uri("runs:/abc/model")
    with pytest.raises(UsageError, match="models:/seed/9: no such registered model version"):
        models.lookup("models:/seed/9", tracking)
    space = tmp_path / "bad.yaml"
    space.write_text(f"dataset: digits\nbackbone: {{name: mlflow, options: {{uri: 'models:/nope/1', tracking_uri: '{tracking}'}}}}\n")
    assert main(["space", "show", str(space)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models:/nope/1: no such registered model version" in err[0]
