"""Ghost modules per stage (GhostNet, Han et al. 2020): half the convolution, the other half from cheap ops.

A ghost module computes ``ceil(out / ratio)`` "intrinsic" feature maps with the stage's
ordinary convolution and derives the remaining ones with a cheap depthwise convolution of
those maps, so a ratio of 2 roughly halves the stage's parameters and MACs. The search
decides per stage whether to use it and with which ratio.

The transformation replaces each plain ``conv`` block of a chosen stage by a
``ghost.conv`` block that keeps every key of the conv it replaces (``out``, ``k``, ``d``,
``s``, ``bn``, ``act``), so the kernel, normact and width plugins keep acting on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from searchcore import hookimpl
from searchcore.build import ACTIVATIONS, BuildContext, conv_block
from searchcore.improve import conv_stages, copy_spec, stage_name
from searchcore.space import Dimension
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

__version__ = "0.1.0"

PLUGIN = "ghost"
BLOCK = "ghost.conv"


@hookimpl
def searchcore_options() -> dict[str, Any]:
    """``ratios``: the ratios the search may pick; ``cheap_kernel``: the depthwise kernel of the cheap operation."""
    return {"ratios": [2, 3, 4], "cheap_kernel": 3}


@hookimpl
def searchcore_dimensions(base: dict, options: dict[str, Any]) -> list[Dimension]:
    """Per conv stage: ``ghost.sN`` on/off and, when on, ``ghost.sN.ratio``."""
    dims = []
    for i in conv_stages(base):
        s = f"{PLUGIN}.{stage_name(i)}"
        dims.append(Dimension.categorical(s, [False, True], off=False, help="ghost modules for the stage's convs"))
        help_ratio = "output channels per channel of the full convolution"
        dims.append(Dimension.categorical(f"{s}.ratio", options["ratios"], condition=(s, [True]), help=help_ratio))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict[str, Any], options: dict[str, Any]) -> dict:
    """Replace the plain convs of each chosen stage by ghost modules, keeping all their keys."""
    spec = copy_spec(spec)
    for i, stage in enumerate(spec["stages"]):
        s = f"{PLUGIN}.{stage_name(i)}"
        if not params.get(s, False):
            continue
        extra = {"ratio": params[f"{s}.ratio"], "cheap": options["cheap_kernel"]}
        stage["body"] = [{**b, "type": BLOCK, **extra} if b["type"] == "conv" else b for b in stage["body"]]
    return spec


class GhostModule(nn.Module):
    """``concat(primary(x), cheap(primary(x)))[:, :out]``: the ghost module of GhostNet."""

    def __init__(self, primary: nn.Module, cheap: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.primary, self.cheap, self.out_channels = primary, cheap, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, : self.out_channels]


def ghost_block(in_channels: int, options: dict[str, Any], ctx: BuildContext) -> tuple[nn.Module, int]:
    """Build ``ghost.conv``: the options of a core ``conv`` plus ``ratio`` (>= 2) and ``cheap`` (odd kernel)."""
    ratio, cheap_k = int(options["ratio"]), int(options.get("cheap", 3))
    if ratio < 2:
        raise ValueError(f"ratio must be at least 2, got {ratio}")
    if cheap_k % 2 == 0:
        raise ValueError(f"cheap must be an odd kernel size, got {cheap_k}")
    out = int(options["out"]) if options.get("out") is not None else in_channels
    intrinsic = math.ceil(out / ratio)
    conv_options = {k: v for k, v in options.items() if k not in ("ratio", "cheap")}
    primary, _ = conv_block(in_channels, {**conv_options, "out": intrinsic}, ctx)
    act = options.get("act", "relu")
    cheap = Conv2dNormActivation(
        intrinsic,
        intrinsic * (ratio - 1),
        kernel_size=cheap_k,
        groups=intrinsic,
        norm_layer=nn.BatchNorm2d if options.get("bn", False) else None,
        activation_layer=ACTIVATIONS[act],
        inplace=None if act == "gelu" else True,
    )
    return GhostModule(primary, cheap, out), out


@hookimpl
def searchcore_blocks(register: Any) -> None:
    register(BLOCK, ghost_block)
