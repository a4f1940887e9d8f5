"""Width and depth: a global channel multiplier and the number of conv blocks per stage."""

from __future__ import annotations

from typing import Any

from searchcore.arch.improve import conv_stages, copy_spec, feature_blocks, round_channels, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"multipliers": [0.5, 0.75, 1.0, 1.5, 2.0], "depths": [1, 2, 3]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    stages = conv_stages(base)
    if not stages:
        return []
    mults = options["multipliers"]
    dims = [Dimension.categorical("widthdepth.width", mults, off=1.0 if 1.0 in mults else None, help="channel multiplier")]
    depths = options["depths"]
    for i in stages:
        dims.append(Dimension.categorical(f"widthdepth.{stage_name(i)}.depth", depths, off=1 if 1 in depths else None, help="conv blocks in the stage"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    width = params.get("widthdepth.width", 1.0)
    if width != 1.0:
        for b in feature_blocks(spec):
            if isinstance(b.get("out"), int):
                b["out"] = round_channels(b["out"] * width)
    for i, st in enumerate(spec["stages"]):
        depth = params.get(f"widthdepth.{stage_name(i)}.depth", 1)
        if depth > 1:
            body = []
            for b in st["body"]:
                body.extend([b] + [copy_spec(b) for _ in range(depth - 1)] if b["type"] == "conv" else [b])
            st["body"] = body
    return spec
