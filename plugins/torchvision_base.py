"""Existing models as the base of a space: a torchvision CNN by name, or a model an earlier search registered.

Backbones (``backbone: {name: ..., options: {...}}`` in a space file):

- ``torchvision``: ``model`` (``resnet18``, ``mobilenet_v3_small`` ...), ``weights`` (null for
  random init, a state-dict file, or a torchvision weights name such as ``IMAGENET1K_V1`` that is
  already in the local torch hub cache: nothing is ever downloaded), ``append`` (out channels of
  new conv stages after the pretrained features).
- ``mlflow``: ``uri`` (``models:/NAME/VERSION``), ``tracking_uri``, ``append``, ``head``
  (``source`` keeps the source's trained head; ``new`` puts a fresh one after the appended
  stages; default: ``source`` unless stages are appended), ``scratch`` (the source's
  architecture without its weights: the control a transfer is compared with).

The spec stays plain JSON: the pretrained network is one stem block, ``tvbase.torchvision`` or
``tvbase.mlflow``, that records where the weights come from, its ``parts`` (the stages a
``freeze`` count refers to, in order; a part is its units joined by ``+``) and ``edits``. The
appended stages and the head are ordinary searchcore blocks, so the other improvement plugins
act on them. Edits are blocks too, applied when the block is built:

- ``tvbase.kernel(at=PATH, k=K)``: the convolution at PATH gets a KxK kernel ('same' padding);
  its learned kernel is embedded in the centre (or cropped), so a larger kernel computes the same
  function until it trains.
- ``tvbase.se(after=PATH, reduction=R)`` / ``tvbase.cbam(...)``: attention inserted after the
  module at PATH, initialised to the identity (gates start at exactly 1).
- ``tvbase.residual(first=PATH, last=PATH)``: ``y + alpha * proj(x)`` around the units from
  FIRST to LAST, with ``alpha`` starting at 0 and a 1x1 projection when shapes differ.

Why identity-initialised edits: the base already learned something; an edit must not wipe it
out before training starts. The graph edits go through ``torch.fx`` (falling back to module
surgery where fx cannot trace), and a dry forward pass checks every shape at build time, so a
rewrite that does not fit fails that trial alone with a reason naming the edit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from searchcore.arch.build import BuildContext
from searchcore.arch.improve import copy_spec
from searchcore.errors import SpecError, UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

TV, ML = "tvbase.torchvision", "tvbase.mlflow"
PRETRAINED = (TV, ML)
EDITS = ("tvbase.kernel", "tvbase.se", "tvbase.cbam", "tvbase.residual")
FAMILIES = ("resnet", "resnext", "wide_resnet", "mobilenet", "efficientnet", "mnasnet", "regnet", "shufflenet", "vgg", "alexnet", "squeezenet", "convnext")
HEAD_CHILDREN = {"avgpool", "fc", "classifier", "dropout", "flatten"}
EXPANDED = {"features", "trunk_output", "layers"}
KEYS = {
    TV: {"name", "weights", "input", "parts", "freeze", "edits"},
    ML: {"uri", "tracking", "source", "head", "scratch", "input", "parts", "freeze", "edits"},
}


# --- the torchvision side --------------------------------------------------------------------


def _check_family(name: str) -> None:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise UsageError(f"torchvision model {name!r} does not exist; e.g. resnet18, mobilenet_v3_small, efficientnet_b0")
    if not name.startswith(FAMILIES):
        raise UsageError(f"torchvision model {name!r} is not supported as a base (only CNN families: {', '.join(FAMILIES)})")


def _tv_model(name: str) -> nn.Module:
    """A torchvision classifier with random weights: ``weights=None`` so nothing is downloaded."""
    import torchvision

    _check_family(name)
    return torchvision.models.get_model(name, weights=None)


def tv_units(model: nn.Module) -> list[str]:
    """The modules a torchvision CNN's forward runs in order before its pooling and classifier."""
    units = []
    for name, child in model.named_children():
        if name in HEAD_CHILDREN:
            continue
        if name in EXPANDED and isinstance(child, nn.Sequential):
            units += [f"{name}.{n}" for n, _ in child.named_children()]
        else:
            units.append(name)
    return units


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def group_parts(model: nn.Module, units: list[str]) -> list[list[str]]:
    """Units grouped into stages: a block (a module with children) or a pooling layer closes a part.

    Why: freezing "the first k stages" should freeze conv1+bn1+relu+maxpool together, not
    count a ReLU as a stage; a part without parameters joins the part before it.
    """
    parts: list[list[str]] = []
    pending: list[str] = []
    for u in units:
        m = model.get_submodule(u)
        pending.append(u)
        if any(True for _ in m.children()) or isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            parts.append(pending)
            pending = []
    if pending:
        parts.append(pending)
    merged: list[list[str]] = []
    for p in parts:
        if merged and not any(_has_params(model.get_submodule(u)) for u in p):
            merged[-1] = merged[-1] + p
        else:
            merged.append(p)
    return merged


def first_kxk_conv(module: nn.Module, prefix: str) -> tuple[str, int] | None:
    """Path and size of the first square convolution with a kernel larger than 1 under ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size[0] == m.kernel_size[1] and m.kernel_size[0] > 1:
            return (f"{prefix}.{name}" if name else prefix), int(m.kernel_size[0])
    return None


@functools.lru_cache(maxsize=16)
def tv_layout(name: str) -> tuple[tuple[str, ...], dict[str, tuple[str, int]]]:
    """Parts (``+``-joined units) of a torchvision model and, per part, its first kxk conv; cached per name."""
    model = _tv_model(name)
    parts = group_parts(model, tv_units(model))
    convs = {}
    for p in parts:
        for u in p:
            found = first_kxk_conv(model.get_submodule(u), u)
            if found:
                convs["+".join(p)] = found
                break
    return tuple("+".join(p) for p in parts), convs


def _resolve_weights(name: str, weights: str) -> Path:
    """A state-dict file, or a torchvision weights name found in the local hub cache; never a download."""
    p = Path(weights).expanduser()
    if p.is_file():
        return p
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        raise UsageError(f"weights {weights!r} for {name}: no such file, nor a torchvision weights name of {name}") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
    if not cached.is_file():
        raise UsageError(f"weights {weights} of {name} are not in the local cache ({cached}); searchcore never downloads: fetch {w.url} yourself and give the file's path")
    return cached


def _load_tv_weights(model: nn.Module, units: list[str], path: Path) -> None:
    """Load a state dict into the feature units (the classifier's keys are ignored: it is replaced)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"{path}: not a loadable state dict: {type(e).__name__}: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path}: expected a state dict (name -> tensor)")
    own = model.state_dict()
    feature = tuple(f"{u}." for u in units)
    wanted = {k for k in own if k.startswith(feature)}
    given = {k: v for k, v in state.items() if k.startswith(feature)}
    missing, extra = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise UsageError(f"{path}: does not fit {type(model).__name__} ({what}); was it saved from another model?")
    for k, v in given.items():
        if own[k].shape != v.shape:
            raise UsageError(f"{path}: {k} has shape {list(v.shape)}, the model needs {list(own[k].shape)}")
    model.load_state_dict(given, strict=False)


def _adapt_input(model: nn.Module, channels: int) -> None:
    """Give the first convolution ``channels`` inputs; learned RGB filters are summed for grey input."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels == channels:
                return
            if m.groups != 1:
                raise SpecError(f"cannot adapt {name} (a grouped convolution) to {channels} input channels")
            new = nn.Conv2d(channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, 1, m.bias is not None)
            with torch.no_grad():
                mean = m.weight.sum(dim=1, keepdim=True) / channels
                new.weight.copy_(mean.expand(-1, channels, -1, -1))
                if m.bias is not None:
                    new.bias.copy_(m.bias)
            model.set_submodule(name, new)
            return


# --- the registered-model side ---------------------------------------------------------------


def ml_layout(source: dict, head: bool) -> tuple[tuple[str, ...], dict[str, tuple[str, int]]]:
    """Parts of a searchcore Network (``stem``, ``stages.i``) and each stage's first kxk ``conv`` block."""
    parts = (["stem"] if source["stem"] else []) + [f"stages.{i}" for i in range(len(source["stages"]))]
    convs = {}
    for i, st in enumerate(source["stages"]):
        for j, b in enumerate(st["body"]):
            if b["type"] == "conv" and int(b.get("k", 3)) > 1:
                convs[f"stages.{i}"] = (f"stages.{i}.body.{j}.0", int(b["k"]))
                break
    return tuple(parts), convs


def _ml_root(o: dict, ctx: BuildContext) -> nn.Module:
    """The source network: the registered model itself, or its architecture rebuilt untrained (``scratch``)."""
    from searchcore.arch.build import Network, build
    from searchcore.arch.spec import decode, encode
    from searchcore.track import models

    source = decode(o["source"])
    if o.get("scratch", False):
        return build(source, ctx.registry, seed=0)
    _, model = models.load(o["uri"], o.get("tracking"))
    if not isinstance(model, Network) or encode(model.spec) != encode(source):
        raise SpecError(f"{o['uri']}: the registered model is not the architecture this spec records as its source")
    return model


# --- edits -----------------------------------------------------------------------------------


class Gate(nn.Module):
    """Squeeze-and-excitation that starts as the identity: ``x * 2 sigmoid(fc2(relu(fc1(mean x))))``, fc2 zero."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class GateCBAM(nn.Module):
    """CBAM (channel gate, then spatial gate) whose gates start at exactly 1."""

    def __init__(self, channels: int, reduction: int, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)
        for m in (self.mlp[2], self.spatial):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * 2 * torch.sigmoid(gate)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * 2 * torch.sigmoid(self.spatial(maps))


class ResidualAdd(nn.Module):
    """``y + alpha * proj(x)``: ``alpha`` starts at 0 so the link changes nothing until it is trained."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return y + self.alpha * self.proj(x)


class Wrapped(nn.Module):
    """Module surgery for a residual link when fx cannot trace: ``inner(x)`` plus the link."""

    def __init__(self, inner: nn.Module, link: ResidualAdd) -> None:
        super().__init__()
        self.inner, self.link = inner, link

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.link(self.inner(x), x)


def _projection(cin: int, cout: int, hin: int, hout: int) -> nn.Module:
    if cin == cout and hin == hout:
        return nn.Identity()
    stride = hin // hout if hout and hin % hout == 0 else None
    if stride is None:
        return nn.Sequential(nn.AdaptiveAvgPool2d(hout), nn.Conv2d(cin, cout, 1, bias=False))
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _new_kernel(conv: nn.Conv2d, k: int) -> nn.Conv2d:
    """The same convolution with a kxk kernel; the learned kernel is embedded in the centre (or cropped)."""
    old = conv.kernel_size[0]
    d = conv.dilation[0]
    new = nn.Conv2d(conv.in_channels, conv.out_channels, k, conv.stride, d * (k - 1) // 2, conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.zero_()
        if k >= old:
            o = (k - old) // 2
            new.weight[:, :, o : o + old, o : o + old] = conv.weight
        else:
            o = (old - k) // 2
            new.weight.copy_(conv.weight[:, :, o : o + k, o : o + k])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class Chain(nn.Module):
    """Runs a network's units in order; ``root`` keeps the original module paths (``layer1.0.conv1``)."""

    def __init__(self, root: nn.Module, units: list[str]) -> None:
        super().__init__()
        self.root = root
        self.units = list(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for path in self.units:
            x = self.root.get_submodule(path)(x)
        return x


class Pretrained(nn.Module):
    """The pretrained block: frozen units have no gradient and stay in eval mode.

    Why eval mode: a frozen BatchNorm that kept updating its running statistics would change
    what the frozen layers compute; freezing means the stage is bitwise what it learned.
    """

    def __init__(self, net: nn.Module, frozen: list[str]) -> None:
        super().__init__()
        self.net = net
        self.frozen = list(frozen)
        for path in self.frozen:
            for p in self.net.get_submodule(path).parameters():
                p.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> Pretrained:
        super().train(mode)
        for path in self.frozen:
            self.net.get_submodule(path).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _shapes(chain: Chain, input_shape: list[int]) -> dict[str, tuple[list[int], list[int]]]:
    """Input and output shape of every unit, from one dry forward pass in eval mode."""
    seen: dict[str, tuple[list[int], list[int]]] = {}
    hooks = []
    for path in chain.units:
        def hook(m: nn.Module, args: tuple, out: Any, _p: str = path) -> None:
            seen[_p] = (list(args[0].shape), list(out.shape) if isinstance(out, torch.Tensor) else [])

        hooks.append(chain.root.get_submodule(path).register_forward_hook(hook))
    try:
        _dry(chain, input_shape, "the pretrained network")
    finally:
        for h in hooks:
            h.remove()
    return seen


def _dry(module: nn.Module, input_shape: list[int], what: str) -> torch.Tensor:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.zeros(1, *input_shape))
    except Exception as e:
        raise SpecError(f"{what} does not run on input {input_shape}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
    finally:
        module.train(was)


def _edit_label(e: dict) -> str:
    return f"{e['type']}({', '.join(f'{k}={v}' for k, v in e.items() if k != 'type')})"


def _graph_edits(chain: Chain, edits: list[dict], shapes: dict, units: list[str]) -> nn.Module:
    """Insert attention and residual links with torch.fx; module surgery where fx cannot trace."""
    import torch.fx as fx

    if not edits:
        return chain
    targets = set()
    for e in edits:
        for key in ("after", "first", "last"):
            if key in e:
                targets.add(f"root.{e[key]}")

    class Tracer(fx.Tracer):
        """Traces only through the modules that hold an edit point; everything else is one leaf node."""

        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return not any(t.startswith(qualname + ".") for t in targets)

    try:
        graph = Tracer().trace(chain)
    except Exception:
        return _surgery(chain, edits, shapes)
    gm = fx.GraphModule(chain, graph)
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    for i, e in enumerate(edits):
        if e["type"] in ("tvbase.se", "tvbase.cbam"):
            node = nodes.get(f"root.{e['after']}")
            if node is None:
                raise SpecError(f"{_edit_label(e)}: {e['after']!r} is not a module the network runs; units: {', '.join(units)}")
            channels = _channels_after(gm, e, shapes)
            m = Gate(channels, int(e["reduction"])) if e["type"] == "tvbase.se" else GateCBAM(channels, int(e["reduction"]))
            name = f"tvbase_{e['type'][7:]}_{i}"
            gm.add_submodule(name, m)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node,))
            node.replace_all_uses_with(new, delete_user_cb=lambda u, _n=new: u is not _n)
        else:
            first, last = nodes.get(f"root.{e['first']}"), nodes.get(f"root.{e['last']}")
            if first is None or last is None:
                raise SpecError(f"{_edit_label(e)}: first and last must be units the network runs; units: {', '.join(units)}")
            x = first.args[0]
            (cin, hin, _), (cout, hout, _) = _chw(shapes, e["first"], 0), _chw(shapes, e["last"], 1)
            name = f"tvbase_residual_{i}"
            gm.add_submodule(name, ResidualAdd(_projection(cin, cout, hin, hout)))
            with gm.graph.inserting_after(last):
                new = gm.graph.call_module(name, (last, x))
            last.replace_all_uses_with(new, delete_user_cb=lambda u, _n=new: u is not _n)
    gm.graph.lint()
    gm.recompile()
    return gm


def _chw(shapes: dict, unit: str, which: int) -> list[int]:
    if unit not in shapes:
        raise SpecError(f"{unit!r} is not a unit of the network, so its shape is unknown; units: {', '.join(shapes)}")
    shape = shapes[unit][which]
    if len(shape) != 4:
        raise SpecError(f"{unit!r} {'takes' if which == 0 else 'gives'} shape {shape}; the edit needs a feature map [N, C, H, W]")
    return shape[1:]


def _channels_after(gm: nn.Module, e: dict, shapes: dict) -> int:
    if e["after"] in shapes:
        return _chw(shapes, e["after"], 1)[0]
    found: list[int] = []
    target = gm.get_submodule(f"root.{e['after']}")
    h = target.register_forward_hook(lambda m, a, out: found.append(out.shape[1] if out.dim() == 4 else -1))
    try:
        _dry(gm, shapes[next(iter(shapes))][0][1:], "the network")
    finally:
        h.remove()
    if not found or found[0] < 0:
        raise SpecError(f"{_edit_label(e)}: the module's output is not a feature map [N, C, H, W]")
    return found[0]


def _surgery(chain: Chain, edits: list[dict], shapes: dict) -> nn.Module:
    """The same edits by replacing modules, for networks fx cannot trace."""
    for e in edits:
        if e["type"] in ("tvbase.se", "tvbase.cbam"):
            channels = _chw(shapes, e["after"], 1)[0]
            m = Gate(channels, int(e["reduction"])) if e["type"] == "tvbase.se" else GateCBAM(channels, int(e["reduction"]))
            chain.root.set_submodule(e["after"], nn.Sequential(chain.root.get_submodule(e["after"]), m))
        else:
            if e["first"] != e["last"]:
                raise SpecError(f"{_edit_label(e)}: fx cannot trace this network, and surgery adds a residual link around one unit only")
            (cin, hin, _), (cout, hout, _) = _chw(shapes, e["first"], 0), _chw(shapes, e["last"], 1)
            inner = chain.root.get_submodule(e["first"])
            chain.root.set_submodule(e["first"], Wrapped(inner, ResidualAdd(_projection(cin, cout, hin, hout))))
    return chain


def _apply_kernel_edits(root: nn.Module, edits: list[dict]) -> None:
    for e in edits:
        try:
            m = root.get_submodule(e["at"])
        except AttributeError:
            raise SpecError(f"{_edit_label(e)}: no module at {e['at']!r}") from None
        path = e["at"]
        if not isinstance(m, nn.Conv2d):
            found = first_kxk_conv(m, e["at"])
            if found is None:
                raise SpecError(f"{_edit_label(e)}: no kxk convolution at or under {e['at']!r}")
            path = found[0]
            m = root.get_submodule(path)
        k = int(e["k"])
        if k < 1 or k % 2 == 0:
            raise SpecError(f"{_edit_label(e)}: k must be odd and positive, so 'same' padding keeps the shape")
        root.set_submodule(path, _new_kernel(m, k))


def _check_edits(edits: Any) -> list[dict]:
    required = {"tvbase.kernel": ("at", "k"), "tvbase.se": ("after", "reduction"), "tvbase.cbam": ("after", "reduction"), "tvbase.residual": ("first", "last")}
    if not isinstance(edits, list):
        raise ValueError("edits must be a list of tvbase edit blocks")
    for e in edits:
        if not isinstance(e, dict) or e.get("type") not in required:
            raise ValueError(f"an edit is one of {', '.join(EDITS)}, got {e!r}")
        keys = set(e) - {"type"}
        if keys != set(required[e["type"]]):
            raise ValueError(f"{e['type']} takes exactly {', '.join(required[e['type']])}, got {', '.join(sorted(keys))}")
    return edits


def pretrained_block(in_ch: int, o: dict, ctx: BuildContext, kind: str) -> tuple[nn.Module, int]:
    """Build the pretrained network, apply its edits, freeze its first parts, check every shape."""
    unknown = set(o) - KEYS[kind]
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(KEYS[kind]))}")
    input_shape = [int(v) for v in o["input"]]
    if in_ch != input_shape[0]:
        raise ValueError(f"it is recorded for {input_shape[0]} input channels but receives {in_ch}")
    parts = [str(p).split("+") for p in o["parts"]]
    units = [u for p in parts for u in p]
    edits = _check_edits(o.get("edits") or [])
    freeze = int(o.get("freeze", 0))
    if not 0 <= freeze <= len(parts):
        raise ValueError(f"freeze must be in 0..{len(parts)} (the number of parts), got {freeze}")
    if kind == TV:
        root = _tv_model(o["name"])
        if o.get("weights"):
            _load_tv_weights(root, units, _resolve_weights(o["name"], o["weights"]))
        for child in [n for n, _ in root.named_children() if n in HEAD_CHILDREN]:
            delattr(root, child)  # the classifier is replaced by the spec's head; its weights are not the model's
        _adapt_input(root, input_shape[0])
    else:
        root = _ml_root(o, ctx)
        if o.get("head"):
            units = units + ["head"]
        else:
            delattr(root, "head")  # replaced by the spec's new head: unused weights would still count as parameters
    for u in units:
        try:
            root.get_submodule(u)
        except AttributeError:
            raise SpecError(f"{kind}: part {u!r} is not a module of the network") from None
    chain = Chain(root, units)
    graph_edits = [e for e in edits if e["type"] != "tvbase.kernel"]
    # The edits' new modules draw from a forked RNG: the layers built after this block (new stages,
    # the head) start from the same weights with or without edits, so trials differ only by the edits.
    with torch.random.fork_rng(devices=[]):
        _apply_kernel_edits(root, [e for e in edits if e["type"] == "tvbase.kernel"])
        shapes = _shapes(chain, input_shape) if graph_edits else {}
        try:
            net = _graph_edits(chain, graph_edits, shapes, units)
        except SpecError:
            raise
        except Exception as e:
            raise SpecError(f"{kind}: applying {', '.join(map(_edit_label, graph_edits))} failed: {type(e).__name__}: {e}") from None
    frozen = [f"root.{u}" for p in parts[:freeze] for u in p]
    block = Pretrained(net, frozen)
    out = _dry(block, input_shape, f"{kind} with edits [{', '.join(map(_edit_label, edits))}]")
    return block, int(out.shape[1])


def edit_outside(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    raise ValueError("an edit is only valid in the edits list of a tvbase.torchvision or tvbase.mlflow block")


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(TV, lambda c, o, ctx: pretrained_block(c, o, ctx, TV))
    register(ML, lambda c, o, ctx: pretrained_block(c, o, ctx, ML))
    for kind in EDITS:
        register(kind, edit_outside)


# --- backbones ----------------------------------------------------------------------------


def _option_keys(options: dict, allowed: tuple[str, ...], backbone: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UsageError(f"backbone {backbone}: unknown option {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _append(options: dict, backbone: str, like: dict | None) -> list[dict]:
    """New conv stages after the pretrained features, one per out-channel count in ``append``."""
    append = options.get("append") or []
    if not isinstance(append, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in append):
        raise UsageError(f"backbone {backbone}: append must be a list of positive channel counts, got {append!r}")
    bn, act = (like or {}).get("bn", True), (like or {}).get("act", "relu")
    return [
        {"body": [{"type": "conv", "out": c, "k": 3, "d": 1, "s": 1, "bn": bn, "act": act}], "attention": [], "shortcut": None, "down": None}
        for c in append
    ]


def torchvision_backbone(input_shape: list[int], classes: int, options: dict) -> dict:
    """A torchvision CNN's features as one block, optional new conv stages, and a fresh pooled linear head."""
    _option_keys(options, ("model", "weights", "append"), "torchvision")
    name = options.get("model")
    if not isinstance(name, str) or not name:
        raise UsageError("backbone torchvision: option 'model' is required (e.g. resnet18)")
    weights = options.get("weights")
    if weights is not None:
        if not isinstance(weights, str) or not weights:
            raise UsageError(f"backbone torchvision: weights must be null, a file or a weights name, got {weights!r}")
        resolved = _resolve_weights(name, weights)
        weights = str(resolved.resolve())
    parts, _ = tv_layout(name)
    block = {"type": TV, "name": name, "weights": weights, "input": list(input_shape), "parts": list(parts), "freeze": 0, "edits": []}
    return {
        "schema": 1, "input": list(input_shape), "classes": int(classes), "stem": [block],
        "stages": _append(options, "torchvision", None),
        "head": [{"type": "gap"}, {"type": "flatten"}, {"type": "linear"}],
    }


def mlflow_backbone(input_shape: list[int], classes: int, options: dict) -> dict:
    """A registered searchcore model as one block (its source spec embedded), optional new stages and head."""
    from searchcore.arch.spec import encode
    from searchcore.track import models

    _option_keys(options, ("uri", "tracking_uri", "append", "head", "scratch"), "mlflow")
    uri = options.get("uri")
    models.parse_uri(uri)
    tracking = models.pinned_tracking(options.get("tracking_uri"))
    info = models.lookup(uri, tracking)
    source = info.spec
    if list(source["input"]) != list(input_shape):
        raise UsageError(f"backbone mlflow: {uri} takes input {source['input']}, the dataset gives {list(input_shape)}")
    convs = [b for st in source["stages"] for b in st["body"] if b["type"] == "conv"]
    stages = _append(options, "mlflow", convs[-1] if convs else None)
    head = options.get("head", "new" if stages else "source")
    if head not in ("source", "new"):
        raise UsageError(f"backbone mlflow: head must be 'source' or 'new', got {head!r}")
    if head == "source" and stages:
        raise UsageError("backbone mlflow: appended stages need a new head (head: new)")
    if head == "source" and source["classes"] != classes:
        raise UsageError(f"backbone mlflow: {uri} has {source['classes']} classes, the dataset {classes}; use head: new")
    scratch = options.get("scratch", False)
    if not isinstance(scratch, bool):
        raise UsageError(f"backbone mlflow: scratch must be true or false, got {scratch!r}")
    parts, _ = ml_layout(source, head == "source")
    block = {
        "type": ML, "uri": uri, "tracking": tracking, "source": encode(source), "head": head == "source",
        "scratch": scratch, "input": list(input_shape), "parts": list(parts), "freeze": 0, "edits": [],
    }
    new_head = [b if b["type"] != "linear" else {"type": "linear"} for b in source["head"]]
    return {
        "schema": 1, "input": list(input_shape), "classes": int(classes), "stem": [block],
        "stages": stages, "head": [] if head == "source" else new_head,
    }


@hookimpl
def searchcore_backbones(register: Callable[..., None]) -> None:
    register("torchvision", torchvision_backbone)
    register("mlflow", mlflow_backbone)


# --- improvement: edits of the pretrained network -----------------------------------------


def find_pretrained(spec: dict) -> dict | None:
    """The pretrained block of a spec (first in the stem), or None."""
    return next((b for b in spec["stem"] if b.get("type") in PRETRAINED), None)


def edit_points(block: dict) -> list[tuple[str, str, str, tuple[str, int] | None]]:
    """Per part: (dimension key, first unit, last unit, (kxk conv path, k) or None); only parts holding a kxk conv."""
    from searchcore.arch.spec import decode

    if block["type"] == TV:
        _, convs = tv_layout(block["name"])
    else:
        _, convs = ml_layout(decode(block["source"]), bool(block.get("head")))
    points = []
    for part in block["parts"]:
        units = part.split("+")
        if part in convs:
            points.append((units[-1], units[0], units[-1], convs[part]))
    return points


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"attention": ["none", "se", "cbam"], "reductions": [4, 8, 16], "kernels": [3, 5, 7], "residual": True, "stages": None}


def _selected(block: dict, options: dict) -> list[tuple[str, str, str, tuple[str, int] | None]]:
    stages = options.get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise UsageError(f"plugin tvbase: stages must be a list of part names, got {stages!r}")
    wanted = set(stages)
    points = edit_points(block)
    if wanted:
        unknown = wanted - {p[0] for p in points}
        if unknown:
            raise UsageError(f"plugin tvbase: stages {sorted(unknown)} are not editable parts; editable: {', '.join(p[0] for p in points)}")
        points = [p for p in points if p[0] in wanted]
    return points


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    block = find_pretrained(base)
    if block is None:
        return []
    dims = []
    kinds = [k for k in options["attention"] if k in ("none", "se", "cbam")]
    for key, first, last, conv in _selected(block, options):
        s = f"tvbase.{key}"
        if kinds and kinds != ["none"]:
            dims.append(Dimension.categorical(f"{s}.attention", kinds, off="none" if "none" in kinds else None, help=f"attention after {last}"))
            gated = [k for k in kinds if k != "none"]
            dims.append(Dimension.categorical(f"{s}.reduction", options["reductions"], condition=(f"{s}.attention", gated), help="channel reduction"))
        if conv is not None and options["kernels"] and options["kernels"] != [conv[1]]:
            k0 = conv[1]
            dims.append(Dimension.categorical(f"{s}.kernel", options["kernels"], off=k0 if k0 in options["kernels"] else None, help=f"kernel of {conv[0]}"))
        if options["residual"]:
            dims.append(Dimension.categorical(f"{s}.residual", [False, True], help=f"residual link around {first}..{last}"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict | None:
    block = find_pretrained(spec)
    if block is None or not params:
        return None
    spec = copy_spec(spec)
    block = find_pretrained(spec)
    edits = list(block["edits"])
    for key, first, last, conv in edit_points(block):
        s = f"tvbase.{key}"
        kind = params.get(f"{s}.attention", "none")
        if kind in ("se", "cbam"):
            edits.append({"type": f"tvbase.{kind}", "after": last, "reduction": params[f"{s}.reduction"]})
        k = params.get(f"{s}.kernel")
        if conv is not None and k is not None and k != conv[1]:
            edits.append({"type": "tvbase.kernel", "at": conv[0], "k": k})
        if params.get(f"{s}.residual"):
            edits.append({"type": "tvbase.residual", "first": first, "last": last})
    block["edits"] = edits
    return spec

