"""Downsampling per stage: max pooling, average pooling or a strided convolution."""

from __future__ import annotations

from typing import Any

from searchcore.arch.improve import common, copy_spec, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

KINDS = {"maxpool": "max", "avgpool": "avg", "conv": "conv"}


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"choices": ["max", "avg", "conv"]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    dims = []
    for i, st in enumerate(base["stages"]):
        down = st["down"]
        if down is None or down["type"] not in KINDS:
            continue
        off = KINDS[down["type"]]
        dims.append(Dimension.categorical(f"pooling.{stage_name(i)}", options["choices"], off=off if off in options["choices"] else None, help="downsampling"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        choice = params.get(f"pooling.{stage_name(i)}")
        if choice is None or st["down"] is None or KINDS.get(st["down"]["type"]) == choice:
            continue
        k = int(st["down"].get("k", 2))
        if choice == "conv":
            first = next((b for b in st["body"] if "bn" in b), {})
            st["down"] = {"type": "conv", "out": None, "k": 3, "d": 1, "s": 2, "bn": False, "act": "relu", **_norm_act(first)}
        else:
            st["down"] = {"type": f"{choice}pool", "k": k, "s": k}
    return spec


def _norm_act(block: dict) -> dict:
    c = common(block)
    return {k: c[k] for k in ("bn", "act") if k in c}
