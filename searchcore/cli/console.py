"""What every command group shares: argument types that refuse bad values in one line, and the table
format of the command line's output."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0 or v > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{2**31 - 1}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v <= 64:
        raise argparse.ArgumentTypeError(f"expected a number in 0..64, got {text!r}")
    return v


def table(headers: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for r in rows:
        t.add_row(*[Text(str(c)) for c in r])  # Text, not markup: specs contain [brackets]
    Console(width=160, soft_wrap=False).print(t)
