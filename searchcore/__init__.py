"""searchcore: plugin-based neural architecture search.

Plugin authors need ``from searchcore import hookimpl``; everything else loads lazily so
``import searchcore`` stays fast.
"""

from __future__ import annotations

from typing import Any

from searchcore.hookspecs import hookimpl

__version__ = "0.1.0"


def search(*args: Any, **kwargs: Any) -> Any:
    """Run a search from Python; see :func:`searchcore.search_api.search`."""
    from searchcore.search_api import search as _search

    return _search(*args, **kwargs)


__all__ = ["hookimpl", "search", "__version__"]
