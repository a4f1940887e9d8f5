"""``--isolate``: each trial's build, training and scoring in a fresh process of its own.

Why: in one long-lived worker a plugin that leaks memory, leaves CUDA in a bad state, starts
helper processes or hangs harms every later trial. Isolated, it harms only its own trial:

* the trial process starts a new session, so it leads a process group of its own; the search
  kills that whole group (the trial and anything it started) when the trial ends, is pruned,
  or the search stops (Ctrl-C, an error);
* if the search process itself dies (even ``kill -9``), the trial's control pipe closes and
  the trial kills its own group, so no orphan keeps a GPU busy;
* sampling stays in the search process, where the Optuna trial lives; after every epoch the
  trial sends its metrics back through a pipe and waits for the go-ahead, so the pruner sees
  the same intermediate values as in-process and a pruned trial never runs ahead.

The trial process rebuilds the plugin host (the same ``--plugin`` modules and ``--disable``
names), the space file's configuration and the data, then calls the very
:meth:`~searchcore.engine.runner.TrialRunner.evaluate` an in-process trial calls. Failures come back
as the one-line reason and the trial process's traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from searchcore.engine.runner import TrialRunner
from searchcore.errors import Diverged, TrialFailed

ENV_PLUGIN_VARS = ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE")


class RemoteTraceback(Exception):
    """The trial process's traceback, chained under the error the search records (as
    ``concurrent.futures`` does), so the trial's traceback artifact shows where it really failed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""


class IsolatedRunner(TrialRunner):
    """A :class:`TrialRunner` whose :meth:`evaluate` runs in a fresh process; everything else
    (sampling, transformation, the outcome) happens here exactly as in-process."""

    def __init__(self, runner: TrialRunner) -> None:
        # Share the prepared runner's state (config, host, space, data for the final retraining)
        # instead of preparing it again: only evaluate() differs.
        self.__dict__.update(vars(runner))

    def job(self, spec: dict) -> dict[str, Any]:
        """What the trial process needs to rebuild this runner: JSON only, no pickles."""
        plugins = [i.module.__name__ for i in self.host.infos.values() if i.source == "--plugin" and i.ok and i.module is not None]
        return {
            "spec": spec,
            "config": dataclasses.asdict(self.cfg),
            "threads": self.threads,
            "plugins": plugins,
            "disabled": sorted(self.host.disabled),
            "sys_path": [p for p in sys.path if isinstance(p, str)],
        }

    def evaluate(self, spec: dict, report: Callable[[int, dict[str, float]], None], history: list[dict[str, float]]) -> dict[str, float]:
        return run_isolated(self.job(spec), report, history)


def run_isolated(job: dict[str, Any], report: Callable[[int, dict[str, float]], None], history: list[dict[str, float]]) -> dict[str, float]:
    """Run one trial's evaluation in a new process group; whatever happens, the group is killed
    before this returns or raises. Each epoch's metrics are appended to ``history`` before
    ``report`` runs (as in-process); ``report`` may raise to prune, and the group dies with it."""
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if k not in ENV_PLUGIN_VARS}  # passed explicitly in the job
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "searchcore.engine.isolate", str(write_fd)],
            stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True, env=env,
        )
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    messages = os.fdopen(read_fd, "rb")
    try:
        assert proc.stdin is not None
        _send(proc.stdin, job)
        while True:
            line = messages.readline()
            if not line:
                raise TrialFailed(f"the isolated trial process died before reporting ({_exit_status(proc)})")
            msg = json.loads(line)
            if "epoch" in msg:
                history.append({"epoch": int(msg["epoch"]), **msg["metrics"]})
                report(int(msg["epoch"]), msg["metrics"])
                _send(proc.stdin, "go")
            elif "done" in msg:
                return msg["done"]
            elif "diverged" in msg:
                raise Diverged(msg["diverged"])
            else:
                raise TrialFailed(msg["failed"]) from RemoteTraceback(msg["traceback"])
    finally:
        kill_group(proc)
        messages.close()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the trial's whole process group, then reap the trial process. The group id is the
    trial's pid, which cannot be reused before the ``wait`` below reaps it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:  # the pipe broke when the trial died
            pass
    proc.wait()


def _send(stream: IO[bytes], obj: Any) -> None:
    try:
        stream.write(json.dumps(obj).encode() + b"\n")
        stream.flush()
    except (BrokenPipeError, OSError):
        pass  # the trial process is gone; reading its messages says how


def _exit_status(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "it closed its pipe but is still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the trial process ----------------------------------------------------------------------


def _child(fd: int) -> int:
    from searchcore.engine.config import SpaceConfig
    from searchcore.engine.runner import failure_reason, prepare
    from searchcore.errors import Diverged as _Diverged
    from searchcore.plugins.host import configure
    from searchcore.train.trainer import set_threads

    out = os.fdopen(fd, "wb", buffering=0)
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            out.write(json.dumps(msg).encode() + b"\n")

    job = json.loads(sys.stdin.buffer.readline())
    go: queue.Queue = queue.Queue()

    def control() -> None:
        for line in sys.stdin.buffer:
            go.put(line.strip())
        # The search process closed the pipe: it is finished with us, or dead. Either way nothing
        # of this trial may outlive it, including processes a plugin started.
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=control, daemon=True, name="searchcore-isolate-control").start()
    for p in reversed(job["sys_path"]):
        if p not in sys.path:
            sys.path.insert(0, p)

    def report(epoch: int, metrics: dict[str, float]) -> None:
        send({"epoch": epoch, "metrics": {k: float(v) for k, v in metrics.items()}})
        go.get()

    try:
        host = configure(job["plugins"], job["disabled"])
        cfg = SpaceConfig(**job["config"])
        set_threads(job["threads"])
        runner = prepare(cfg, host, job["threads"])
        metrics = runner.evaluate(job["spec"], report, [])
        send({"done": {k: float(v) for k, v in metrics.items()}})
    except _Diverged as e:
        send({"diverged": str(e)})
    except Exception as e:  # the search records it as this trial's failure
        import traceback

        send({"failed": failure_reason(e), "traceback": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(int(sys.argv[1])))
