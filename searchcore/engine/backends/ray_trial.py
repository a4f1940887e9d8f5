"""A Ray trial's side of the Ray backend: what runs in a worker process, from Tune's sampled config
to the trial's MLflow record (the driver's side, which starts and watches the experiment, is
:mod:`searchcore.engine.backends.ray`).

A worker keeps its prepared runner (plugins, data, space) in a module-level cache across the trials
Tune hands it (``reuse_actors``), builds its MLflow tracker on a thread during its first trial, and
writes each trial's record itself, a stopped one included, before Tune ends its actor.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_KEY = "searchcore_state"
BASELINE_KEY = "searchcore_baseline"  # 1.0 in every result of the baseline trial: the scheduler lets it finish
EPOCH_KEYS = ("train_loss", "val_accuracy", "lr", "epoch_seconds")
TAG_NODE = "searchcore.node_id"
TAG_GPUS = "searchcore.gpu_ids"
TAG_DEVICE = "searchcore.device"
TAG_THREADS = "searchcore.torch_threads"
TAG_BACKEND = "searchcore.backend"
TAG_RAY_TRIAL = "searchcore.ray_trial_id"
STOP_WAIT_S = 8.0  # Tune kills a stopping actor after 10 s; its last record must be written before that

TRACE_ENV = "SEARCHCORE_RAY_TRACE"  # a file: the driver and its workers append a timestamped line per phase (diagnostics)


def trace(event: str, **extra: Any) -> None:
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "cpu": time.process_time(), "tcpu": time.thread_time(), "pid": os.getpid(), "event": event, **extra}) + "\n")

RESULT_BUFFER_S = 1.0  # a batch of epoch results goes to the driver at the first epoch after this long...
RESULT_BUFFER_MAX = 100  # ...or at this many


@dataclass
class Payload:
    """Everything a worker needs to run trials; sent once through the object store."""

    cfg: Any
    plugins: list[str]
    disabled: list[str]
    tracking_uri: str
    study: str
    parent_run_id: str | None
    threads: int
    splits: Any = None  # the driver's loaded data (small in-memory splits only): workers skip loading it again
    checkpoint_epochs: bool = True  # False only where no scheduler acts on epochs (see paced_results)
    resumed: bool = False  # --resume: a trial may have a record from before, which its new one replaces
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


SHIP_DATA_MAX_BYTES = 256 * 2**20  # above this, each worker loads the dataset itself rather than the driver shipping it


def shippable_splits(splits: Any) -> Any:
    """The driver's splits if they are plain CPU tensors small enough to send once through the object
    store (instead of every worker importing the loader and reading the dataset again); else None."""
    from searchcore.train.data import Splits

    if type(splits) is not Splits:
        return None
    tensors = [getattr(splits, f) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")]
    if any(t.device.type != "cpu" for t in tensors):
        return None
    return splits if sum(t.element_size() * t.nelement() for t in tensors) <= SHIP_DATA_MAX_BYTES else None


_RUNNERS: dict[str, Any] = {}
_TRACKERS: dict[tuple[str, str], Any] = {}
_TRACKERS_PENDING: dict[tuple[str, str], Any] = {}
_TRIAL_DONE = threading.Event()
_TRIAL_DONE.set()


def _runner_for(payload: Payload) -> Any:
    """The worker's TrialRunner: prepared by the first trial, reused by every later one."""
    runner = _RUNNERS.get(payload.key)
    if runner is None:
        from searchcore.engine.quiet import quiet_libraries
        from searchcore.engine.runner import prepare
        from searchcore.plugins.host import configure

        quiet_libraries()
        import logging

        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per epoch otherwise
        host = configure(payload.plugins, payload.disabled)
        # the data the driver shipped, if any: the worker skips loading it again
        runner = prepare(copy.deepcopy(payload.cfg), host, payload.threads, splits=payload.splits)
        _RUNNERS.clear()
        _RUNNERS[payload.key] = runner
    return runner


def _start_tracker(payload: Payload) -> None:
    """Build the worker's tracker (MLflow's import and store set-up, about a second) on a thread of its
    own, alongside the first trial's preparation and training, which need no tracker until the end."""
    key = (payload.tracking_uri, payload.study)
    if key in _TRACKERS or key in _TRACKERS_PENDING:
        return
    box: dict[str, Any] = {}

    def build() -> None:
        try:
            box["tracker"] = _make_tracker(payload)
        except BaseException as e:  # raised again in the trial that asks for the tracker
            box["error"] = e

    thread = threading.Thread(target=build, name="searchcore-tracker-setup", daemon=True)
    _TRACKERS_PENDING[key] = (thread, box)
    thread.start()


def _tracker_for(payload: Payload) -> Any:
    key = (payload.tracking_uri, payload.study)
    if key not in _TRACKERS:
        _start_tracker(payload)
        thread, box = _TRACKERS_PENDING[key]
        thread.join()
        del _TRACKERS_PENDING[key]
        if "error" in box:
            raise box["error"]
        _TRACKERS[key] = box["tracker"]
    return _TRACKERS[key]


def _make_tracker(payload: Payload) -> Any:
    from searchcore.track.tracking import Tracker

    class TrialTracker(Tracker):
        """Writes a trial's record in place of any earlier one of the same trial: a trial stopped
        when its experiment was interrupted recorded itself, and records itself again in full
        when it runs again on --resume."""

        replace: set[int]  # trials that may have been recorded before (a search query each; the rest skip it)

        def write_trial(self, o: Any, study: str, parent_run_id: str, extra_tags: dict[str, str]) -> str:
            if o.number in self.replace:
                _forget_earlier_record(self, study, o.number)
            return super().write_trial(o, study, parent_run_id, extra_tags)

    tracker = TrialTracker(payload.tracking_uri, experiment=payload.study)
    tracker.replace = set()
    return tracker


def trial_name(trial: Any) -> str:
    """``trial_00007``: the number Tune's search generator gave the trial (from 0, as in Optuna)."""
    head = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return f"trial_{int(head) - 1:05d}" if head.isdigit() else f"trial_{trial.trial_id}"


def trial_number(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"not a searchcore trial name: {name!r}")
    return int(tail)


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """OptunaSearch nests names that contain '/'; the space wants them flat again."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _restored_epoch(checkpoint: Any) -> int:
    """The last epoch Tune already has from this trial (0 for a fresh trial)."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        path = Path(d) / "searchcore.json"
        return int(json.loads(path.read_text())["epoch"]) if path.is_file() else 0


def _forget_earlier_record(tracker: Any, study: str, number: int) -> None:
    """Trial numbers are unique in a search, so an existing record of this number is an earlier,
    stopped attempt of this very trial (restored or restarted on --resume): it goes."""
    from searchcore.track.tracking import TAG_KIND, TAG_STUDY, TAG_TRIAL

    try:
        runs = tracker.client.search_runs(
            [tracker.experiment_id], f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_KIND}` = 'trial' and tags.`{TAG_TRIAL}` = '{number}'")
        for run in runs:
            tracker.client.delete_run(run.info.run_id)
    except Exception as e:  # the driver rewrites a record that is missing; a duplicate is not worth failing the trial
        print(f"searchcore: warning: could not replace the earlier record of trial {number}: {type(e).__name__}: {e}", file=sys.stderr)


def _process_start() -> float | None:
    """When this process started (epoch seconds), for the trace; None where /proc is not there."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_trial(config: dict[str, Any], payload: Payload) -> None:
    """The function trainable: one trial, from Tune's sampled config to its MLflow record."""
    _TRIAL_DONE.clear()
    trace("trial start")
    try:
        _run_trial(config, payload)
    finally:
        trace("trial end")
        _TRIAL_DONE.set()


def _run_trial(config: dict[str, Any], payload: Payload) -> None:
    import ray
    from ray import tune

    from searchcore.space import ParamsTrial
    from searchcore.train.outcome import Pruned

    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    if not gpu_ids:  # a trial sees only the GPUs Ray gave it: none means none, before torch looks
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if not _RUNNERS and os.environ.get(TRACE_ENV):
        trace("worker process created", at=_process_start())
    if payload.parent_run_id is not None:
        _start_tracker(payload)
    runner = _runner_for(payload)
    trace("runner ready")
    import torch

    from searchcore.train.trainer import set_threads

    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    runner.cfg.train = {**runner.cfg.train, "device": device}
    set_threads(runner.threads)
    context = tune.get_context()
    number = trial_number(context.get_trial_name())
    seen = _restored_epoch(tune.get_checkpoint())
    last = int(runner.cfg.epochs)
    names = runner.names
    state: dict[str, Any] = {"stopped": False, "held": None, "threads": None}
    params = flat_params(config)
    flag = {BASELINE_KEY: 1.0} if runner.is_baseline(params) else {}

    def send(row: dict[str, float]) -> None:
        metrics = {**row, **{n: row.get(n, math.nan) for n in names}, **flag}
        try:
            trace("report", epoch=int(row["epoch"]))
            if payload.checkpoint_epochs:
                with tempfile.TemporaryDirectory(prefix="searchcore-ckpt-") as d:
                    Path(d, "searchcore.json").write_text(json.dumps({"epoch": int(row["epoch"]), "trial": number}))
                    checkpoint = tune.Checkpoint.from_directory(d)
                    trace("checkpoint made")
                    tune.report(metrics, checkpoint=checkpoint)
            else:
                tune.report(metrics)
            trace("reported", epoch=int(row["epoch"]))
        except SystemExit:  # Tune stopped the trial (scheduler decision or the experiment ends)
            state["stopped"] = True
            raise Pruned(f"stopped by Ray Tune after epoch {int(row['epoch'])} (its scheduler, or the experiment stopping)") from None

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if state["threads"] is None:
            state["threads"] = torch.get_num_threads()
        if epoch <= seen:  # a restored trial retrains these epochs; Tune has their results already
            return
        row = {**{k: float(v) for k, v in metrics.items()}, "epoch": float(epoch)}
        held, state["held"] = state["held"], None
        if held is not None:
            send(held)
        if epoch >= last:  # the last epoch goes out with the objectives, once they are computed
            state["held"] = row
        else:
            send(row)

    outcome = runner.run(ParamsTrial(params, source=f"trial {number}"), number, report)
    threads = state["threads"] if state["threads"] is not None else torch.get_num_threads()
    outcome.tags.update({
        TAG_BACKEND: "ray", TAG_NODE: ray.get_runtime_context().get_node_id(), TAG_GPUS: ",".join(gpu_ids),
        TAG_DEVICE: device, TAG_THREADS: str(threads), TAG_RAY_TRIAL: context.get_trial_id(),
        "searchcore.cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "searchcore.worker_pid": str(os.getpid()),
    })
    if device == "cuda":
        outcome.tags["searchcore.cuda_memory_after"] = str(torch.cuda.memory_allocated())
    trace("trained", trial=number)
    if payload.parent_run_id is not None:
        tracker = _tracker_for(payload)
        if payload.resumed or seen > 0:  # run before: restored from its checkpoint, or continued on --resume
            tracker.replace.add(number)
        tracker.log_trial(outcome, payload.study, payload.parent_run_id)
    trace("record queued", trial=number)
    if state["stopped"]:
        raise SystemExit(0)  # what tune.report would have raised: the trial ends here
    final = dict(state["held"] or {})
    final.update({k: float(v) for k, v in outcome.metrics.items()})
    final.update({n: final.get(n, math.nan) for n in names})
    final[STATE_KEY] = outcome.state
    if outcome.reason:
        final["searchcore_reason"] = outcome.reason[:300]
    try:
        tune.report(final)
        trace("final reported", trial=number)
    except SystemExit:
        raise SystemExit(0) from None  # stopped at the last epoch (ASHA's max_t): the trial is complete anyway


def _settle() -> None:
    """Let a stopped trial finish writing its record before its worker goes away."""
    _TRIAL_DONE.wait(STOP_WAIT_S)
    deadline = time.time() + STOP_WAIT_S
    for tracker in list(_TRACKERS.values()):
        tracker.flush(max(0.1, deadline - time.time()))


def make_trainable(payload: Payload, cpus: float, gpus: float) -> Any:
    """Tune's function trainable around :func:`run_trial`, waiting for records on reset and stop."""
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(tune.with_parameters(run_trial, payload=payload), name="searchcore")

    class SearchcoreTrial(base):  # type: ignore[misc, valid-type]
        def setup(self, config: dict) -> None:
            trace("actor setup")
            super().setup(config)

        def train_buffered(self, *args: Any, **kwargs: Any) -> Any:
            # Tune calls this where paced_results switched buffering on; it passes its own two
            # settings positionally in the opposite order to this method's parameters (Ray 2.60),
            # so the batch limits are ours, by name, whatever Tune passes.
            return super().train_buffered(buffer_time_s=RESULT_BUFFER_S, max_buffer_length=RESULT_BUFFER_MAX)

        def reset_config(self, new_config: dict) -> bool:
            trace("actor reset")
            # Tune gives a stopped trial 2 s to end before it gives up reusing the worker; a trial
            # writing its record may need longer, and a new worker costs far more than the wait.
            os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = str(int(STOP_WAIT_S))
            return super().reset_config(new_config)

        def cleanup(self) -> None:
            trace("actor cleanup")
            try:
                super().cleanup()
            finally:
                _settle()

    return tune.with_resources(SearchcoreTrial, {"cpu": cpus, "gpu": gpus})


class DefineByRun:
    """OptunaSearch's space: the same sampling function every backend uses (picklable for Tune's state)."""

    def __init__(self, dimensions: list[Any]) -> None:
        self.dimensions = list(dimensions)

    def __call__(self, trial: Any) -> None:
        from searchcore.space import sample

        sample(trial, self.dimensions)


# --- the driver ---------------------------------------------------------------------------------
