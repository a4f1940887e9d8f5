"""Existing torchvision models as the base of a space (plugin ``tvbase``): edits, weights, a real search."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from searchcore_plugins import torchvision_base as tv
from searchcore_plugins.torchvision_base.edits import Gate
from torch import nn

import searchcore
from searchcore.arch.spec import decode, encode
from searchcore.authoring.testing import PluginConformance
from searchcore.engine.config import SpaceConfig, load_space, resolve
from searchcore.errors import SpecError, UsageError
from searchcore.plugins.building import build  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host
from searchcore.space import ParamsTrial

EDITS = [
    {"type": "tvbase.kernel", "at": "layer1.0.conv1", "k": 5},
    {"type": "tvbase.se", "after": "layer2", "reduction": 8},
    {"type": "tvbase.cbam", "after": "layer3", "reduction": 8},
    {"type": "tvbase.residual", "first": "layer1", "last": "layer1"},
    {"type": "tvbase.residual", "first": "layer2", "last": "layer3"},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def host():
    return get_host()


def resnet_spec(input_shape: list[int], **options) -> dict:
    return tv.torchvision_backbone(input_shape, 10, {"model": "resnet18", **options})


def test_edits_start_as_the_identity_and_round_trip(host):
    """Kernel change, SE, CBAM and residual links (via torch.fx) leave a network's function unchanged until it trains."""
    spec = resnet_spec([3, 32, 32])
    edited = copy.deepcopy(spec)
    edited["stem"][0]["edits"] = EDITS
    assert decode(encode(edited)) == edited
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain = build(spec, host.blocks(), seed=0).eval()
    model = build(edited, host.blocks(), seed=0).eval()
    net = model.stem[0].net
    assert isinstance(net, torch.fx.GraphModule)
    assert net.get_submodule("root.layer1.0.conv1").kernel_size == (5, 5)
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"Gate", "GateCBAM", "ResidualAdd"} <= kinds
    torch.testing.assert_close(model(x), plain(x), rtol=0, atol=1e-5)


def test_a_rewrite_that_does_not_fit_fails_with_its_reason(host):
    spec = resnet_spec([3, 32, 32])
    spec["stem"][0]["edits"] = [{"type": "tvbase.se", "after": "layer9", "reduction": 8}]
    with pytest.raises(SpecError, match="'layer9' is not a module the network runs; units: conv1, .*layer4"):
        build(spec, host.blocks())
    spec["stem"][0]["edits"] = [{"type": "tvbase.kernel", "at": "layer1.0.conv1", "k": 4}]
    with pytest.raises(SpecError, match="k must be odd"):
        build(spec, host.blocks())


def test_weights_from_a_local_file_on_grey_input(host, tmp_path, monkeypatch):
    """A state-dict file is loaded (never a download); RGB filters are summed for one input channel."""
    import torchvision

    torch.manual_seed(3)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    spec = resnet_spec([1, 16, 16], weights=str(path))
    model = build(spec, host.blocks(), seed=0)
    root = model.stem[0].net.root
    assert torch.equal(root.get_submodule("layer3.1.conv2").weight, source.layer3[1].conv2.weight)
    assert torch.allclose(root.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert not hasattr(root, "fc"), "the ImageNet classifier is replaced by the spec's head"
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(UsageError, match="not in the local cache .* never downloads"):
        resnet_spec([3, 32, 32], weights="IMAGENET1K_V1")


def test_mobilenet_parts_and_appended_stage(host):
    spec = tv.torchvision_backbone([1, 8, 8], 10, {"model": "mobilenet_v3_small", "append": [32]})
    assert spec["stem"][0]["parts"][:2] == ["features.0", "features.1"]
    assert spec["stages"][0]["body"][0]["out"] == 32
    assert build(spec, host.blocks())(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(UsageError, match="not supported as a base"):
        tv.torchvision_backbone([3, 32, 32], 10, {"model": "vit_b_16"})


def test_default_space_is_unchanged(host):
    """The new built-in plugins add nothing to the default digits space."""
    cfg = load_space(None)
    space = resolve(cfg, host, [1, 8, 8], 10)
    assert len(space.dimensions) == 33
    assert not [d.name for d in space.dimensions if d.plugin in ("tvbase", "transfer", "distill", "prune")]


def test_resnet18_space_file_declares_the_edits(host):
    cfg = load_space(Path(searchcore.__file__).parents[1] / "spaces" / "resnet18-cifar.yaml")
    space = resolve(cfg, host, cfg.input, cfg.classes)
    names = {d.name for d in space.dimensions}
    assert {"tvbase.layer2.attention", "tvbase.layer3.kernel", "tvbase.layer4.residual"} <= names
    assert not any(n.startswith("transfer.") for n in names), "random init: nothing worth freezing"


def test_the_runner_fails_only_that_trial(host, tmp_path):
    """Through the real trial runner: the failure is recorded with the edit's reason, nothing is raised."""
    from searchcore.engine.runner import FAILED, TrialRunner
    from searchcore.train.data import load_digits

    cfg = SpaceConfig(source="<test>", text="", dataset=None, backbone="torchvision", backbone_options={"model": "resnet18"},
                      plugins={"tvbase": {"attention": ["none"], "kernels": [4], "residual": False, "stages": ["layer1"]}}, input=[1, 8, 8], classes=10)
    space = resolve(cfg, host, [1, 8, 8], 10)
    runner = TrialRunner(cfg, host, space, load_digits(None, None, False, 0, 0.2, 0.2))
    out = runner.run(ParamsTrial({"tvbase.layer1.kernel": 4}), 0, lambda e, m: None)
    assert out.state == FAILED, out
    assert "tvbase.kernel(at=layer1.0.conv1, k=4): k must be odd" in out.reason


def _image_folder(root: Path) -> Path:
    """Two classes of small coloured-noise PNGs: 32x32 RGB after the loader's resize."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(160, 20, 20), (20, 20, 160)]):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 80, (24, 24, 3)) + np.array(colour)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_resnet18_gets_se_and_a_kernel_change_and_trains_in_a_search(tmp_path):
    """torchvision resnet18, no pretrained weights, 32x32 inputs: SE inserted and one kernel changed by the plugin, one epoch inside a search."""
    images = _image_folder(tmp_path / "images")
    space = tmp_path / "space.yaml"
    space.write_text(f"""
name: rn18
dataset: {{name: "imagefolder:{images}", val_fraction: 0.25, test_fraction: 0.25}}
backbone: {{name: torchvision, options: {{model: resnet18}}}}
plugins:
  tvbase: {{attention: [se], reductions: [8], kernels: [5], residual: false, stages: [layer2]}}
budget: {{trials: 1, epochs: 1}}
search: {{sampler: random, pruner: none}}
train: {{batch_size: 5}}
""")
    result = searchcore.search(space, storage=f"sqlite:///{tmp_path}/s.db", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                               register=False, baseline=False, progress=False, threads=1)
    assert result.counts == {"COMPLETE": 1}
    best = result.best[0]
    block = best.spec["stem"][0]
    assert block["weights"] is None and best.spec["input"] == [3, 32, 32]
    assert {"type": "tvbase.se", "after": "layer2", "reduction": 8} in block["edits"]
    assert {"type": "tvbase.kernel", "at": "layer2.0.conv1", "k": 5} in block["edits"]
    model = build(best.spec)
    assert model.stem[0].net.get_submodule("root.layer2.0.conv1").kernel_size == (5, 5)
    assert any(isinstance(m, Gate) for m in model.modules())
    assert 0.0 <= best.metrics["val_accuracy"] <= 1.0 and best.metrics["params"] > 11e6
    assert isinstance(model, nn.Module)


class TestTvbaseConformance(PluginConformance):
    """The conformance kit every improvement plugin passes, on a torchvision resnet18 base (two stages, few cases)."""

    plugin_module = "searchcore_plugins.torchvision_base"
    plugin_name = "tvbase"
    backbone = "torchvision"
    backbone_options = {"model": "resnet18"}
    options = {"stages": ["layer2", "layer4"]}
    samples = 2
    max_cases = 10
