"""The command line: a thin shell over the Python API, one module per command group."""

from searchcore.cli.main import main

__all__ = ["main"]
