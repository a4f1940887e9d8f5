"""Old import path of ``build``, kept for plugins and users written against it.

``searchcore.arch.build.build(spec, registry)`` is pure; this ``build(spec)`` keeps the old default of
the loaded plugins' blocks. Everything else is ``searchcore.arch.build`` itself.
"""

from __future__ import annotations

from typing import Any

from searchcore.arch.build import *  # noqa: F403
from searchcore.arch.build import Factory, Network
from searchcore.arch.build import build as _build


def build(spec: dict, registry: dict[str, Factory] | None = None, seed: int = 0) -> Network:
    """Build ``spec`` with ``registry``, by default the blocks of the process's plugin host."""
    if registry is None:
        from searchcore.plugins.host import get_host

        registry = get_host().blocks()
    return _build(spec, registry, seed)


def __getattr__(name: str) -> Any:
    """Names not in ``__all__`` (private helpers) still resolve, from the new module."""
    from searchcore.arch import build as module

    return getattr(module, name)
