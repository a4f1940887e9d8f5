"""Backends by name. A new backend is a :class:`~searchcore.engine.backends.base.Backend` subclass in a
module of its own, added to :data:`BACKENDS`; the module loads only when its backend runs."""

from __future__ import annotations

from collections.abc import Callable

from searchcore.engine.backends.base import Backend
from searchcore.engine.settings import Settings
from searchcore.errors import UsageError


def _optuna() -> type[Backend]:
    from searchcore.engine.backends.optuna_search import OptunaBackend

    return OptunaBackend


def _ray() -> type[Backend]:
    from searchcore.engine.backends.ray import RayBackend  # imports no Ray until a Ray search runs

    return RayBackend


BACKENDS: dict[str, Callable[[], type[Backend]]] = {"optuna": _optuna, "ray": _ray}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; one-line error listing the others."""
    if name not in BACKENDS:
        raise UsageError(f"--backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[name]()()


def validate_settings(s: Settings) -> Backend:
    """The chosen backend, once the settings hold no other backend's flags and pass its own checks."""
    chosen = get_backend(s.backend)
    for name in BACKENDS:
        if name == s.backend:
            continue
        for key, flag in get_backend(name).flags.items():
            if getattr(s, key, None) not in (None, False):
                raise UsageError(f"{flag} is for --backend {name}")
    chosen.check(s)
    return chosen
