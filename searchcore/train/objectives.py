"""What a search can optimise: named, directed functions of a trained model and its data.

Each :class:`Objective` turns an :class:`ObjectiveContext` into one float. Built-ins cover
accuracy, size (parameters, MACs), CPU latency and robustness (Gaussian noise, FGSM). Costs are
measured by tools, not formulas: MACs come from ``torch.utils.flop_counter``, so any block a
plugin adds is counted without extra code.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from searchcore.errors import UsageError
from searchcore.train.data import Splits
from searchcore.train.trainer import TrainResult, evaluate

DIRECTIONS = ("maximize", "minimize")


@dataclass
class ObjectiveContext:
    """Everything an objective may look at; ``options`` are this objective's settings from the space file."""

    model: nn.Module
    splits: Splits
    result: TrainResult | None = None
    spec: dict | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: torch.device | str | None = None


@dataclass(frozen=True)
class Objective:
    """A named score with the direction Optuna should push it."""

    name: str
    direction: str
    fn: Callable[[ObjectiveContext], float]
    help: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"objective name must be a non-empty string, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"objective {self.name!r}: direction must be 'maximize' or 'minimize', got {self.direction!r}"
            )
        if not callable(self.fn):
            raise ValueError(f"objective {self.name!r}: fn must be callable")


# --- helpers -------------------------------------------------------------------------------


def _device(ctx: ObjectiveContext) -> torch.device:
    if ctx.device is not None:
        return torch.device(ctx.device)
    for tensor in ctx.model.parameters():
        return tensor.device
    return torch.device("cpu")


def _option(ctx: ObjectiveContext, objective: str, key: str, default: float, low: float = 0.0) -> float:
    """A numeric option, checked so a typo in a space file fails with the objective and key named."""
    value = ctx.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise UsageError(f"objective {objective!r}: option {key} must be a number >= {low}, got {value!r}")
    return value


def _batch_size(ctx: ObjectiveContext, objective: str) -> int:
    return int(_option(ctx, objective, "batch_size", 512, low=1))


# --- built-in objective functions ----------------------------------------------------------


def val_accuracy(ctx: ObjectiveContext) -> float:
    """The trainer's last-epoch val accuracy (measured afresh when there is no training result)."""
    if ctx.result is not None:
        return float(ctx.result.val_accuracy)
    return evaluate(ctx.model, ctx.splits.val_x, ctx.splits.val_y, device=_device(ctx))


def params(ctx: ObjectiveContext) -> float:
    """Every parameter, trainable or frozen: what the model costs to store."""
    return float(sum(p.numel() for p in ctx.model.parameters()))


def count_macs(model: nn.Module, input_shape: list[int] | tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one example of shape ``[C, H, W]`` (FLOPs / 2).

    Counted by ``FlopCounterMode`` on the model's own device, in eval mode (restored afterwards).
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def macs(ctx: ObjectiveContext) -> float:
    """MACs for one input of the dataset's shape."""
    return float(count_macs(ctx.model, ctx.splits.input_shape))


def latency_ms(ctx: ObjectiveContext) -> float:
    """Median CPU wall time in milliseconds of one batch-1 forward pass, after a warm-up.

    Measured with torch's current CPU thread count (see :func:`searchcore.train.trainer.set_threads`); a
    model on another device is timed on a CPU copy, so the original stays where it is.
    Options: ``repeats`` (default 20), ``warmup`` (default 3).
    """
    repeats = int(_option(ctx, "latency_ms", "repeats", 20, low=1))
    warmup = int(_option(ctx, "latency_ms", "warmup", 3))
    model = ctx.model
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if not on_cpu:
        model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    was_training = model.training
    model.eval()
    x = torch.randn(1, *ctx.splits.input_shape, generator=torch.Generator().manual_seed(0))
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                tic = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - tic)
    finally:
        model.train(was_training)
    return statistics.median(times) * 1000.0


def noise_accuracy(ctx: ObjectiveContext) -> float:
    """Val accuracy with seeded Gaussian noise of std ``sigma`` (default 0.1, normalised units) added to the inputs."""
    sigma = _option(ctx, "noise_accuracy", "sigma", 0.1)
    seed = int(_option(ctx, "noise_accuracy", "seed", 0))
    x = ctx.splits.val_x
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    noisy = x + sigma * noise.to(x.device)
    return evaluate(
        ctx.model, noisy, ctx.splits.val_y, batch_size=_batch_size(ctx, "noise_accuracy"), device=_device(ctx)
    )


def fgsm_inputs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Inputs moved by ``epsilon`` along the sign of the loss gradient (FGSM), in the model's eval mode.

    Gradients are taken with respect to the inputs only, so the model's ``.grad`` fields are untouched.
    """
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    moved = []
    try:
        with torch.enable_grad():
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(device).requires_grad_(True)
                loss = F.cross_entropy(model(xb), y[start : start + batch_size].to(device), reduction="sum")
                (grad,) = torch.autograd.grad(loss, xb)
                moved.append((xb + epsilon * grad.sign()).detach())
    finally:
        model.train(was_training)
    return torch.cat(moved)


def fgsm_accuracy(ctx: ObjectiveContext) -> float:
    """Val accuracy under an FGSM attack of size ``epsilon`` (default 0.05, normalised input units)."""
    epsilon = _option(ctx, "fgsm_accuracy", "epsilon", 0.05)
    batch_size = _batch_size(ctx, "fgsm_accuracy")
    device = _device(ctx)
    adversarial = fgsm_inputs(ctx.model, ctx.splits.val_x, ctx.splits.val_y, epsilon, batch_size, device)
    return evaluate(ctx.model, adversarial, ctx.splits.val_y, batch_size=batch_size, device=device)


BUILTIN: tuple[Objective, ...] = (
    Objective("val_accuracy", "maximize", val_accuracy, "val accuracy after the last training epoch"),
    Objective("params", "minimize", params, "number of parameters, trainable or not"),
    Objective("macs", "minimize", macs, "multiply-accumulates for one input (FlopCounterMode FLOPs / 2)"),
    Objective(
        "latency_ms", "minimize", latency_ms, "median CPU latency of one batch-1 forward pass (options: repeats)"
    ),
    Objective("noise_accuracy", "maximize", noise_accuracy, "val accuracy under Gaussian input noise (option: sigma)"),
    Objective("fgsm_accuracy", "maximize", fgsm_accuracy, "val accuracy under an FGSM attack (option: epsilon)"),
)


def register_builtin(register: Callable[[Objective], None]) -> None:
    """Register the built-in objectives through a ``searchcore_objectives`` register callback."""
    for objective in BUILTIN:
        register(objective)


def pareto_front(values: list[list[float]], directions: list[str]) -> list[int]:
    """Indices (ascending) of the points no other point dominates; NaN counts as the worst value.

    A point dominates another when it is at least as good in every objective and better in one;
    equal points do not dominate each other, so duplicates on the front all stay.
    """
    for d in directions:
        if d not in DIRECTIONS:
            raise UsageError(f"pareto_front: direction must be 'maximize' or 'minimize', got {d!r}")
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    points = []
    for i, row in enumerate(values):
        if len(row) != len(signs):
            raise UsageError(f"pareto_front: point {i} has {len(row)} values for {len(signs)} directions")
        points.append([-math.inf if math.isnan(v) else s * v for s, v in zip(signs, row, strict=True)])

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(p >= q for p, q in zip(a, b, strict=True)) and any(p > q for p, q in zip(a, b, strict=True))

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
