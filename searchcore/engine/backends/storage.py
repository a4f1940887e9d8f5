"""Study storage: URLs, the default local stores, and a cross-process lock for budget checks.

The budget is the search's total across restarts and workers. A worker takes the lock,
counts the trials that use up budget, asks for a new trial and releases the lock, so N
workers on one study never over-run it. The lock is a file lock for local stores, an
advisory lock in PostgreSQL and a named lock in MySQL: the database's own tools.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from searchcore.errors import UsageError

DEFAULT_STORAGE = "sqlite:///searchcore.db"
JOURNAL_FILE = "searchcore.journal"
SCHEMES = ("sqlite", "postgresql", "mysql", "journal")


def scheme(url: str) -> str:
    head = url.split("://", 1)[0] if "://" in url else ""
    return head.split("+", 1)[0]


def check_url(url: str, argument: str = "--storage") -> str:
    if scheme(url) not in SCHEMES:
        raise UsageError(f"{argument}: {url.split('://')[0] if '://' in url else url!r} is not a supported storage; use sqlite:///FILE, postgresql://..., mysql://... or journal:///FILE")
    return url


def driver_url(url: str) -> str:
    """Name the PostgreSQL driver the project installs (psycopg2): SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not a dependency, so the bare form would not connect."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None:
                return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``; ``journal:///FILE`` is Optuna's recommended store for many
    processes on one machine, SQLite gets a long busy timeout so concurrent writers wait."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    check_url(url)
    kind = scheme(url)
    for prefix in ("sqlite:///", "journal:///"):  # relative paths are resolved now, as MLflow's are
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            url = prefix + str(Path(url[len(prefix) :]).resolve())
    engine_kwargs: dict[str, Any] = {}
    if kind == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        if kind == "journal":  # (a folder, or a file in a missing folder, is the user's input too)
            return JournalStorage(JournalFileBackend(url[len("journal:///") :]))
        storage = optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine_kwargs)
        if kind == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except Exception as e:  # a bad URL or an unreachable server is the user's input
        from searchcore.track.tracking import mask_url

        raise UsageError(f"--storage {mask_url(url)}: cannot open the study storage: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from None


def _sqlite_wal(engine: Any) -> None:
    """Write-ahead logging: one study write costs ~3 ms instead of ~17 ms here (fewer fsyncs), and
    readers never block the writer. A power cut may lose the last commits, never corrupt the file."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the listener reconnect with it


def default_storage(workers: int, name: str, directory: Path | None = None) -> str:
    """SQLite beside the MLflow store; for several local workers Optuna's journal file instead,
    unless the study already lives in the SQLite file (a resumed search keeps its store)."""
    directory = directory or Path.cwd()
    sqlite_url = f"sqlite:///{directory / 'searchcore.db'}"
    journal = directory / JOURNAL_FILE
    if journal.exists() and _study_in(f"journal:///{journal}", name):
        return f"journal:///{journal}"
    if workers > 1 and not _study_in(sqlite_url, name):
        return f"journal:///{journal}"
    return sqlite_url


def _study_in(url: str, name: str) -> bool:
    import optuna

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return False
    try:
        return any(s.study_name == name for s in optuna.get_all_study_summaries(open_storage(url)))
    except Exception:
        return False


_local = threading.Lock()


@contextlib.contextmanager
def budget_lock(url: str, name: str) -> Iterator[None]:
    """Mutual exclusion between all workers of one study, wherever they run."""
    kind = scheme(url)
    key = int.from_bytes(hashlib.sha256(f"searchcore:{name}".encode()).digest()[:8], "big", signed=True)
    if kind in ("sqlite", "journal"):
        from filelock import FileLock

        path = url.split(":///", 1)[1]
        with _local, FileLock(f"{path}.{hashlib.sha256(name.encode()).hexdigest()[:8]}.lock"):
            yield
        return
    if kind in ("postgresql", "mysql"):
        import sqlalchemy

        engine = _engine(url)
        with _local, engine.connect() as conn:
            if kind == "postgresql":
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            else:
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, 600)"), {"k": f"searchcore:{name}"[:64]})
            try:
                yield
            finally:
                if kind == "postgresql":
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                else:
                    conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:k)"), {"k": f"searchcore:{name}"[:64]})
        return
    with _local:
        yield


_engines: dict[str, Any] = {}


def _engine(url: str) -> Any:
    import sqlalchemy

    if url not in _engines:
        _engines[url] = sqlalchemy.create_engine(driver_url(url), poolclass=sqlalchemy.pool.NullPool)
    return _engines[url]


def host_id() -> str:
    import socket

    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
