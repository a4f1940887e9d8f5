"""Build a spec, let plugins shape its training, train it: the one path every trained model takes.

Why one function: a trial, a retrained winner, the baseline and ``searchcore train`` must
train a spec the same way, or a winner registered after the search would not be the model
the search scored. Plugins take part through the ``searchcore_training`` hook: a distillation
plugin replaces the loss, a pruning plugin prunes and fine-tunes after training, and any of
them adds entries to ``context.metrics`` that join the trial's record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from searchcore.errors import PluginError, SearchcoreError, UsageError
from searchcore.train.data import Splits
from searchcore.train.trainer import LossFn, Report, TrainConfig, TrainResult, evaluate, train_model

HOOK = "searchcore_training"
PLAN_KEYS = ("loss_fn", "after")


@dataclass
class TrainingContext:
    """What a ``searchcore_training`` plugin may use while its model trains.

    ``final`` is True when the model is retrained to be reported on the test split (a
    winner, ``searchcore train``), so a plugin may add test-split figures then and only then.
    """

    host: Any
    splits: Splits
    config: TrainConfig
    spec: dict
    final: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    result: TrainResult | None = None

    def evaluate(self, model: nn.Module, split: str = "val") -> float:
        """Accuracy of ``model`` on the val (or, for final reports, test) split."""
        if split not in ("val", "test"):
            raise UsageError(f"evaluate: split must be 'val' or 'test', got {split!r}")
        x, y = (self.splits.val_x, self.splits.val_y) if split == "val" else (self.splits.test_x, self.splits.test_y)
        return evaluate(model, x, y)

    def train(self, model: nn.Module, epochs: int, lr_scale: float = 1.0, loss_fn: LossFn | None = None) -> TrainResult:
        """Train ``epochs`` more epochs (fine-tuning after the main run); they extend the history.

        The model's last val accuracy becomes the trial's: after pruning, the model that is
        scored is the pruned one, not the one before.
        """
        done = self.config.epochs + len(self.history)
        cfg = dataclasses.replace(self.config, epochs=epochs, lr=self.config.lr * lr_scale, seed=self.config.seed + done)
        result = train_model(model, self.splits, cfg, loss_fn=loss_fn)
        self.history.extend({"epoch": done + i + 1, **row} for i, row in enumerate(result.history))
        self.result = result
        return result


@dataclass
class Fitted:
    """A trained model with what its plugins recorded; ``history`` holds epochs beyond the main run."""

    model: nn.Module
    result: TrainResult
    metrics: dict[str, float]
    history: list[dict[str, float]]


def training_plugins(host: Any) -> list[str]:
    """Loaded plugins implementing ``searchcore_training``, in plugin-name order."""
    return sorted(impl.plugin_name for impl in getattr(host.pm.hook, HOOK).get_hookimpls())


def plugin_options(host: Any, name: str, options: dict[str, dict] | None) -> dict[str, Any]:
    """The space's options for an enabled plugin, else its defaults: the spec decides whether it acts."""
    if options is not None and name in options:
        return options[name]
    return host.resolve_options(name, {}, "<defaults>")


def fit(
    spec: dict,
    host: Any,
    splits: Splits,
    config: TrainConfig,
    options: dict[str, dict] | None = None,
    report: Report | None = None,
    final: bool = False,
    init_state: dict | None = None,
) -> Fitted:
    """Build ``spec`` (seeded by ``config.seed``), start from ``init_state`` if given, and train it with the plugins' plans."""
    from searchcore.arch.build import build

    model = build(spec, host.blocks(), seed=config.seed)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as e:
            raise UsageError(f"the weights do not fit the spec: {' '.join(str(e).split())[:300]}") from None
    ctx = TrainingContext(host, splits, config, spec, final=final)
    loss_fn, loss_owner = None, ""
    afters: list[tuple[str, Callable[[nn.Module, TrainingContext], Any]]] = []
    for name in training_plugins(host):
        got = host.call_each(HOOK, plugins=[name], model=model, spec=spec, options=plugin_options(host, name, options), context=ctx)
        plan = got[0][1] if got else None
        if plan is None:
            continue
        package = host.infos[name].package
        if not isinstance(plan, dict) or set(plan) - set(PLAN_KEYS):
            raise PluginError(name, package, f"{HOOK} returned {plan!r}; expected None or a dict with keys {', '.join(PLAN_KEYS)}")
        if plan.get("loss_fn") is not None:
            if loss_fn is not None:
                raise UsageError(f"plugins {loss_owner!r} and {name!r} both replace the training loss for this spec; enable one of them")
            loss_fn, loss_owner = plan["loss_fn"], name
        if plan.get("after") is not None:
            afters.append((name, plan["after"]))
    ctx.result = train_model(model, splits, config, report=report, loss_fn=loss_fn)
    for name, after in afters:
        try:
            after(model, ctx)
        except SearchcoreError:
            raise
        except Exception as e:  # name the plugin: its after-training step failed, not the trainer
            raise PluginError(name, host.infos[name].package, f"after training: {type(e).__name__}: {e}") from e
    metrics = {k: float(v) for k, v in ctx.metrics.items()}
    return Fitted(model, ctx.result, metrics, ctx.history)


__all__ = ["TrainingContext", "Fitted", "fit", "training_plugins", "plugin_options"]
