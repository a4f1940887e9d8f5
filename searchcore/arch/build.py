"""``build(spec) -> nn.Module``: pure and deterministic, blocks looked up in a registry.

Block factories follow one convention: ``factory(in_channels, options, ctx) -> (module,
out_channels)``. ``ctx`` builds nested block lists and knows the spec's input, so a
factory never needs global state. The head's ``linear`` infers its input size from a dry
forward pass of the body, so any sequence of stages builds for any input size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from searchcore.arch.spec import block_types, validate
from searchcore.errors import SpecError

Factory = Callable[[int, dict, "BuildContext"], "tuple[nn.Module, int]"]

ACTIVATIONS: dict[str, type[nn.Module] | None] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "none": None}


@dataclass
class BuildContext:
    """What a block factory may use: the registry (for nested blocks) and the spec's input."""

    registry: dict[str, Factory]
    providers: dict[str, str] = field(default_factory=dict)

    def block(self, block: dict, in_channels: int) -> tuple[nn.Module, int]:
        kind = block["type"]
        factory = self.registry.get(kind)
        if factory is None:
            raise SpecError(missing_block_message(kind, self.registry))
        options = {k: v for k, v in block.items() if k != "type"}
        try:
            return factory(in_channels, options, self)
        except (KeyError, TypeError, ValueError) as e:
            raise SpecError(f"block {kind!r} with options {options}: {e}") from None

    def blocks(self, blocks: list[dict], in_channels: int) -> tuple[nn.Module, int]:
        mods = []
        ch = in_channels
        for b in blocks:
            m, ch = self.block(b, ch)
            mods.append(m)
        return (nn.Sequential(*mods) if mods else nn.Identity()), ch


def missing_block_message(kind: str, registry: dict) -> str:
    plugin = kind.split(".", 1)[0] if "." in kind else None
    hint = (
        f"it is provided by plugin {plugin!r}, which is not loaded: install it or remove it from --disable"
        if plugin
        else "core block types are: " + ", ".join(sorted(k for k in registry if "." not in k))
    )
    return f"block type {kind!r} is not provided by any loaded plugin; {hint}"


# --- core blocks ----------------------------------------------------------------------------


def conv_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    """Conv2d (+ BatchNorm) (+ activation) via torchvision's Conv2dNormActivation; 'same' padding."""
    act = o.get("act", "relu")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    k, d, s = int(o.get("k", 3)), int(o.get("d", 1)), int(o.get("s", 1))
    out = int(o["out"]) if o.get("out") is not None else in_ch
    m = Conv2dNormActivation(
        in_ch,
        out,
        kernel_size=k,
        stride=s,
        dilation=d,
        padding=d * (k - 1) // 2,
        norm_layer=nn.BatchNorm2d if o.get("bn", False) else None,
        activation_layer=ACTIVATIONS[act],
        inplace=None if act == "gelu" else True,  # nn.GELU takes no inplace argument
    )
    return m, out


def pool_block(kind: type[nn.Module]) -> Factory:
    def factory(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
        k = int(o.get("k", 2))
        return kind(kernel_size=k, stride=int(o.get("s", k)), ceil_mode=True), in_ch

    return factory


def gap_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return nn.AdaptiveAvgPool2d(1), in_ch


def flatten_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return nn.Flatten(), in_ch


def dropout_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return nn.Dropout(float(o.get("p", 0.0))), in_ch


def linear_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    raise ValueError("'linear' is only allowed in the head, where its input size is measured")


CORE_BLOCKS: dict[str, Factory] = {
    "linear": linear_block,
    "conv": conv_block,
    "maxpool": pool_block(nn.MaxPool2d),
    "avgpool": pool_block(nn.AvgPool2d),
    "gap": gap_block,
    "flatten": flatten_block,
    "dropout": dropout_block,
}


# --- the network ---------------------------------------------------------------------------


class Stage(nn.Module):
    """``down(attention(body(x)) [+ shortcut(x)])``: one stage of the spec."""

    def __init__(self, body: nn.Module, attention: nn.Module, shortcut: nn.Module | None, down: nn.Module) -> None:
        super().__init__()
        self.body, self.attention, self.shortcut, self.down = body, attention, shortcut, down

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attention(self.body(x))
        return y if self.shortcut is None else y + self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.residual(x))


class Network(nn.Module):
    """stem -> stages -> head. ``spec`` is kept so the model can always say what it is."""

    def __init__(self, stem: nn.Module, stages: nn.ModuleList, head: nn.Module, spec: dict) -> None:
        super().__init__()
        self.stem, self.stages, self.head = stem, stages, head
        self.spec = spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shortcut(in_ch: int, out_ch: int) -> nn.Module:
    """Identity when shapes agree, else a 1x1 projection (He et al. option B)."""
    return nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)


def build(spec: dict, registry: dict[str, Factory], seed: int = 0) -> Network:
    """Build the model a spec describes. Same spec, registry and seed -> same structure and weights.

    ``registry`` maps block types to factories, usually ``host.blocks()``: passed in, never read from
    the process, so ``build`` stays pure (``searchcore.build.build`` keeps the old default).
    """
    validate(spec)
    missing = [t for t in block_types(spec) if t not in registry]
    if missing:
        raise SpecError(missing_block_message(missing[0], registry))
    ctx = BuildContext(registry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ch = spec["input"][0]
        stem, ch = ctx.blocks(spec["stem"], ch)
        stages = nn.ModuleList()
        for st in spec["stages"]:
            body, out = ctx.blocks(st["body"], ch)
            attention, out2 = ctx.blocks(st["attention"], out)
            if out2 != out:
                raise SpecError("attention blocks must keep the channel count")
            shortcut = _shortcut(ch, out) if st["shortcut"] == "auto" else None
            down, out = ctx.block(st["down"], out) if st["down"] is not None else (nn.Identity(), out)
            stages.append(Stage(body, attention, shortcut, down))
            ch = out
        head = _build_head(spec, ctx, stem, stages, ch)
    # the dry forward pass in _build_head put the modules in eval mode: hand back a model in training mode
    return Network(stem, stages, head, spec).train()


def _build_head(spec: dict, ctx: BuildContext, stem: nn.Module, stages: nn.ModuleList, ch: int) -> nn.Module:
    """Head blocks; ``linear`` takes the flattened size measured by a dry forward pass."""
    mods: list[nn.Module] = []
    probe = nn.Sequential(stem, *stages).eval()
    with torch.no_grad():
        x = probe(torch.zeros(1, *spec["input"]))
    for b in spec["head"]:
        if b["type"] == "linear":
            features = x.flatten(1).shape[1]
            unknown = set(b) - {"type", "out"}
            if unknown:
                raise SpecError(f"head block 'linear': unknown option {sorted(unknown)[0]!r}; allowed: out")
            out = int(b.get("out") or spec["classes"])
            m: nn.Module = nn.Linear(features, out)
            x = torch.zeros(1, out)
        else:
            m, ch = ctx.block(b, ch)
            with torch.no_grad():
                x = m.eval()(x)
        mods.append(m)
    return nn.Sequential(*mods)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_shape(model: nn.Module, input_shape: list[int]) -> list[int]:
    was = model.training
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, *input_shape))
    model.train(was)
    return list(y.shape[1:])


__all__ = ["BuildContext", "Network", "Stage", "build", "param_count", "output_shape", "CORE_BLOCKS"]
