"""One place resolves a search: the space file, then the command line's overrides through the same
validators, the name check and ``--deterministic``; every backend starts from :func:`resolve_search`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from searchcore.engine.config import OVERRIDABLE, SpaceConfig, apply_overrides, load_space
from searchcore.errors import UsageError


@dataclass
class Settings:
    """Command-line overrides of the space file's values (None: keep the file's)."""

    trials: int | None = None
    epochs: int | None = None
    timeout: float | None = None
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    workers: int = 1
    storage: str | None = None
    tracking_uri: str | None = None
    name: str | None = None
    register: bool = True
    baseline: bool = True
    progress: bool = True
    threads: int | None = None
    fail_fast: int = 5
    top: int = 5
    isolate: bool = False
    deterministic: bool = False
    # Ray backend (--backend ray); None keeps its default, and each is refused with --backend optuna.
    backend: str = "optuna"
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int | None = None
    scheduler: str | None = None
    resume: bool = False
    ray_storage: str | None = None
    plots: bool = True  # plots, credit, diagram and Grad-CAM on the parent run at the end (searchcore.report.hook)


def apply_settings(cfg: SpaceConfig, s: Settings) -> SpaceConfig:
    """The overrides of ``s`` on ``cfg``, each validated by the space file's rule for that key."""
    return apply_overrides(cfg, {key: getattr(s, key) for key in OVERRIDABLE})


_NAME = re.compile(r"\w([\w.\- ]{0,98}[\w.\-])?")


def check_name(name: str, source: str) -> str:
    """A search name is an Optuna study, an MLflow experiment, a registered model and a value in
    MLflow filter strings: letters, digits, '_', '.', '-' and inner spaces, so none of them breaks."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{source}: {name!r} is not a valid search name; use up to 100 letters, digits, '_', '.', '-' or inner spaces")
    return name


def resolve_search(space_file: str | Path | None, s: Settings) -> SpaceConfig:
    """The configuration every backend searches with: file, validated overrides, checked name."""
    cfg = apply_settings(load_space(space_file), s)
    if s.deterministic:  # carried in the train config, so workers and isolated trials train the same way
        cfg.train = {**cfg.train, "deterministic": True}
    cfg.name = check_name(s.name or cfg.name or "searchcore", "--name" if s.name else f"{cfg.source}: name")
    return cfg


def sampler_source(cfg: SpaceConfig, s: Settings) -> str:
    """Where the sampler's name came from, for its error message."""
    return f"{cfg.source}: search.sampler" if s.sampler is None else "--sampler"
