"""What every command group shares: argument types that refuse bad values in one line, and the table
format of the command line's output."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def _argument(text: str, parse: Callable[[str], Any], ok: Callable[[Any], bool], kind: str, allowed: str | None = None) -> Any:
    """``text`` parsed as ``kind``; a value it cannot parse, or one ``ok`` refuses, is a one-line argparse error."""
    try:
        v = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {allowed or kind}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    return _argument(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_int(text: str) -> int:
    return _argument(text, int, lambda v: 0 <= v <= 2**31 - 1, "a non-negative integer", f"an integer in 0..{2**31 - 1}")


def positive_float(text: str) -> float:
    return _argument(text, float, lambda v: v > 0 and not math.isinf(v), "a positive number")


def fraction(text: str) -> float:
    return _argument(text, float, lambda v: 0 <= v <= 64, "a number", "a number in 0..64")


def table(headers: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for r in rows:
        t.add_row(*[Text(str(c)) for c in r])  # Text, not markup: specs contain [brackets]
    Console(width=160, soft_wrap=False).print(t)
