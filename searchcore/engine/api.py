"""``searchcore.search(...)``: the whole search from Python, as the CLI runs it.

The flow is one way: space file + overrides (:func:`~searchcore.engine.settings.resolve_search`)
-> a backend from the registry (Optuna or Ray Tune) -> trials through the one runner factory
(:func:`~searchcore.engine.runner.prepare`) -> MLflow records -> the best architectures retrained,
tested and registered -> an optional end-of-search report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from searchcore.engine.backends import validate_settings
from searchcore.engine.backends.base import Reporter
from searchcore.engine.quiet import quiet_libraries
from searchcore.engine.results import SearchResult
from searchcore.engine.settings import Settings, resolve_search
from searchcore.errors import UsageError


def search(space: str | Path | None = None, report: Reporter | None = None, **kwargs: Any) -> SearchResult:
    """Run (or resume) a search. Keyword arguments are :class:`Settings` fields."""
    unknown = set(kwargs) - set(Settings.__dataclass_fields__)
    if unknown:
        raise UsageError(f"search(): unknown argument {sorted(unknown)[0]!r}; allowed: {', '.join(Settings.__dataclass_fields__)}")
    return run_search(space, Settings(**kwargs), report=report)


def run_search(space_file: str | Path | None, s: Settings, report: Reporter | None = None) -> SearchResult:
    """Check the settings, resolve the search, run it under its backend. ``report`` (the CLI and
    ``searchcore.search`` pass :func:`searchcore.report.hook.log_search_report`) ends it with plots."""
    backend = validate_settings(s)  # imports no Ray; refuses the other backend's flags
    quiet_libraries()
    t0 = time.time()
    cfg = resolve_search(space_file, s)
    return backend.run(cfg, s, report, t0)
