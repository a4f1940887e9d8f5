"""The default trainer: one lean loop over whole-tensor splits, the same on CPU and GPU.

It trains with AdamW or Nesterov SGD under a per-step cosine schedule, evaluates val accuracy
after every epoch and hands the epoch's metrics to ``report`` (which may prune the trial by
raising). A NaN or infinite loss raises :class:`~searchcore.errors.Diverged`, so a blown-up
trial is recorded as such instead of scoring as a bad-but-valid architecture. On CUDA it uses
bf16 autocast and channels_last; on CPU plain fp32.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from searchcore.errors import Diverged, UsageError
from searchcore.train.data import Splits

OPTIMIZERS = ("adamw", "sgd")
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Report = Callable[[int, dict[str, float]], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """How to train one candidate; every field is checked up front so a typo fails before any work."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int | None = None
    deterministic: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> UsageError:
            return UsageError(f"train config: {name} must be {allowed}, got {getattr(self, name)!r}")

        if not _is_int(self.epochs) or self.epochs < 1:
            raise bad("epochs", "an integer >= 1")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise bad("batch_size", "an integer >= 1")
        if not _is_number(self.lr) or self.lr <= 0:
            raise bad("lr", "a finite number > 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", " or ".join(repr(o) for o in OPTIMIZERS))
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "a finite number >= 0")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", "a number in [0, 1)")
        if not _is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise bad("threads", "null or an integer >= 1")
        if not isinstance(self.deterministic, bool):
            raise bad("deterministic", "true or false")
        if not isinstance(self.device, str) or not _valid_device(self.device):
            raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class TrainResult:
    """What one training run produced; ``history`` holds the metrics passed to ``report``, one dict per epoch."""

    history: list[dict[str, float]] = field(default_factory=list)
    val_accuracy: float = 0.0
    best_val_accuracy: float = 0.0
    seconds: float = 0.0
    device: str = "cpu"


def _valid_device(name: str) -> bool:
    if name in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = name.partition(":")
    return prefix == "cuda" and index.isdigit()


def pick_device(requested: str = "auto") -> torch.device:
    """The device to train on: ``auto`` takes CUDA when present, else the CPU; asking for absent CUDA is an error."""
    if not _valid_device(requested):
        raise UsageError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {requested!r} requested but CUDA is not available; use device 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def set_threads(n: int | None) -> None:
    """Cap torch's CPU threads so trials running side by side do not oversubscribe the cores; None leaves it.

    The inter-op pool can only be sized before its first use; later calls keep its size.
    """
    if n is None:
        return
    if not _is_int(n) or n < 1:
        raise UsageError(f"threads must be null or an integer >= 1, got {n!r}")
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare_inputs(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
) -> float:
    """Accuracy in [0, 1] of ``model`` on ``(x, y)``: eval mode, no grad, the training mode restored afterwards."""
    if len(x) == 0:
        raise UsageError("evaluate: the split is empty; use a val/test fraction > 0")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.no_grad(), _autocast(device):
            for start in range(0, len(x), batch_size):
                logits = model(_prepare_inputs(x[start : start + batch_size], device))
                target = y[start : start + batch_size].to(device, non_blocking=True)
                correct += (logits.argmax(dim=1) == target).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(x)


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device) -> Iterator[None]:
    """Turn on deterministic kernels for the duration of a run and put the previous settings back."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if device.type == "cuda" and cublas is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS needs a fixed workspace
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = benchmark
        if device.type == "cuda" and cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weights only: decaying biases and norm scales just pulls them towards zero for nothing."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    if not decay and not no_decay:
        raise UsageError("train: the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch bounds of one epoch; a trailing batch of a single example is dropped (BatchNorm cannot train on it)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds.pop()
    return bounds


def train_model(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    report: Report | None = None,
    loss_fn: LossFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``splits.train`` and score it on ``splits.val`` after every epoch.

    ``report(epoch, metrics)`` (epoch from 1) receives ``train_loss``, ``val_accuracy``, ``lr`` and
    ``epoch_seconds``; whatever it raises (``optuna.TrialPruned``) propagates. ``loss_fn(logits,
    targets, inputs)`` replaces the default label-smoothed cross-entropy, e.g. for distillation.
    Randomness comes only from ``cfg.seed``; the caller's global RNG state is left untouched.
    The model is left on the training device, in eval mode.
    """
    if len(splits.train_x) == 0:
        raise UsageError(f"train: dataset {splits.name!r} has an empty train split")
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    started = time.perf_counter()
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=devices), _deterministic(cfg.deterministic, device):
            torch.manual_seed(cfg.seed)
            history = _fit(model, splits, cfg, device, report, loss_fn)
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    accuracies = [h["val_accuracy"] for h in history]
    return TrainResult(
        history=history,
        val_accuracy=accuracies[-1],
        best_val_accuracy=max(accuracies),
        seconds=time.perf_counter() - started,
        device=str(device),
    )


def _fit(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    device: torch.device,
    report: Report | None,
    loss_fn: LossFn | None,
) -> list[dict[str, float]]:
    """The loop itself; everything it allocates (optimizer state, device copies) dies when it returns."""
    cuda = device.type == "cuda"
    if cuda:
        model.to(device, memory_format=torch.channels_last)
    else:
        model.to(device)
    train_x = splits.train_x.to(device, non_blocking=True)
    train_y = splits.train_y.to(device, non_blocking=True)
    val_x, val_y = splits.val_x.to(device, non_blocking=True), splits.val_y.to(device, non_blocking=True)
    smoothing = cfg.label_smoothing

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)

    criterion = loss_fn or cross_entropy

    n = len(train_x)
    bounds = _batches(n, cfg.batch_size)
    seen = bounds[-1][1]
    optimizer = _optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * len(bounds))
    history: list[dict[str, float]] = []
    try:
        for epoch in range(1, cfg.epochs + 1):
            tic = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch)).to(device)
            total = torch.zeros((), dtype=torch.float32, device=device)
            lr = optimizer.param_groups[0]["lr"]
            for start, stop in bounds:
                idx = order[start:stop]
                inputs, targets = train_x[idx], train_y[idx]
                if cuda and inputs.dim() == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with _autocast(device):
                    loss = criterion(model(inputs), targets, inputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                total += loss.detach().float() * (stop - start)
            train_loss = total.item() / seen
            if not math.isfinite(train_loss):
                raise Diverged(f"training diverged in epoch {epoch}: the train loss is {train_loss}; try a lower lr")
            metrics = {
                "train_loss": train_loss,
                "val_accuracy": evaluate(model, val_x, val_y, device=device),
                "lr": float(lr),
                "epoch_seconds": time.perf_counter() - tic,
            }
            history.append(metrics)
            if report is not None:
                report(epoch, metrics)
    finally:
        optimizer.zero_grad(set_to_none=True)  # gradients are as big as the model: do not keep them
    model.eval()
    return history
