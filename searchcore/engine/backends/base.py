"""The seam where a backend plugs in: a small class that runs a resolved search (like Optuna's
``BaseSampler``/``BaseStorage``), chosen by name from :data:`searchcore.engine.backends.BACKENDS`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from searchcore.engine.config import SpaceConfig
from searchcore.engine.results import SearchResult
from searchcore.engine.settings import Settings

# called once at the end of a search with (study, runner, tracker, parent_run_id, result); never raises
Reporter = Callable[[Any, Any, Any, str, SearchResult], None]


class Backend(ABC):
    """Runs the trials of one search and ends it the same way as every other backend."""

    name: ClassVar[str]
    # Settings fields only this backend reads, with their flag: any other backend refuses them
    flags: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def check(self, s: Settings) -> None:
        """Refuse bad values of this backend's settings before anything starts (imports nothing heavy)."""

    @abstractmethod
    def run(self, cfg: SpaceConfig, s: Settings, report: Reporter | None, t0: float) -> SearchResult:
        """Run (or resume) the search ``cfg`` describes; ``t0`` is when the search started."""
