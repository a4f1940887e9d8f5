"""Kernel size per stage (3/5/7), and optionally dilation."""

from __future__ import annotations

from typing import Any

from searchcore.arch.improve import conv_stages, copy_spec, set_key, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"choices": [3, 5, 7], "dilations": [1]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    dims = []
    for i in conv_stages(base):
        k0 = next(b["k"] for b in base["stages"][i]["body"] if "k" in b)
        off = k0 if k0 in options["choices"] else options["choices"][0]
        dims.append(Dimension.categorical(f"kernel.{stage_name(i)}", options["choices"], off=off, help="kernel size"))
        if len(options["dilations"]) > 1:
            dims.append(Dimension.categorical(f"kernel.{stage_name(i)}.dilation", options["dilations"], help="dilation"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict, options: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        name = f"kernel.{stage_name(i)}"
        if name in params:
            set_key(st["body"], "k", params[name])
        if f"{name}.dilation" in params:
            set_key(st["body"], "d", params[f"{name}.dilation"])
    return spec
