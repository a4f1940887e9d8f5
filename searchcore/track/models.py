"""Registered models as inputs: a trained model and its spec from ``models:/NAME/VERSION``.

Why a module of its own: a pretrained base (plugin ``tvbase``), a distillation teacher (plugin
``distill``), ``searchcore train --weights`` and ``searchcore export`` all start from a model an
earlier search registered. They load it the same way, once per process (an LRU cache keyed by
URI and tracking store, since every trial of a search rebuilds the same base), and a missing or
malformed reference fails with one line naming the URI and the store.

Where the registry lives: an explicit tracking URI, else ``MLFLOW_TRACKING_URI``, else
searchcore's default ``sqlite:///mlflow.db``. A relative SQLite path is made absolute when it is
written into a spec, so the spec names the same store from any working directory.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchcore.errors import UsageError

URI = re.compile(r"models:/(?P<name>[^/]+)/(?P<version>\d+)")
CACHE_SIZE = 4  # loaded models kept per process: a base, a teacher, and room for a search's winner


@dataclass(frozen=True)
class Registered:
    """One registered model version: where it is and the spec it was built from."""

    uri: str
    tracking_uri: str
    name: str
    version: str
    run_id: str | None
    spec: dict


_CACHE: OrderedDict[tuple[str, str], tuple[Registered, Any]] = OrderedDict()


def parse_uri(uri: Any) -> tuple[str, str]:
    """``models:/NAME/VERSION`` -> ``(NAME, VERSION)``; anything else is a usage error."""
    m = URI.fullmatch(uri) if isinstance(uri, str) else None
    if m is None:
        raise UsageError(f"{uri!r}: expected a registered model as models:/NAME/VERSION")
    return m.group("name"), m.group("version")


def resolve_tracking(tracking_uri: str | None) -> str:
    """The tracking store to read: the explicit URI, else ``MLFLOW_TRACKING_URI``, else searchcore's default."""
    from searchcore.track.tracking import DEFAULT_TRACKING

    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING


def pinned_tracking(tracking_uri: str | None) -> str | None:
    """The URI to record in a spec: a relative SQLite path made absolute; credentials refused.

    Why refuse credentials: a spec is copied into MLflow tags and logs; passwords belong in
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, not in the architecture.
    """
    from searchcore.track.tracking import mask_url

    if tracking_uri is None:
        return None
    if mask_url(tracking_uri) != tracking_uri:
        raise UsageError(f"{mask_url(tracking_uri)}: a tracking URI in a spec must not hold credentials; use MLFLOW_TRACKING_USERNAME/PASSWORD")
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not tracking_uri[len(prefix):].startswith("/"):
        return prefix + str(Path(tracking_uri[len(prefix):]).resolve())
    return tracking_uri


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar while a spec or a model is fetched: it would cut into searchcore's own output."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _client(tracking: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking, registry_uri=tracking)


def lookup(uri: str, tracking_uri: str | None = None) -> Registered:
    """The model version and its spec (the ``spec.json`` of its run, else the spec tag), without loading weights."""
    name, version = parse_uri(uri)
    tracking = resolve_tracking(tracking_uri)
    key = (uri, tracking)
    if key in _CACHE:
        return _CACHE[key][0]
    client = _client(tracking)
    try:
        mv = client.get_model_version(name, version)
    except Exception:
        raise UsageError(f"{uri}: no such registered model version in {_masked(tracking)}") from None
    return Registered(uri, tracking, name, version, mv.run_id, _spec_of(client, mv, uri))


def _masked(uri: str) -> str:
    from searchcore.track.tracking import mask_url

    return mask_url(uri)


def _spec_of(client: Any, mv: Any, uri: str) -> dict:
    """The full spec from the run's ``spec.json``: the tag may be cut at 5000 characters."""
    from searchcore.arch.spec import decode, from_json
    from searchcore.track.tracking import TAG_SPEC

    if mv.run_id:
        try:
            with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
                path = client.download_artifacts(mv.run_id, "spec.json", tmp)
                return from_json(Path(path).read_text(), f"{uri} spec.json")
        except UsageError:
            raise
        except Exception:  # no artifact (registered by hand): fall back to the tag
            pass
    tag = (mv.tags or {}).get(TAG_SPEC)
    if not tag:
        raise UsageError(f"{uri}: this model version carries no searchcore spec")
    return decode(tag)


def load(uri: str, tracking_uri: str | None = None) -> tuple[Registered, Any]:
    """The registered model (a fresh copy on the CPU, eval mode) and its record; cached per process."""
    import mlflow.artifacts
    import mlflow.pytorch

    info = lookup(uri, tracking_uri)
    key = (uri, info.tracking_uri)
    if key not in _CACHE:
        client = _client(info.tracking_uri)
        try:
            source = client.get_model_version_download_uri(info.name, info.version)
            with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
                local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=info.tracking_uri)
                model = mlflow.pytorch.load_model(local, map_location="cpu")
        except Exception as e:
            raise UsageError(f"{uri}: cannot load the model from {_masked(info.tracking_uri)}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None
        _CACHE[key] = (info, model.cpu().eval())
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    info, model = _CACHE[key]
    return info, copy.deepcopy(model)


def clear_cache() -> None:
    """Forget loaded models (a test that rewrites a store under the same URI calls it)."""
    _CACHE.clear()


__all__ = ["Registered", "parse_uri", "resolve_tracking", "pinned_tracking", "lookup", "load", "clear_cache"]
