"""``build(spec)`` with the loaded plugins' blocks: what ``searchcore.build`` offered before the move.

``searchcore.arch.build.build(spec, registry)`` is pure and takes its blocks as an argument; this module
(importable as ``searchcore.build``) adds the old default, the process's plugin host, for plugins and
scripts written against it. Everything else is re-exported from ``searchcore.arch.build``.
"""

from __future__ import annotations

from searchcore.arch.build import (
    ACTIVATIONS,
    CORE_BLOCKS,
    BuildContext,
    Factory,
    Network,
    Stage,
    conv_block,
    output_shape,
    param_count,
)
from searchcore.arch.build import build as _pure_build
from searchcore.plugins.host import get_host


def build(spec: dict, registry: dict[str, Factory] | None = None, seed: int = 0) -> Network:
    """Build ``spec`` with ``registry``, by default the blocks of the process's plugin host."""
    return _pure_build(spec, get_host().blocks() if registry is None else registry, seed)


__all__ = ["ACTIVATIONS", "CORE_BLOCKS", "BuildContext", "Factory", "Network", "Stage", "build", "conv_block", "output_shape", "param_count"]
