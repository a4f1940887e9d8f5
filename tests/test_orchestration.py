"""One orchestration: every backend, the worker and the report resolve a search and build its runner
the same way. Pins the drift the three copies had (name check, sampler epochs, overrides skipping the
space file's rules, a deterministic search retrained non-deterministically), the backend registry,
and the old import paths third-party code uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from searchcore.engine import samplers
from searchcore.engine.api import run_search
from searchcore.engine.backends import BACKENDS, get_backend, validate_settings
from searchcore.engine.backends.base import Backend
from searchcore.engine.results import ATTR_CONFIG, ATTR_SPACE
from searchcore.engine.settings import Settings, resolve_search
from searchcore.errors import UsageError
from searchcore.report.collect import runner_from_study


class Stop(Exception):
    """Raised by a stand-in to end a search at the point a test looks at."""


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_every_backend_refuses_a_bad_search_name_before_it_starts(small_space: Path, workdir: Path, backend: str) -> None:
    with pytest.raises(UsageError, match="'bad/name' is not a valid search name"):
        run_search(small_space, Settings(name="bad/name", backend=backend, progress=False))


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_a_command_line_value_meets_the_space_files_rule(small_space: Path, workdir: Path, backend: str) -> None:
    """``budget.epochs`` allows 1..10000 in a file; ``--epochs`` no longer slips past that check."""
    with pytest.raises(UsageError, match=r"^--epochs: 20000 is out of range; allowed: 1\.\.10000$"):
        run_search(small_space, Settings(epochs=20_000, backend=backend, progress=False))
    with pytest.raises(UsageError, match="^--pruner: 'sometimes' is not allowed"):
        resolve_search(small_space, Settings(pruner="sometimes"))


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_every_backend_gives_its_sampler_the_epochs(small_space: Path, workdir: Path, backend: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-fidelity samplers plan their rungs from the epochs: the Ray path used to leave them out."""
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(samplers, "make_sampler", spy)
    monkeypatch.setattr("searchcore.engine.backends.optuna_search.make_sampler", spy)
    with pytest.raises(Stop):
        run_search(small_space, Settings(epochs=7, backend=backend, progress=False, tracking_uri=f"sqlite:///{workdir / 'm.db'}"))
    assert seen[0]["epochs"] == 7


def test_the_report_rebuilds_a_deterministic_search_deterministically(small_space: Path) -> None:
    """``ablate`` and ``report`` retrain from the study's record: its training settings come along."""
    cfg = resolve_search(small_space, Settings(deterministic=True, name="det"))

    class Study:
        study_name = "det"
        user_attrs = {ATTR_CONFIG: cfg.as_dict(), ATTR_SPACE: cfg.text}

    runner = runner_from_study(Study(), threads=1)
    assert runner.train_config().deterministic is True
    assert runner.cfg.name == "det"


def test_backends_come_from_a_registry_and_refuse_each_others_flags() -> None:
    assert set(BACKENDS) == {"optuna", "ray"}
    assert all(isinstance(get_backend(name), Backend) for name in BACKENDS)
    with pytest.raises(UsageError, match="^--backend: unknown backend 'dask'; allowed: optuna, ray$"):
        validate_settings(Settings(backend="dask"))
    with pytest.raises(UsageError, match="^--address is for --backend ray$"):
        validate_settings(Settings(address="auto"))
    with pytest.raises(UsageError, match="^--workers is for --backend optuna"):
        validate_settings(Settings(backend="ray", workers=2))
    with pytest.raises(UsageError, match="^--workers: expected a positive integer, got 0$"):
        validate_settings(Settings(workers=0))


def test_old_import_paths_still_work() -> None:
    """Third-party plugins and scripts written before the packages moved keep importing."""
    import searchcore
    import searchcore.arch.improve
    import searchcore.arch.spec
    import searchcore.authoring.testing
    import searchcore.builtin.core
    import searchcore.plugins.hookspecs
    import searchcore.plugins.host
    from searchcore import build as old_build
    from searchcore import core, hookspecs, host, improve, spec, testing
    from searchcore.cli import main
    from searchcore.space import Dimension

    assert hookspecs is searchcore.plugins.hookspecs and host is searchcore.plugins.host
    assert spec is searchcore.arch.spec and improve is searchcore.arch.improve
    assert core is searchcore.builtin.core and testing is searchcore.authoring.testing
    assert searchcore.hookimpl is hookspecs.hookimpl and callable(searchcore.search) and callable(main)
    assert improve.copy_spec and Dimension and old_build.BuildContext and old_build.conv_block
    seed = core.seed_cnn([1, 8, 8], 10, {})
    assert old_build.build(seed)(__import__("torch").zeros(1, 1, 8, 8)).shape == (1, 10)  # the loaded plugins' blocks by default
