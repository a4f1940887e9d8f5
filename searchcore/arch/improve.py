"""Small helpers for improvement plugins: finding stages and blocks in a spec.

Conventions that keep plugins commutative: a plugin edits only its own keys; when it
replaces blocks it copies the common keys (``k``, ``d``, ``bn``, ``act``, ``out``) of the
blocks it replaces; when it sets a common key it sets it on every block that has the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from searchcore.arch.spec import copy_spec

COMMON_KEYS = ("k", "d", "bn", "act")


def conv_stages(base: dict) -> list[int]:
    """Indices of stages whose body holds at least one block with a kernel (``k``): the CNN stages."""
    return [i for i, st in enumerate(base["stages"]) if any("k" in b for b in st["body"])]


def stage_name(i: int) -> str:
    """Stage names in dimension names are 1-based: ``kernel.s1`` is the first stage."""
    return f"s{i + 1}"


def feature_blocks(spec: dict) -> Iterator[dict]:
    """Every top-level block of the stem, the stage bodies and the downsamplers (not the head)."""
    yield from spec["stem"]
    for st in spec["stages"]:
        yield from st["body"]
        if st["down"] is not None:
            yield st["down"]


def set_key(blocks: list[dict], key: str, value: Any) -> None:
    for b in blocks:
        if key in b:
            b[key] = value


def common(block: dict) -> dict:
    """The common keys of a block, to copy into a block that replaces it."""
    return {k: block[k] for k in COMMON_KEYS if k in block}


def round_channels(c: float, divisor: int = 8) -> int:
    """Channels scaled by a width multiplier, kept a multiple of 8 (attention heads divide it)."""
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


__all__ = ["conv_stages", "stage_name", "feature_blocks", "set_key", "common", "round_channels", "copy_spec"]
