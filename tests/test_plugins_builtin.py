"""The built-in improvement plugins: the seed CNN with every plugin off, what each plugin does to
the model it claims to change, and that transforms are pure and commute."""

from __future__ import annotations

import copy
import inspect
import math
import random

import optuna
import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from searchcore.engine.config import load_space, resolve
from searchcore.plugins.building import build, param_count  # build(spec) with the loaded plugins' blocks
from searchcore.plugins.host import get_host

SEED_LAYERS = [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 3 + [nn.Flatten, nn.Linear]
# the improvement plugins this file checks one by one; the purity and commutation checks take every loaded one
IMPROVEMENTS = ["attention", "dense", "kernel", "normact", "pooling", "residual", "widthdepth"]


@pytest.fixture(scope="module")
def space():
    return resolve(load_space(None), get_host(), [1, 8, 8], 10)


def make(space, **changes) -> nn.Module:
    """Build the seed CNN with some dimensions changed (names with '__' for '.'); eval mode, seed 0."""
    params = space.off_params()
    params.update({k.replace("__", "."): v for k, v in changes.items()})
    model = build(space.spec(space.rebuild_params(params)))
    return model.eval()


def run_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The leaf modules, other than Identity, in the order a forward pass calls them."""
    order: list[nn.Module] = []
    leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Identity)]
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    assert sorted(map(id, order)) == sorted(map(id, leaves)), "every leaf module runs exactly once"
    return order


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def seed_params(input_shape: list[int], classes: int, channels=(32, 64, 128), k: int = 3) -> int:
    """Parameters of the seed CNN, by hand: three k x k convs with bias, ceil-mode 2x2 pools, one linear."""
    c, h, w = input_shape
    total = 0
    for out in channels:
        total += c * out * k * k + out
        c, h, w = out, math.ceil(h / 2), math.ceil(w / 2)
    return total + c * h * w * classes + classes


# --- the seed CNN -----------------------------------------------------------------------------


def test_every_plugin_off_gives_the_seed_spec(space):
    assert space.spec(space.off_params()) == space.base
    assert set(IMPROVEMENTS) <= set(space.plugins)
    assert {d.plugin for d in space.dimensions} == set(IMPROVEMENTS)


@pytest.mark.parametrize(("shape", "classes"), [([1, 8, 8], 10), ([3, 32, 32], 10), ([3, 28, 20], 7)])
def test_seed_cnn_is_exactly_the_seed(shape, classes):
    space = resolve(load_space(None), get_host(), shape, classes)
    model = build(space.spec(space.off_params())).eval()
    order = run_order(model, torch.zeros(2, *shape))
    assert [type(m) for m in order] == SEED_LAYERS
    c1, c2, c3 = order[0], order[3], order[6]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in (c1, c2, c3)] == [
        (shape[0], 32, (3, 3), (1, 1), (1, 1)),
        (32, 64, (3, 3), (1, 1), (1, 1)),
        (64, 128, (3, 3), (1, 1), (1, 1)),
    ]
    assert all(c.bias is not None for c in (c1, c2, c3))
    for pool in order[2:9:3]:
        assert (pool.kernel_size, pool.stride) == (2, 2)
    h, w = shape[1:]
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert (order[-1].in_features, order[-1].out_features) == (128 * h * w, classes)
    assert all(st.shortcut is None for st in model.stages)
    assert not any(isinstance(m, (nn.BatchNorm2d, SqueezeExcitation)) for m in model.modules())
    assert param_count(model) == seed_params(shape, classes)
    assert model(torch.zeros(2, *shape)).shape == (2, classes)


def test_seed_cnn_parameter_counts_are_pinned():
    assert seed_params([1, 8, 8], 10) == 93_962
    assert seed_params([3, 32, 32], 10) == 896 + 18_496 + 73_856 + (128 * 4 * 4 * 10 + 10) == 113_738
    space = resolve(load_space(None), get_host(), [1, 8, 8], 10)
    assert param_count(build(space.spec(space.off_params()))) == 93_962


# --- one plugin at a time -----------------------------------------------------------------------


def test_kernel_sets_the_conv_kernel_per_stage(space):
    model = make(space, kernel__s1=7, kernel__s2=5)
    shapes = [tuple(c.weight.shape) for c in convs(model)]
    assert shapes == [(32, 1, 7, 7), (64, 32, 5, 5), (128, 64, 3, 3)]
    assert [c.padding for c in convs(model)] == [(3, 3), (2, 2), (1, 1)]
    x = torch.randn(2, 1, 8, 8)
    assert model.stages[0].body(x).shape == (2, 32, 8, 8)  # 'same' padding keeps the map size
    assert param_count(model) == 93_962 + 32 * 1 * (49 - 9) + 64 * 32 * (25 - 9)


def test_residual_adds_the_shortcut(space):
    model = make(space, residual__s1=True, residual__s3=True)
    s1, s2, s3 = model.stages
    assert s2.shortcut is None
    for stage, cin, cout in ((s1, 1, 32), (s3, 64, 128)):
        sc = stage.shortcut
        assert isinstance(sc, nn.Conv2d) and sc.kernel_size == (1, 1) and sc.bias is None
        assert (sc.in_channels, sc.out_channels) == (cin, cout)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        got = s1.residual(x)
        assert torch.allclose(got, s1.attention(s1.body(x)) + s1.shortcut(x), atol=1e-6)
        assert not torch.allclose(got, s1.attention(s1.body(x)), atol=1e-3)
        assert torch.allclose(s1(x), s1.down(got))
    assert param_count(model) == 93_962 + 1 * 32 + 64 * 128


def test_residual_is_identity_when_channels_agree():
    space = resolve(load_space(None), get_host(), [32, 8, 8], 10)
    model = make(space, residual__s1=True)
    stage = model.stages[0]
    assert isinstance(stage.shortcut, nn.Identity)
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        assert torch.allclose(stage.residual(x), stage.body(x) + x, atol=1e-6)


def test_squeeze_excitation_gates_channels(space):
    model = make(space, attention__s2="se", attention__s2__reduction=8)
    se = model.stages[1].attention[0]
    assert isinstance(se, SqueezeExcitation)
    assert (se.fc1.in_channels, se.fc1.out_channels, se.fc2.out_channels) == (64, 8, 64)
    seen = {}
    se.scale_activation.register_forward_hook(lambda m, i, o: seen.update(gate=o))
    se.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    with torch.no_grad():
        model(torch.randn(3, 1, 8, 8))
    gate, x, y = seen["gate"], seen["x"], seen["y"]
    assert gate.shape == (3, 64, 1, 1)
    assert bool(((gate > 0) & (gate < 1)).all())
    assert torch.allclose(y, x * gate)
    assert torch.allclose(gate, torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3), keepdim=True))))), atol=1e-6)
    assert not torch.allclose(y, x)


def test_cbam_keeps_the_shape_and_only_scales_down(space):
    model = make(space, attention__s3="cbam", attention__s3__reduction=4)
    cbam = model.stages[2].attention[0]
    assert type(cbam).__name__ == "CBAM"
    assert (cbam.mlp[0].in_channels, cbam.mlp[0].out_channels) == (128, 32)
    x = torch.randn(2, 128, 2, 2)
    with torch.no_grad():
        y = cbam(x)
    assert y.shape == x.shape
    assert bool((y.abs() <= x.abs()).all()) and not torch.allclose(y, x)
    assert param_count(model) == 93_962 + (128 * 32 + 32) + (32 * 128 + 128) + (2 * 49 + 1)


def test_self_attention_keeps_the_feature_map(space):
    model = make(space, attention__s1="mhsa", attention__s1__heads=4)
    att = model.stages[0].attention[0]
    assert type(att).__name__ == "SelfAttention2d"
    assert att.attn.num_heads == 4 and att.attn.embed_dim == 32
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        y = att(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_dense_stage_concatenates_channels(space):
    model = make(space, dense__s2=True, dense__s2__growth=16, dense__s2__layers=3)
    block = model.stages[1].body[0]
    assert type(block).__name__ == "DenseBlock"
    layer_convs = [convs(layer)[0] for layer in block.layers]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in layer_convs] == [(32, 16, (3, 3)), (48, 16, (3, 3)), (64, 16, (3, 3))]
    transition = convs(block.transition)[0]
    assert (transition.in_channels, transition.out_channels, transition.kernel_size) == (32 + 3 * 16, 64, (1, 1))
    seen = {}
    transition.register_forward_hook(lambda m, i, o: seen.update(t=i[0]))
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        y = block(x)
    assert y.shape == (2, 64, 4, 4)
    assert seen["t"].shape == (2, 80, 4, 4)
    assert torch.equal(seen["t"][:, :32], x)  # the block's input is carried through
    assert [type(m) for m in model.stages[0].body.modules() if isinstance(m, nn.Conv2d)] == [nn.Conv2d]


@pytest.mark.parametrize(
    ("choices", "types"),
    [
        (("max", "max", "max"), (nn.MaxPool2d, nn.MaxPool2d, nn.MaxPool2d)),
        (("avg", "conv", "max"), (nn.AvgPool2d, nn.Conv2d, nn.MaxPool2d)),
        (("conv", "avg", "avg"), (nn.Conv2d, nn.AvgPool2d, nn.AvgPool2d)),
    ],
)
def test_pooling_downsamples_as_chosen(space, choices, types):
    model = make(space, **{f"pooling__s{i + 1}": c for i, c in enumerate(choices)})
    x = torch.randn(2, 1, 8, 8)
    for stage, kind, out in zip(model.stages, types, (32, 64, 128), strict=True):
        down = stage.down
        if kind is nn.Conv2d:
            conv = convs(down)
            assert len(conv) == 1
            assert (conv[0].stride, conv[0].kernel_size, conv[0].in_channels, conv[0].out_channels) == ((2, 2), (3, 3), out, out)
        else:
            assert type(down) is kind and (down.kernel_size, down.stride) == (2, 2)
        with torch.no_grad():
            y = stage(x)
        assert y.shape == (2, out, math.ceil(x.shape[2] / 2), math.ceil(x.shape[3] / 2))
        x = y


@pytest.mark.parametrize(("width", "channels"), [(0.5, [16, 32, 64]), (0.75, [24, 48, 96]), (1.5, [48, 96, 192]), (2.0, [64, 128, 256])])
def test_width_multiplier_scales_channels(space, width, channels):
    model = make(space, widthdepth__width=width)
    assert [c.out_channels for c in convs(model)] == channels
    assert model.head[-1].in_features == channels[-1]
    assert param_count(model) == seed_params([1, 8, 8], 10, channels)


def test_depth_replicates_conv_blocks(space):
    model = make(space, widthdepth__s2__depth=3, widthdepth__s3__depth=2)
    per_stage = [[(c.in_channels, c.out_channels) for c in convs(st.body)] for st in model.stages]
    assert per_stage == [[(1, 32)], [(32, 64), (64, 64), (64, 64)], [(64, 128), (128, 128)]]
    assert param_count(model) == 93_962 + 2 * (64 * 64 * 9 + 64) + (128 * 128 * 9 + 128)


@pytest.mark.parametrize(("bn", "act", "act_type"), [(True, "gelu", nn.GELU), (False, "silu", nn.SiLU), (True, "relu", nn.ReLU)])
def test_normact_sets_batchnorm_and_activation(space, bn, act, act_type):
    model = make(space, normact__bn=bn, normact__act=act, pooling__s3="conv")
    order = run_order(model, torch.randn(2, 1, 8, 8))
    body = [type(m) for m in order[:-2]]  # without flatten, linear
    per_conv = [nn.Conv2d, nn.BatchNorm2d, act_type] if bn else [nn.Conv2d, act_type]
    # three stages, the last one downsampled by a conv that follows the same norm and activation
    assert body == per_conv + [nn.MaxPool2d] + per_conv + [nn.MaxPool2d] + per_conv + per_conv
    for c in convs(model):
        assert (c.bias is None) == bn
    others = {nn.ReLU, nn.GELU, nn.SiLU} - {act_type}
    assert not any(type(m) in others for m in model.modules())


# --- transforms: pure and commuting ---------------------------------------------------------


def _call_transform(module, spec: dict, params: dict, options: dict) -> dict:
    fn = module.searchcore_transform
    args = {"spec": spec, "params": params, "options": options}
    result = fn(**{k: v for k, v in args.items() if k in inspect.signature(fn).parameters})
    return spec if result is None else result


@pytest.fixture(scope="module")
def random_params(space) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    return [space.sample(study.ask()) for _ in range(40)]


def test_each_plugin_leaves_the_seed_alone_when_off(space):
    host = get_host()
    off = space.off_params()
    for name in space.plugins:
        own = {k: v for k, v in off.items() if k.startswith(f"{name}.")}
        assert own or name not in IMPROVEMENTS, name
        assert _call_transform(host.infos[name].module, copy.deepcopy(space.base), own, space.options[name]) == space.base, name


def test_transforms_are_pure_and_commute(space, random_params):
    host = get_host()
    modules = {name: host.infos[name].module for name in space.plugins}
    rng = random.Random(5)
    for params in random_params:
        expected = space.spec(params)
        for _ in range(4):
            order = list(modules)
            rng.shuffle(order)
            spec = space.base
            for name in order:
                own = {k: v for k, v in params.items() if k.startswith(f"{name}.")}
                before = copy.deepcopy(spec)
                new = _call_transform(modules[name], spec, own, space.options[name])
                assert spec == before, f"{name} mutated its input spec"
                spec = new
            assert spec == expected, f"order {order} gave another spec for {params}"
    assert space.base == space.spec(space.off_params())


def test_transforms_share_no_structure_with_their_input(space, random_params):
    """A transform returns a fresh spec: editing its result cannot reach back into the input."""
    host = get_host()
    for params in random_params[:10]:
        for name in space.plugins:
            own = {k: v for k, v in params.items() if k.startswith(f"{name}.")}
            base = copy.deepcopy(space.base)
            snapshot = copy.deepcopy(base)
            out = _call_transform(host.infos[name].module, base, own, space.options[name])
            if out is base:  # 'unchanged' (None): nothing new to share
                continue
            for st in out["stages"]:
                for b in st["body"]:
                    b["poison"] = 1
                st["body"].append({"type": "poison"})
            assert base == snapshot, name
