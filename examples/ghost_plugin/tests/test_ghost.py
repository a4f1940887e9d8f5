"""What is specific to ghost modules: the shapes, the savings, and which keys the transformation keeps."""

from __future__ import annotations

import pytest
import torch
from searchcore.build import BuildContext, conv_block
from searchcore.errors import SpecError

import searchcore_ghost as ghost

CONV = {"out": 64, "k": 3, "d": 1, "s": 1, "bn": True, "act": "relu"}


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_output_has_the_conv_shape(ratio: int) -> None:
    module, out = ghost.ghost_block(16, {**CONV, "ratio": ratio, "cheap": 3}, BuildContext({}))
    y = module(torch.randn(2, 16, 8, 8))
    assert out == 64
    assert y.shape == (2, 64, 8, 8)


def test_ghost_module_is_cheaper_than_the_conv() -> None:
    plain, _ = conv_block(32, CONV, BuildContext({}))
    cheap, _ = ghost.ghost_block(32, {**CONV, "ratio": 2, "cheap": 3}, BuildContext({}))
    assert params(cheap) < 0.6 * params(plain)


def test_stride_is_kept() -> None:
    module, _ = ghost.ghost_block(8, {**CONV, "s": 2, "ratio": 2}, BuildContext({}))
    assert module(torch.randn(1, 8, 8, 8)).shape == (1, 64, 4, 4)


def test_bad_options_are_refused() -> None:
    ctx = BuildContext({"ghost.conv": ghost.ghost_block})
    with pytest.raises(SpecError, match="ratio must be at least 2"):
        ctx.block({"type": "ghost.conv", **CONV, "ratio": 1}, 8)
    with pytest.raises(SpecError, match="odd kernel"):
        ctx.block({"type": "ghost.conv", **CONV, "ratio": 2, "cheap": 2}, 8)


def test_transform_keeps_the_conv_keys() -> None:
    base = {"stages": [{"body": [{"type": "conv", **CONV}, {"type": "dropout", "p": 0.1}]}]}
    spec = ghost.searchcore_transform(base, {"ghost.s1": True, "ghost.s1.ratio": 3}, {"cheap_kernel": 5})
    block = spec["stages"][0]["body"][0]
    assert block == {"type": "ghost.conv", **CONV, "ratio": 3, "cheap": 5}
    assert spec["stages"][0]["body"][1] == {"type": "dropout", "p": 0.1}
    assert base["stages"][0]["body"][0]["type"] == "conv"
