"""MLflow records: one experiment per search, a parent run, one child run per trial.

Trial runs are written in one batch when the trial ends, on a background thread, so
records cost the trial nothing and no run is ever left RUNNING by a killed process. If the
tracking server stops answering the search goes on (the study storage keeps everything),
warns once, and ``searchcore sync`` writes the missing runs later, exactly once: each run
carries the study name and trial number as tags and sync skips those already present.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from searchcore.train.outcome import COMPLETE, FAILED, PRUNED, TAG_BASELINE, TrialOutcome

TAG_STUDY = "searchcore.study"
TAG_TRIAL = "searchcore.trial"
TAG_STATE = "searchcore.state"
TAG_REASON = "searchcore.reason"
TAG_KIND = "searchcore.kind"
TAG_SPEC = "searchcore.spec"
TAG_HASH = "searchcore.spec_hash"
STATUS = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED"}
DEFAULT_TRACKING = "sqlite:///mlflow.db"
RETRY_AFTER_S = 60.0  # after a failed write, skip writes this long instead of waiting on a dead server each time
# MLflow's HTTP client retries a failed request 7 times with exponential backoff (minutes): right for
# rate limits, wrong for a server that is gone. searchcore's own defaults, unless the user set them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_CRED = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^@/\s]*))?@")


def mask_url(text: str) -> str:
    """Hide credentials in any URL inside ``text``: ``postgresql://u:secret@h`` -> ``postgresql://u:***@h``."""

    def repl(m: re.Match) -> str:
        pw = ":***" if m.group("pw") is not None else ""
        return f"{m.group('scheme')}{m.group('user')}{pw}@"

    return _CRED.sub(repl, text)


def absolute_uri(uri: str) -> str:
    """``sqlite:///relative.db`` -> an absolute path, resolved now: MLflow caches a store per URI
    for the life of the process, so a relative path would keep pointing at the first directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = mask_url(json.dumps(v) if isinstance(v, (list, tuple)) else str(v))[:6000]
    return out


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside a SQLite tracking store, artifacts go to ``mlartifacts/`` next to the database."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :]).resolve()
        return (db.parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9_.-]", "_", experiment)).as_uri()
    return None


def _check_sqlite_file(uri: str) -> None:
    """A SQLite store MLflow cannot open (a folder, a missing folder) fails here at once: MLflow
    itself retries creating the engine for about 100 s before it gives up."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri:
        return
    path = Path(uri[len(prefix) :].split("?", 1)[0])
    problem = "is a folder, not a database file" if path.is_dir() else "is in a folder that does not exist" if not path.parent.is_dir() else ""
    if problem:
        from searchcore.errors import UsageError

        raise UsageError(f"tracking URI {mask_url(uri)}: {path} {problem}; use sqlite:///FILE or http://HOST:PORT")


@contextlib.contextmanager
def _mlflow_quiet() -> Iterator[None]:
    """MLflow's warnings off for a block whose failure searchcore reports itself."""
    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class Tracker:
    """Writes a search's records to MLflow; all writes after ``start_search`` are asynchronous."""

    def __init__(self, tracking_uri: str = DEFAULT_TRACKING, experiment: str = "searchcore") -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri = absolute_uri(tracking_uri)
        _check_sqlite_file(tracking_uri)
        # the registry is this store too: left unset, MlflowClient takes the process-wide registry URI,
        # which an earlier log_model in this process pointed at another store
        try:
            with _mlflow_quiet():  # MLflow logs its own warning before raising; the one line below says it all
                self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        except Exception as e:  # an unsupported URI (a bare path, an unknown scheme) is the user's input
            from searchcore.errors import UsageError

            raise UsageError(f"tracking URI {mask_url(tracking_uri)}: MLflow cannot use it ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}); use sqlite:///FILE or http://HOST:PORT") from None
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._down_until = 0.0
        self.failed_writes = 0
        if tracking_uri.startswith(("http://", "https://")):
            for var, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(var, value)

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                self._experiment_id = self.client.create_experiment(
                    self.experiment_name, artifact_location=_artifact_location(self.uri, self.experiment_name)
                )
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # --- the search's parent run ---------------------------------------------------------------

    def start_search(self, study: str, config: dict[str, Any], space_text: str, info: dict[str, Any], run_id: str | None = None) -> str:
        """Create the parent run (or reuse ``run_id`` on resume) and log the search's configuration."""
        from mlflow.entities import Param, RunTag

        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study, tags={TAG_STUDY: study, TAG_KIND: "search"})
        params = flatten({"config": config, **info})
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], tags=[RunTag("mlflow.note.content", f"searchcore search {study}")])
        self.client.log_text(run.info.run_id, space_text, "space.yaml")
        self.client.log_text(run.info.run_id, json.dumps(config, indent=2, default=str), "config.json")
        from searchcore.track import mlflow_view

        objectives = list(config.get("objectives") or {}) or ["val_accuracy"]
        mlflow_view.save_view(self.client, self.experiment_id, objectives, mlflow_view.guess_directions(objectives))
        return run.info.run_id

    def log_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        """The search's outcome on its parent run: the top architectures, or the Pareto front."""
        name = "pareto_front.json" if summary.get("pareto") else "best.json"
        self.client.log_text(run_id, json.dumps(summary, indent=2, default=str), name)

    def end_search(self, run_id: str, status: str = "FINISHED", metrics: dict[str, float] | None = None) -> None:
        from mlflow.entities import Metric

        self.flush()
        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(run_id, status=status)

    # --- trial runs -------------------------------------------------------------------------

    def log_trial(self, outcome: TrialOutcome, study: str, parent_run_id: str, extra_tags: dict[str, str] | None = None) -> None:
        """Queue the trial's child run; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="searchcore-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((outcome, study, parent_run_id, dict(extra_tags or {})))

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every queued record is written (or given up on)."""
        deadline = time.time() + timeout
        while self._queue.unfinished_tasks and time.time() < deadline:
            time.sleep(0.01)

    @property
    def down(self) -> bool:
        """True for ``RETRY_AFTER_S`` after a failed write: MLflow is taken to be unreachable."""
        return time.time() < self._down_until

    def outage(self, e: BaseException) -> None:
        """Record that MLflow failed: warn once per process, and skip writes for a while."""
        self.failed_writes += 1
        self._down_until = time.time() + RETRY_AFTER_S
        if not self._warned:
            self._warned = True
            print(f"searchcore: warning: MLflow at {mask_url(self.uri)} is not answering ({type(e).__name__}); "
                  "the search goes on, run `searchcore sync` later to write the missing runs", file=sys.stderr)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if self.down:  # do not wait on a dead server for every trial; sync writes it later
                    self.failed_writes += 1
                    continue
                self.write_trial(*item)
            except Exception as e:  # tracking outage: the study storage keeps the trial; sync writes it later
                self.outage(e)
            finally:
                self._queue.task_done()

    def write_trial(self, o: TrialOutcome, study: str, parent_run_id: str, extra_tags: dict[str, str]) -> str:
        """Write one trial's child run synchronously, in as few calls as MLflow allows."""
        from mlflow.entities import Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from searchcore.arch.spec import encode, spec_hash, to_json
        from searchcore.track.mlflow_view import trial_note, trial_run_name

        tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, TAG_STUDY: study, TAG_TRIAL: str(o.number), TAG_STATE: o.state, TAG_KIND: "trial", **o.tags, **extra_tags}
        if o.reason:
            tags[TAG_REASON] = o.reason[:5000]
        baseline = o.tags.get(TAG_BASELINE) == "true"
        note = trial_note(o.state, o.reason or "", baseline)
        if note:
            tags["mlflow.note.content"] = note[:5000]
        if o.spec is not None:
            tags[TAG_SPEC] = encode(o.spec)[:5000]
            tags[TAG_HASH] = spec_hash(o.spec)
        start_ms = int(o.start * 1000)
        run = self.client.create_run(self.experiment_id, start_time=start_ms, tags=tags, run_name=trial_run_name(o.number, o.state, o.reason or "", baseline))
        run_id = run.info.run_id
        metrics = []
        t = start_ms
        for row in o.history:
            t += int(row.get("epoch_seconds", 0) * 1000)
            step = int(row["epoch"])
            metrics.extend(Metric(k, float(v), t, step) for k, v in row.items() if k != "epoch")
        end_ms = int(o.end * 1000)
        metrics.extend(Metric(k, float(v), end_ms, 0) for k, v in o.metrics.items() if k not in ("val_accuracy",) or not o.history)
        if o.history and "val_accuracy" in o.metrics and o.metrics["val_accuracy"] != o.history[-1].get("val_accuracy"):
            metrics.append(Metric("final_val_accuracy", float(o.metrics["val_accuracy"]), end_ms, 0))
        params = [Param(k, v) for k, v in flatten(o.params).items()]
        for i in range(0, max(len(metrics), 1), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000], params=params if i == 0 else [], synchronous=True)
        files = {"spec.json": to_json(o.spec) if o.spec is not None else None, "traceback.txt": o.traceback or None}
        self._log_files(run, {name: text for name, text in files.items() if text})
        self.client.set_terminated(run_id, status=STATUS[o.state], end_time=end_ms)
        return run_id

    def _log_files(self, run: Any, files: dict[str, str]) -> None:
        """Text artifacts of a run just created. A local artifact store is written directly (the client
        would read the run back for its artifact location, a sixth of a record's cost); any other
        store goes through the client, which knows how to reach it."""
        if not files:
            return
        uri = run.info.artifact_uri
        if uri.startswith("file:") or (uri.startswith("/") and "://" not in uri):
            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

            repo = LocalArtifactRepository(uri)
            with tempfile.TemporaryDirectory(prefix="searchcore-record-") as tmp:
                for name, text in files.items():
                    Path(tmp, name).write_text(text, encoding="utf-8")
                repo.log_artifacts(tmp)
            return
        for name, text in files.items():
            self.client.log_text(run.info.run_id, text, name)

    def logged_trials(self, study: str, partial: dict[int, list[str]] | None = None) -> set[int]:
        """Trial numbers of ``study`` that already have a complete run (for sync).

        A trial run is created and terminated in one write, so a run still RUNNING is a write cut
        short (a killed process, an outage mid-write): it does not count, and its id goes into
        ``partial`` (by trial number) for sync to delete before writing the trial again.
        """
        numbers: set[int] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_KIND}` = 'trial'", max_results=1000, page_token=token)
            for r in page:
                number = int(r.data.tags[TAG_TRIAL])
                if r.info.status == "RUNNING":
                    if partial is not None:
                        partial.setdefault(number, []).append(r.info.run_id)
                else:
                    numbers.add(number)
            token = page.token
            if not token:
                return numbers

    def find_search_run(self, study: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_KIND}` = 'search'", max_results=1)
        return runs[0].info.run_id if runs else None

    # --- the best architectures --------------------------------------------------------------

    def log_model(self, model: Any, spec: dict, register_as: str, test_accuracy: float, trial_number: int, parent_run_id: str,
                  metrics: dict[str, float] | None = None) -> str:
        """Log a trained model with its spec as a child run and register it; returns the model URI.

        ``metrics`` are the plugins' records of the retrain (a distilled student's teacher accuracy
        and size, a pruned model's sparsity), logged next to ``test_accuracy``.
        """
        import mlflow
        import mlflow.pytorch
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from searchcore.arch.spec import encode, to_json

        tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, TAG_KIND: "best", TAG_TRIAL: str(trial_number), TAG_SPEC: encode(spec)[:5000]}
        run = self.client.create_run(self.experiment_id, run_name=f"best-trial-{trial_number}", tags=tags)
        run_id = run.info.run_id
        self.client.log_metric(run_id, "test_accuracy", float(test_accuracy))
        for key, value in (metrics or {}).items():
            self.client.log_metric(run_id, key, float(value))
        self.client.log_text(run_id, to_json(spec), "spec.json")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        import numpy as np

        example = np.zeros((1, *spec["input"]), dtype=np.float32)
        # pickle, not pt2: every spec builds, not every model exports to a traced graph. Loading it
        # needs searchcore installed; the spec beside it rebuilds the model without pickle.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model.cpu().eval(),
                serialization_format="pickle",
                input_example=example,
                name="model",
                registered_model_name=register_as,
                pip_requirements=["searchcore", "torch", "torchvision"],
                metadata={"searchcore_spec": spec, "test_accuracy": float(test_accuracy)},
                await_registration_for=60,
            )
        version = info.registered_model_version
        if version is not None:
            self.client.set_model_version_tag(register_as, str(version), "test_accuracy", f"{test_accuracy:.4f}")
            self.client.set_model_version_tag(register_as, str(version), TAG_SPEC, encode(spec)[:5000])
            return f"models:/{register_as}/{version}"
        return info.model_uri
