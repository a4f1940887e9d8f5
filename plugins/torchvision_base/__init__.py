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
from searchcore_plugins.torchvision_base.edits import (
    EDITS,
    Chain,
    Pretrained,
    apply_graph_edits,
    apply_kernel_edits,
    check_edits,
    dry_run,
    edit_label,
    first_kxk_conv,
    unit_shapes,
)
from torch import nn

from searchcore.arch.build import BuildContext
from searchcore.arch.improve import copy_spec
from searchcore.errors import SpecError, UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

TV, ML = "tvbase.torchvision", "tvbase.mlflow"
PRETRAINED = (TV, ML)
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
    edits = check_edits(o.get("edits") or [])
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
        apply_kernel_edits(root, [e for e in edits if e["type"] == "tvbase.kernel"])
        shapes = unit_shapes(chain, input_shape) if graph_edits else {}
        try:
            net = apply_graph_edits(chain, graph_edits, shapes, units)
        except SpecError:
            raise
        except Exception as e:
            raise SpecError(f"{kind}: applying {', '.join(map(edit_label, graph_edits))} failed: {type(e).__name__}: {e}") from None
    frozen = [f"root.{u}" for p in parts[:freeze] for u in p]
    block = Pretrained(net, frozen)
    out = dry_run(block, input_shape, f"{kind} with edits [{', '.join(map(edit_label, edits))}]")
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

