"""Transfer learning: keep what a pretrained base learned, freeze its first k stages (k searched), retrain.

The base is a pretrained block from the ``tvbase`` plugin (a torchvision CNN with weights, or a
model an earlier search registered): it loads the weights when it is built. This plugin only
chooses how many of its parts stay frozen and records the choice in the block's ``freeze`` key,
so a winner's spec retrains the same way. New layers come from the backbone's ``append`` option
and are shaped by the other improvement plugins (kernel, attention, residual ...), which see the
appended stages as ordinary stages.

A base without weights (``weights: null``, ``scratch: true``) has nothing worth freezing, so the
plugin declares no dimension there, and none on a space without a pretrained base.
"""

from __future__ import annotations

from typing import Any

from searchcore.arch.improve import copy_spec
from searchcore.errors import UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

PRETRAINED = ("tvbase.torchvision", "tvbase.mlflow")


def pretrained(spec: dict) -> dict | None:
    """The spec's pretrained block if it carries learned weights, else None."""
    block = next((b for b in spec["stem"] if b.get("type") in PRETRAINED), None)
    if block is None:
        return None
    has_weights = block.get("weights") is not None if block["type"] == "tvbase.torchvision" else not block.get("scratch", False)
    return block if has_weights else None


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"freeze": None}  # None: every count from 0 to the number of parts; else a list of counts


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    block = pretrained(base)
    if block is None:
        return []
    n = len(block["parts"])
    choices = options.get("freeze") or list(range(n + 1))
    if not isinstance(choices, list):
        raise UsageError(f"plugin transfer: freeze must be a list of counts, got {choices!r}")
    bad = [k for k in choices if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= n]
    if bad:
        raise UsageError(f"plugin transfer: freeze values must be integers in 0..{n} (the base has {n} parts: {', '.join(block['parts'])}), got {bad[0]!r}")
    off = block.get("freeze", 0)
    return [Dimension.categorical("transfer.freeze", choices, off=off if off in choices else None, help=f"frozen parts of the base, of {n}")]


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict | None:
    if "transfer.freeze" not in params or pretrained(spec) is None:
        return None
    spec = copy_spec(spec)
    pretrained(spec)["freeze"] = params["transfer.freeze"]
    return spec


@hookimpl
def searchcore_training(model: Any, spec: dict, context: Any) -> None:
    """Record the frozen and the trainable parameter counts next to the trial's accuracy."""
    block = pretrained(spec)
    if block is None or not block.get("freeze"):
        return None
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    context.metrics["frozen_params"] = float(frozen)
    context.metrics["trainable_params"] = float(sum(p.numel() for p in model.parameters()) - frozen)
    return None
