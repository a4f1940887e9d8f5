"""One trial from params to metrics, the same under every backend.

``TrialRunner.run`` turns a trial-like object into a spec, builds the model, trains or
evaluates it, and computes the objectives. It knows nothing of Optuna, Ray or MLflow:
backends pass ``report`` (which may raise to prune) and record the :class:`TrialOutcome`.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from typing import Any

from searchcore.engine.config import SpaceConfig
from searchcore.errors import Diverged, SearchcoreError
from searchcore.plugins.host import PluginHost
from searchcore.space import SearchSpace
from searchcore.train.outcome import FAILED, PRUNED, TAG_BASELINE, Pruned, TrialOutcome


class TrialRunner:
    """Holds what stays alive across trials in one worker: the space, the data, the objectives."""

    def __init__(self, cfg: SpaceConfig, host: PluginHost, space: SearchSpace, splits: Any, threads: int | None = None) -> None:
        self.cfg, self.host, self.space, self.splits = cfg, host, space, splits
        self.threads = threads
        objectives = host.catalog("objectives")
        self.objectives = []
        for name in cfg.objectives:
            if name not in objectives:
                from searchcore.errors import SpaceFileError

                raise SpaceFileError(cfg.source, f"objectives.{name}", f"unknown objective; available: {', '.join(sorted(objectives))}")
            self.objectives.append(objectives[name])
        evaluators = host.catalog("evaluators")
        if cfg.evaluator != "train" and cfg.evaluator not in evaluators:
            from searchcore.errors import SpaceFileError

            raise SpaceFileError(cfg.source, "search.evaluator", f"unknown evaluator {cfg.evaluator!r}; available: train, {', '.join(sorted(evaluators))}")
        self.evaluator = evaluators.get(cfg.evaluator)
        self.baseline_params = space.off_params()
        gc.freeze()  # imports, plugins and data stay for the worker's life: trials' collections skip them (release_memory)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def is_baseline(self, params: dict[str, Any]) -> bool:
        """Whether ``params`` are the unimproved backbone (every plugin off): the trial every search
        runs first, which no pruner stops and which the search's winner must beat."""
        return params == self.baseline_params

    def train_config(self, epochs: int | None = None, seed: int | None = None) -> Any:
        from searchcore.train.trainer import TrainConfig

        return TrainConfig(epochs=epochs or self.cfg.epochs, seed=self.cfg.seed if seed is None else seed, threads=self.threads, **self.cfg.train)

    def run(self, trial: Any, number: int, report: Callable[[int, dict[str, float]], None],
            sampled: Callable[[], None] | None = None) -> TrialOutcome:
        """Sample, build, train, score. Never raises for a trial's own failure: the outcome says FAILED.
        ``sampled`` runs once the architecture is chosen, before training (the backend records it)."""
        out = TrialOutcome(number=number, params={}, start=time.time())
        try:
            spec, params = self.space.to_spec(trial)
            out.params, out.spec = params, spec
            if self.is_baseline(params):
                out.tags[TAG_BASELINE] = "true"
            if sampled is not None:
                sampled()
            out.metrics = self.evaluate(spec, report, out.history)
            out.values = [float(out.metrics[n]) for n in self.names]
        except Pruned as e:
            out.state, out.reason = PRUNED, str(e) or "pruned"
        except Diverged as e:
            out.state, out.reason = PRUNED, f"diverged: {e}" if str(e) else "diverged"
        except Exception as e:  # isolation: a plugin bug fails this trial only
            out.state, out.reason = FAILED, failure_reason(e)
            out.traceback = traceback.format_exc()
        finally:
            out.end = time.time()
            release_memory()
        return out

    def evaluate(self, spec: dict, report: Callable[[int, dict[str, float]], None], history: list[dict[str, float]]) -> dict[str, float]:
        """Train (or look up) ``spec``; each epoch's metrics are appended to ``history`` before
        ``report`` runs, so a pruned trial keeps its learning curve."""

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            history.append({"epoch": epoch, **metrics})
            report(epoch, metrics)

        if self.evaluator is not None:
            return dict(self.evaluator(spec=spec, config=self.cfg, report=on_epoch))
        from searchcore.train.fit import fit
        from searchcore.train.objectives import ObjectiveContext

        # build, plugins' training plans (distillation loss, pruning + fine-tuning), train
        fitted = fit(spec, self.host, self.splits, self.train_config(), self.space.options, report=on_epoch)
        model, result = fitted.model, fitted.result
        history.extend(fitted.history)  # epochs after the main run (fine-tuning), not reported to the pruner
        metrics: dict[str, float] = {"val_accuracy": result.val_accuracy, "best_val_accuracy": result.best_val_accuracy}
        ctx = ObjectiveContext(model=model, splits=self.splits, result=result, spec=spec, options={}, device=None)
        for obj in self.objectives:
            ctx.options = self.cfg.objectives.get(obj.name, {})
            metrics[obj.name] = float(obj.fn(ctx))
        if "params" not in metrics:
            metrics["params"] = float(sum(p.numel() for p in model.parameters()))
        if "macs" not in metrics:  # for MLflow's MACs column: one forward pass here beats a model built again after the search
            counted = _macs(model, spec)
            if counted is not None:
                metrics["macs"] = counted
        for key, value in fitted.metrics.items():  # plugins' records (teacher_val_accuracy, sparsity ...)
            metrics.setdefault(key, value)
        del model, ctx, result, fitted
        return metrics


def _macs(model: Any, spec: dict) -> float | None:
    """MACs of the trained model; None where the forward pass cannot be counted (the trial still
    stands, and the MLflow view counts it after the search, as for a pruned trial)."""
    from searchcore.train.objectives import count_macs

    try:
        return float(count_macs(model, spec["input"]))
    except Exception:  # a block FlopCounterMode cannot follow must not fail a trained trial
        return None


def failure_reason(e: BaseException) -> str:
    """One line for the trial's tag: out-of-memory errors are named as such, whatever the device."""
    text = " ".join(str(e).split())
    if isinstance(e, MemoryError) or "out of memory" in text.lower() or type(e).__name__ == "OutOfMemoryError":
        return "out of memory"
    if isinstance(e, SearchcoreError):
        return text
    return f"{type(e).__name__}: {text}"[:500]


FULL_COLLECTION_EVERY = 50  # trials between collections that also walk the long-lived (frozen) objects
_released = 0


def release_memory() -> None:
    """Drop what a finished trial left behind: Python garbage and, on a GPU, cached blocks.

    A full collection walks every tracked object, and a worker that imported torch, Optuna and
    MLflow holds about half a million: ~0.25 s of CPU, 40% of a small trial (benchmarks/RESULTS.md).
    So the survivors of each collection are frozen (``gc.freeze``) and the next one walks only what
    the trials created since; every ``FULL_COLLECTION_EVERY`` trials they are unfrozen first, so
    cycles among once-long-lived objects are still freed. Every trial's own garbage is collected.
    """
    global _released
    _released += 1
    if _released % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing memory must never fail a search
        pass


# --- the one way to a runner: a search, a worker, an isolated trial, a Ray trial and the report ---------------

RECORDED = ("trials", "epochs", "timeout", "sampler", "pruner", "seed", "name", "train")  # what a study keeps of the settings


def prepare(cfg: SpaceConfig, host: PluginHost, threads: int | None, splits: Any = None) -> TrialRunner:
    """Data, space and runner: what a worker keeps alive across trials. ``splits``: data already
    loaded elsewhere (the Ray driver ships small datasets to its workers)."""
    from searchcore.engine.config import resolve

    if splits is None and cfg.dataset is not None:
        splits = load_splits(cfg, host)
    shape, classes = (cfg.input or splits.input_shape, cfg.classes or splits.classes) if splits is not None else dataset_shape(cfg, host)
    space = resolve(cfg, host, shape, classes)
    return TrialRunner(cfg, host, space, splits, threads=threads)


def config_from_study(space_text: str, recorded: dict[str, Any], study: str) -> SpaceConfig:
    """The configuration a search ran with, rebuilt from what its study recorded: the space file's
    text and the resolved settings (training settings included, so a --deterministic search stays so)."""
    from searchcore.engine.config import parse_space

    cfg = parse_space(space_text, f"study {study}")
    for key in RECORDED:
        setattr(cfg, key, recorded.get(key, getattr(cfg, key)))
    return cfg


def dataset_shape(cfg: Any, host: Any) -> tuple[list[int], int]:
    """Input shape and classes: from the space file, or by loading the dataset (cached)."""
    if cfg.input is not None and cfg.classes is not None:
        return cfg.input, cfg.classes
    splits = load_splits(cfg, host)
    return cfg.input or splits.input_shape, cfg.classes or splits.classes


def load_splits(cfg: Any, host: Any) -> Any:
    from searchcore.errors import SpaceFileError

    ds = dict(cfg.dataset)
    name = ds.pop("name")
    kind, _, arg = name.partition(":")
    loaders = host.catalog("datasets")
    if kind not in loaders:
        raise SpaceFileError(cfg.source, "dataset.name", f"unknown dataset {kind!r}; available: {', '.join(sorted(loaders))}")
    return loaders[kind](
        arg or None,
        root=ds.get("root"),
        download=ds.get("download", False),
        seed=cfg.seed,
        val_fraction=ds.get("val_fraction", 0.2),
        test_fraction=ds.get("test_fraction", 0.2),
    )
