"""searchcore: plugin-based neural architecture search.

Plugin authors need ``from searchcore import hookimpl``; everything else loads lazily so
``import searchcore`` stays fast. The flow, one package per stage, is in docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from searchcore.aliases import install
from searchcore.plugins.hookspecs import hookimpl

install()  # old import paths (searchcore.build, searchcore.spec, ...): see searchcore/aliases.py

__version__ = "0.1.0"


def search(*args: Any, **kwargs: Any) -> Any:
    """Run a search from Python; see :func:`searchcore.engine.api.search`."""
    from searchcore.engine.api import search as _search
    from searchcore.report.hook import log_search_report

    kwargs.setdefault("report", log_search_report)  # the plots, credit and diagram on the parent run (plots=False: none)
    return _search(*args, **kwargs)


__all__ = ["hookimpl", "search", "__version__"]
