"""Attention per stage: squeeze-and-excitation, CBAM, or multi-head self-attention over the feature map."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from searchcore.arch.build import BuildContext
from searchcore.arch.improve import conv_stages, copy_spec, stage_name
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"kinds": ["none", "se", "cbam", "mhsa"], "reductions": [4, 8, 16], "heads": [1, 2, 4]}


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    dims = []
    kinds = options["kinds"]
    for i in conv_stages(base):
        s = f"attention.{stage_name(i)}"
        dims.append(Dimension.categorical(s, kinds, off="none" if "none" in kinds else None, help="attention after the stage body"))
        gated = [k for k in kinds if k in ("se", "cbam")]
        if gated:
            dims.append(Dimension.categorical(f"{s}.reduction", options["reductions"], condition=(s, gated), help="channel reduction"))
        if "mhsa" in kinds:
            dims.append(Dimension.categorical(f"{s}.heads", options["heads"], condition=(s, ["mhsa"]), help="attention heads"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    spec = copy_spec(spec)
    for i, st in enumerate(spec["stages"]):
        s = f"attention.{stage_name(i)}"
        kind = params.get(s, "none")
        if kind in ("se", "cbam"):
            st["attention"] = st["attention"] + [{"type": f"attention.{kind}", "reduction": params[f"{s}.reduction"]}]
        elif kind == "mhsa":
            st["attention"] = st["attention"] + [{"type": "attention.mhsa", "heads": params[f"{s}.heads"]}]
    return spec


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map; pre-norm, residual, same shape."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels are not divisible by {heads} heads")
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q = self.norm(tokens)
        out, _ = self.attn(q, q, q, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def se_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return SqueezeExcitation(in_ch, max(1, in_ch // int(o["reduction"]))), in_ch


def cbam_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return CBAM(in_ch, int(o["reduction"]), int(o.get("kernel", 7))), in_ch


def mhsa_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    return SelfAttention2d(in_ch, int(o["heads"])), in_ch


@hookimpl
def searchcore_blocks(register: Any) -> None:
    register("attention.se", se_block)
    register("attention.cbam", cbam_block)
    register("attention.mhsa", mhsa_block)
