"""Keep the libraries' informational chatter out of the live display (the CLI, a search, a Ray worker)."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Warnings and log levels that would otherwise interleave with progress lines."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*is an experimental feature.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
