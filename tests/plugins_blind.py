"""A plugin whose improvement can only hurt: the space's draws that use it cannot learn.

Why it exists: the baseline rule (every search runs the unimproved backbone first, and its best is
never worse than that) needs a search where the drawn architectures lose for sure, on any machine
and seed. Dimension ``plugins_blind.on`` (off: False): when True, a block that multiplies its input
by zero sits before the head's linear layer, so the logits are the bias alone and the trained
network predicts one class. Load it with ``--plugin plugins_blind`` and ``tests/`` on the path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from searchcore import hookimpl
from searchcore.arch.improve import copy_spec
from searchcore.space import Dimension

NAME = "plugins_blind"
ON = f"{NAME}.on"
BLOCK = f"{NAME}.zero"


class Zero(nn.Module):
    def forward(self, x: Any) -> Any:
        return x * 0.0


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    return [Dimension.categorical(ON, [False, True], off=False, help="blind the head (a change that only hurts)")]


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict | None:
    if not params.get(ON):
        return None
    spec = copy_spec(spec)
    head = spec["head"]
    at = max(i for i, block in enumerate(head) if block.get("type") == "linear")
    head.insert(at, {"type": BLOCK})
    return spec


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(BLOCK, lambda in_channels, options, ctx=None: (Zero(), in_channels))
