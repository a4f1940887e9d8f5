"""Search-related subcommands (search, best, ui, train, worker, ...), added to the CLI parser."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any, types: dict[str, Any]) -> None:
    """Register the search commands; kept apart from cli.py so each stays small."""
