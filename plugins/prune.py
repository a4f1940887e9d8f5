"""Pruning: after training, zero the least important weights, fine-tune, and record what it bought.

Two methods, both with ``torch.nn.utils.prune``:

- ``magnitude``: global unstructured L1 pruning over every Conv2d and Linear weight, so exactly
  ``amount`` of those weights become zero wherever they matter least.
- ``structured``: L2 channel pruning, ``amount`` of each Conv2d's output channels (their biases
  too), the shape a channel-slimming export can cut away.

The amount and the fine-tuning epochs are searched; the masks stay on while fine-tuning, so the
pruned weights stay zero, and are made permanent afterwards. Each trial records ``sparsity``,
nonzero ``params_before``/``params_after``, CPU ``latency_before_ms``/``latency_after_ms`` and the
val accuracy before pruning. Dense kernels do not skip zeros: unstructured sparsity shrinks a
compressed file, not the latency, and the records show it honestly.

Opt-in: with ``enabled: false`` (the default) the plugin declares nothing. The choice is recorded
in the spec as a ``prune.apply`` block at the end of the head (an identity at inference).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.nn.utils import prune

from searchcore.arch.build import BuildContext
from searchcore.arch.improve import copy_spec
from searchcore.errors import UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

BLOCK = "prune.apply"
BLOCK_KEYS = {"method", "amount", "finetune", "lr_scale"}
METHODS = ("magnitude", "structured")


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"enabled": False, "amounts": [0.0, 0.3, 0.5, 0.7, 0.9], "methods": list(METHODS), "finetune": [1, 2], "finetune_lr_scale": 0.5}


@hookimpl
def searchcore_dimensions(options: dict) -> list[Dimension]:
    if not options["enabled"]:
        return []
    amounts, methods = options["amounts"], options["methods"]
    if any(not 0.0 <= a < 1.0 for a in amounts):
        raise UsageError(f"plugin prune: amounts must be in [0, 1), got {amounts}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"plugin prune: unknown method {unknown[0]!r}; methods: {', '.join(METHODS)}")
    if any(n < 0 for n in options["finetune"]):
        raise UsageError(f"plugin prune: finetune epochs must be >= 0, got {options['finetune']}")
    on = [a for a in amounts if a > 0]
    dims = [Dimension.categorical("prune.amount", amounts, off=0.0 if 0.0 in amounts else None, help="fraction of weights (or channels) pruned")]
    if on:
        dims.append(Dimension.categorical("prune.method", methods, condition=("prune.amount", on), help="what is pruned"))
        dims.append(Dimension.categorical("prune.finetune", options["finetune"], condition=("prune.amount", on), help="fine-tuning epochs after pruning"))
    return dims


@hookimpl
def searchcore_transform(spec: dict, params: dict, options: dict) -> dict | None:
    amount = params.get("prune.amount", 0.0)
    if not amount:
        return None
    spec = copy_spec(spec)
    marker = {"type": BLOCK, "method": params["prune.method"], "amount": float(amount), "finetune": params["prune.finetune"],
              "lr_scale": float(options["finetune_lr_scale"])}
    spec["head"] = spec["head"] + [marker]
    return spec


def apply_block(in_ch: int, o: dict, ctx: BuildContext) -> tuple[nn.Module, int]:
    """Pruning happens after training; in the built model the block is an identity that records it."""
    unknown = set(o) - BLOCK_KEYS
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(BLOCK_KEYS))}")
    if o.get("method") not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {o.get('method')!r}")
    if not 0.0 <= float(o.get("amount", -1)) < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {o.get('amount')!r}")
    return nn.Identity(), in_ch


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(BLOCK, apply_block)


# --- pruning itself --------------------------------------------------------------------------


def targets(model: nn.Module, method: str) -> list[tuple[nn.Module, str]]:
    """The (module, parameter) pairs a method prunes: every conv and linear weight, or the convs' output channels."""
    kinds = (nn.Conv2d, nn.Linear) if method == "magnitude" else (nn.Conv2d,)
    return [(m, "weight") for m in model.modules() if isinstance(m, kinds)]


def nonzero(model: nn.Module) -> int:
    """Parameters that are not zero: what a sparse format would store."""
    return int(sum(int((p != 0).sum()) for p in model.parameters()))


def sparsity(pairs: list[tuple[nn.Module, str]]) -> float:
    """Fraction of zeros in the pruned weights (the masked ones, while masks are on)."""
    total = sum(getattr(m, n).numel() for m, n in pairs)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in pairs)
    return zeros / max(1, total)


def apply(model: nn.Module, method: str, amount: float) -> list[tuple[nn.Module, str]]:
    """Put pruning masks on ``model``; returns every (module, parameter) that got one."""
    pairs = targets(model, method)
    if not pairs:
        raise UsageError(f"prune: the model has no {'conv or linear' if method == 'magnitude' else 'conv'} layer to prune")
    if method == "magnitude":
        prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)
        return pairs
    masked = list(pairs)
    for m, _ in pairs:
        prune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
        if m.bias is not None:
            keep = m.weight_mask.flatten(1).amax(dim=1)
            prune.custom_from_mask(m, "bias", keep)
            masked.append((m, "bias"))
    return masked


def _latency(model: nn.Module, context: Any) -> float:
    from searchcore.train.objectives import ObjectiveContext, latency_ms

    return latency_ms(ObjectiveContext(model=model, splits=context.splits, options={"repeats": 10, "warmup": 2}))


@hookimpl
def searchcore_training(spec: dict) -> dict | None:
    marker = next((b for b in spec["head"] if b["type"] == BLOCK), None)
    if marker is None:
        return None
    method, amount, finetune = marker["method"], float(marker["amount"]), int(marker["finetune"])
    lr_scale = float(marker.get("lr_scale", 1.0))

    def after(model: nn.Module, context: Any) -> None:
        m = context.metrics
        m["val_accuracy_before_prune"] = context.result.val_accuracy
        m["params_before"] = float(nonzero(model))
        m["latency_before_ms"] = _latency(model, context)
        masked = apply(model, method, amount)
        if finetune > 0:
            context.train(model, finetune, lr_scale=lr_scale)
        weights = [(mod, n) for mod, n in masked if n == "weight"]
        m["sparsity"] = sparsity(weights)
        for mod, n in masked:
            prune.remove(mod, n)
        m["params_after"] = float(nonzero(model))
        m["latency_after_ms"] = _latency(model, context)
        if finetune == 0:
            acc = context.evaluate(model, "val")
            context.result = dataclasses.replace(context.result, val_accuracy=acc, best_val_accuracy=acc)

    return {"after": after}


__all__ = ["apply", "targets", "sparsity", "nonzero"]
