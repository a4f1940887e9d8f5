"""Dense connections per stage (DenseNet): each layer sees every earlier feature map, then a transition."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from searchcore.arch.build import BuildContext, conv_block
from searchcore.arch.improve import common, conv_stages, copy_spec, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"growth": [8, 16, 32], "layers": [2, 3, 4]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    dims = []
    for i in conv_stages(base):
        s = f"dense.{stage_name(i)}"
        dims.append(Dimension.categorical(s, [False, True], help="dense connections in the stage"))
        dims.append(Dimension.categorical(f"{s}.growth", options["growth"], condition=(s, [True]), help="growth rate"))
        dims.append(Dimension.categorical(f"{s}.layers", options["layers"], condition=(s, [True]), help="layers in the dense block"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        s = f"dense.{stage_name(i)}"
        if not params.get(s):
            continue
        convs = [b for b in st["body"] if b["type"] == "conv"]
        if not convs:
            continue
        block = {"type": "dense.block", "layers": params[f"{s}.layers"], "growth": params[f"{s}.growth"], "out": convs[-1]["out"]}
        block.update(common(convs[0]))
        first = st["body"].index(convs[0])
        st["body"] = st["body"][:first] + [block] + [b for b in st["body"][first:] if b["type"] != "conv"]
    return spec


class DenseBlock(nn.Module):
    """``layers`` convs, each fed the concatenation of the input and all earlier outputs; 1x1 transition to ``out``."""

    def __init__(self, layers: nn.ModuleList, transition: nn.Module) -> None:
        super().__init__()
        self.layers, self.transition = layers, transition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return self.transition(torch.cat(feats, dim=1))


def dense_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    layers, growth = int(o["layers"]), int(o["growth"])
    conv_opts = {"k": o.get("k", 3), "d": o.get("d", 1), "bn": o.get("bn", False), "act": o.get("act", "relu")}
    mods = nn.ModuleList(conv_block(in_ch + j * growth, {**conv_opts, "out": growth}, ctx)[0] for j in range(layers))
    out = int(o["out"]) if o.get("out") is not None else in_ch
    transition, _ = conv_block(in_ch + layers * growth, {**conv_opts, "k": 1, "d": 1, "out": out}, ctx)
    return DenseBlock(mods, transition), out


@hookimpl
def searchcore_blocks(register: Any) -> None:
    register("dense.block", dense_block)
