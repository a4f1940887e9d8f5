"""Residual connection per stage: identity shortcut, or a 1x1 projection when shapes differ."""

from __future__ import annotations

from searchcore.arch.improve import conv_stages, copy_spec, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_dimensions(base: dict) -> list[Dimension]:
    return [Dimension.categorical(f"residual.{stage_name(i)}", [False, True], help="residual shortcut") for i in conv_stages(base)]


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        if params.get(f"residual.{stage_name(i)}"):
            st["shortcut"] = "auto"
    return spec
