"""Normalisation and activation: batch norm on or off; ReLU, GELU or SiLU, for the whole network."""

from __future__ import annotations

from typing import Any

from searchcore.arch.improve import copy_spec, feature_blocks
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"activations": ["relu", "gelu", "silu"], "batchnorm": [False, True]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    blocks = list(feature_blocks(base))
    dims = []
    if any("bn" in b for b in blocks):
        bn0 = next(b["bn"] for b in blocks if "bn" in b)
        dims.append(Dimension.categorical("normact.bn", options["batchnorm"], off=bn0 if bn0 in options["batchnorm"] else None, help="batch norm after each conv"))
    if any("act" in b for b in blocks):
        act0 = next(b["act"] for b in blocks if "act" in b)
        dims.append(Dimension.categorical("normact.act", options["activations"], off=act0 if act0 in options["activations"] else None, help="activation"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for b in feature_blocks(spec):
        for key, dim in (("bn", "normact.bn"), ("act", "normact.act")):
            if key in b and dim in params:
                b[key] = params[dim]
    return spec
