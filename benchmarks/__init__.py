"""searchcore's benchmarks: what a search costs next to the physical limit and to the usual stacks.

``python -m benchmarks.run`` runs every section (see :mod:`benchmarks.run`); each section is a
module with ``run(size, workdir, log) -> Section``. Sizes: ``full`` (``make bench``), ``quick``
(``make bench-quick``, under 10 minutes on 2 cores) and ``smoke`` (the test suite: every code path
at a tiny size, no figure meant to be read).

This package is also a searchcore plugin, loaded with ``searchcore.plugins.host.configure(extra_modules=
["benchmarks"])`` (or ``SEARCHCORE_PLUGINS=benchmarks`` for worker subprocesses). It adds:

* sampler ``replay``: proposes the params listed in the JSON file named by ``$SEARCHCORE_BENCH_REPLAY``,
  trial ``n`` getting entry ``n % len``, so every stack trains exactly the same architectures;
* evaluator ``instant``: a zero-cost objective, so what is left is searchcore's own bookkeeping;
* evaluator ``train-test``: searchcore's trainer plus the test accuracy of every trial, recorded as a
  metric the search never looks at (for the search-quality curves);
* sampler ``tpe-short-startup``: searchcore's default TPE with its random start-up cut to a quarter of
  the trial budget (``$SEARCHCORE_BENCH_TPE_STARTUP``, between 2 and 8), a candidate change to the
  default strategy measured by the quality section before it goes into the product;
* dataset ``digits-clutter``: the real 8x8 digits faded, cluttered with fragments of other digits and noisy
  (:mod:`benchmarks.workloads`), a workload where accuracy is not at the ceiling.

Nothing runs at import beyond defining these.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchcore.plugins.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("smoke", "quick", "full")
ENV_REPLAY = "SEARCHCORE_BENCH_REPLAY"
ENV_TPE_STARTUP = "SEARCHCORE_BENCH_TPE_STARTUP"
PLUGIN_MODULE = "benchmarks"
Log = Callable[[str], None]


# --- what a section returns ----------------------------------------------------------------------


@dataclass
class Table:
    """One printed table: the same rows go to the terminal, to RESULTS.md and to the JSON."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def text(self) -> str:
        """Fixed-width text for the terminal."""
        widths = [max(len(str(c)), *(len(str(r[i])) for r in self.rows)) if self.rows else len(str(c)) for i, c in enumerate(self.columns)]
        line = "  ".join(str(c).ljust(w) for c, w in zip(self.columns, widths))
        out = [self.title, line, "  ".join("-" * w for w in widths)]
        out += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in self.rows]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table with its title and note."""
        out = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        out += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


@dataclass
class Target:
    """A goal from the issue, the figure measured against it, and whether it is met (None: not measured)."""

    name: str
    goal: str
    measured: str
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]


@dataclass
class Section:
    """One benchmark's outcome."""

    name: str
    title: str
    size: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Section:
        s = Section(d["name"], d["title"], d["size"], notes=list(d.get("notes", [])), data=dict(d.get("data", {})), seconds=d.get("seconds", 0.0))
        s.tables = [Table(**t) for t in d.get("tables", [])]
        s.targets = [Target(**t) for t in d.get("targets", [])]
        return s


def pick(size: str, presets: dict[str, Any]) -> Any:
    """The preset for ``size``; an unknown size is a programming error named in full."""
    if size not in presets:
        raise ValueError(f"size must be one of {', '.join(presets)}, got {size!r}")
    return presets[size]


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, load, library versions, date."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for mod in ("torch", "optuna", "optuna_integration", "ray", "mlflow", "sqlalchemy", "searchcore"):
        versions[mod] = _version(mod)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # describing the machine must never fail a benchmark
        gpu = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "load_average_1_5_15": load,
        "platform": platform.platform(),
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


def _version(module: str) -> str:
    import importlib.metadata as md

    dist = {"optuna_integration": "optuna-integration"}.get(module, module)
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# --- timing ------------------------------------------------------------------------------------


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _processes() -> dict[int, tuple[int, float, float]]:
    """Every process: pid -> (parent pid, own user+system seconds, its reaped children's seconds)."""
    ticks = _ticks()
    out: dict[int, tuple[int, float, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        # fields[0] is stat field 3 (state); utime, stime, cutime, cstime are stat fields 14-17
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks)
    return out


def _tree(procs: dict[int, tuple[int, float, float]], root: int) -> set[int]:
    members = set()
    for pid in procs:
        p, hops = pid, 0
        while p not in (root, 0, 1) and p in procs and hops < 64:
            p, hops = procs[p][0], hops + 1
        if p == root:
            members.add(pid)
    return members


def tree_cpu(root: int | None = None) -> float:
    """CPU seconds used so far by process ``root`` (default: this one), its live descendants, and the
    descendants they have reaped (a searchcore worker subprocess, once it exits)."""
    root = os.getpid() if root is None else root
    procs = _processes()
    return sum(procs[p][1] + procs[p][2] for p in _tree(procs, root))


class _TreeSampler:
    """Remembers the last CPU reading of every process ever seen in this process's tree.

    Ray's workers are children of its raylet and die with ``ray.shutdown()`` without being reaped
    into this process's accounts, so a reading at the end would miss them: a thread reads the tree
    every ``interval`` seconds instead (counting each process's own time only, so nothing is
    counted twice); what a process spends after the last reading before it dies is lost.
    """

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.interval = interval
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-cpu-sampler")

    def read(self) -> None:
        procs = _processes()
        for pid in _tree(procs, os.getpid()):
            self.last[pid] = procs[pid][1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()

    def __enter__(self) -> _TreeSampler:
        self.read()
        self.start = dict(self.last)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.read()

    @property
    def seconds(self) -> float:
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())


@dataclass
class Clock:
    """Wall seconds and CPU seconds (this process and its descendants) of a ``with timed()`` block."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed(sample: bool = False) -> Iterator[Clock]:
    """Measure a block's wall time and the CPU time its process tree spent in it.

    ``sample``: read the tree every second (for Ray, whose worker processes are not reaped into
    ours); otherwise read it at the start and the end only, which costs the measured code nothing.
    """
    clock = Clock()
    if sample:
        sampler = _TreeSampler()
        t0 = time.perf_counter()
        with sampler:
            try:
                yield clock
            finally:
                clock.wall = time.perf_counter() - t0
        clock.cpu = sampler.seconds
        return
    c0, t0 = tree_cpu(), time.perf_counter()
    try:
        yield clock
    finally:
        clock.wall = time.perf_counter() - t0
        clock.cpu = tree_cpu() - c0


# --- child processes -----------------------------------------------------------------------------


def child_env(threads: int = 1, replay: Path | None = None) -> dict[str, str]:
    """Environment of a benchmark child: this repo importable, the benchmark plugin loaded, threads capped."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    plugins = {p for p in env.get("SEARCHCORE_PLUGINS", "").split(",") if p.strip()}
    env["SEARCHCORE_PLUGINS"] = ",".join(sorted(plugins | {PLUGIN_MODULE}))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("RAY_ADDRESS", None)
    if replay is not None:
        env[ENV_REPLAY] = str(replay)
    return env


def run_child(module: str, args: list[str], workdir: Path, log: Log, threads: int = 1, replay: Path | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS --out FILE`` in ``workdir`` and return the JSON it wrote.

    Each measured stack runs in a fresh interpreter, so none inherits another's imports, caches,
    thread settings or garbage; import time is outside every measurement.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"child-{hashlib.sha256(' '.join([module, *args]).encode()).hexdigest()[:10]}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=workdir, env=child_env(threads, replay), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-25:])
        raise RuntimeError(f"{' '.join(cmd[1:4])} ... failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now (Redis holds 6379: Ray must never take a default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ray(num_cpus: int) -> None:
    """A private local Ray cluster bound to 127.0.0.1, its GCS on a free port, no dashboard."""
    import ray

    os.environ["RAY_GCS_SERVER_PORT"] = str(free_port())
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False, logging_level="ERROR")


def search_settings(**kwargs: Any) -> Any:
    """``searchcore.engine.api.Settings`` for a benchmark search: no end-of-search report (plots),
    which is a one-time cost after the last trial, unless ``plots=True`` is asked for."""
    from searchcore.engine.settings import Settings

    if "plots" in Settings.__dataclass_fields__:
        kwargs.setdefault("plots", False)
    else:
        kwargs.pop("plots", None)
    return Settings(**kwargs)


# --- formatting ----------------------------------------------------------------------------------


def fmt_s(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def fmt_x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# --- the plugin: replay sampler and benchmark evaluators -----------------------------------------


def replay_params() -> list[dict[str, Any]]:
    """The param sets the ``replay`` sampler proposes, from the file named by ``$SEARCHCORE_BENCH_REPLAY``."""
    path = os.environ.get(ENV_REPLAY)
    if not path:
        raise RuntimeError(f"sampler 'replay' needs ${ENV_REPLAY} naming a JSON list of param dicts")
    params = json.loads(Path(path).read_text())
    if not isinstance(params, list) or not params or not all(isinstance(p, dict) for p in params):
        raise RuntimeError(f"{path}: expected a non-empty JSON list of param dicts")
    return params


def make_replay_sampler(params: list[dict[str, Any]]) -> Any:
    """An Optuna sampler proposing ``params[trial.number % len(params)]``: the same architectures
    under every stack (searchcore, plain Optuna, Ray Tune's OptunaSearch), in the same order.

    The class is made on first use (Optuna is imported only then) and pickles as a call to this
    function, so Ray Tune can save it with the searcher's state.
    """
    global _ReplaySampler
    if _ReplaySampler is None:
        import optuna

        class ReplaySampler(optuna.samplers.BaseSampler):
            """Replays fixed params by trial number; a name it does not know falls back to random."""

            def __init__(self, params: list[dict[str, Any]]) -> None:
                self.params = params
                self._fallback = optuna.samplers.RandomSampler(seed=0)

            def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
                return make_replay_sampler, (self.params,)

            def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
                return {}

            def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
                return {}

            def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
                fixed = self.params[trial.number % len(self.params)]
                if param_name in fixed:
                    return fixed[param_name]
                return self._fallback.sample_independent(study, trial, param_name, param_distribution)

        _ReplaySampler = ReplaySampler
    return _ReplaySampler(params)


_ReplaySampler: Any = None


def _replay_factory(seed: int, multi_objective: bool) -> Any:
    return make_replay_sampler(replay_params())


def tpe_startup_trials(trials: int) -> int:
    """Random start-up trials for a budget of ``trials``: a quarter of it, at least 2, at most searchcore's 8.

    With 8 fixed, a 12-trial search is random search for two thirds of its trials; a quarter
    leaves TPE most of a small budget and changes nothing from 32 trials up.
    """
    return max(2, min(8, trials // 4))


def _tpe_short_startup_factory(seed: int, multi_objective: bool) -> Any:
    """searchcore's default TPE (``searchcore.core._tpe``) but for the number of random start-up trials."""
    import optuna

    from searchcore.engine.strategies import NoRepeatSampler

    startup = int(os.environ.get(ENV_TPE_STARTUP, "8"))
    tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=startup)
    return NoRepeatSampler(tpe, seed=seed, fill_independent=False)


def instant_evaluator(spec: dict, config: Any, report: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
    """Zero-cost objective: a deterministic pseudo-accuracy from the spec, one reported epoch."""
    from searchcore.arch.spec import spec_hash

    value = int(spec_hash(spec)[:8], 16) / 0xFFFFFFFF
    metrics = {"val_accuracy": value, "train_loss": 1.0 - value, "lr": 0.0, "epoch_seconds": 0.0}
    report(1, metrics)
    return {"val_accuracy": value, "params": 0.0, "macs": 0.0}  # costs known, as a lookup table knows them: no model is built


def train_test_evaluator(spec: dict, config: Any, report: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
    """searchcore's own trainer (as evaluator ``train`` runs it) plus the trial's test accuracy and size.

    The test split is scored once after training and stored as a metric; no sampler or pruner sees it.
    """
    from searchcore.arch.build import build, param_count
    from searchcore.engine.runner import load_splits
    from searchcore.plugins.host import get_host
    from searchcore.train.trainer import TrainConfig, evaluate, train_model

    host = get_host()
    splits = load_splits(config, host)
    model = build(spec, host.blocks(), seed=config.seed)
    result = train_model(model, splits, TrainConfig(epochs=config.epochs, seed=config.seed, threads=1, **config.train), report=report)
    test = evaluate(model, splits.test_x, splits.test_y)
    return {"val_accuracy": result.val_accuracy, "best_val_accuracy": result.best_val_accuracy, "test_accuracy": test,
            "params": float(param_count(model)), "epochs": float(len(result.history))}


train_test_evaluator.trains = True  # type: ignore[attr-defined]  # it trains: a zero-cost first rung saves epochs here too


@hookimpl
def searchcore_samplers(register: Callable[..., None]) -> None:
    register("replay", _replay_factory)
    register("tpe-short-startup", _tpe_short_startup_factory)


@hookimpl
def searchcore_evaluators(register: Callable[..., None]) -> None:
    register("instant", instant_evaluator)
    register("train-test", train_test_evaluator)


@hookimpl
def searchcore_datasets(register: Callable[..., None]) -> None:
    from benchmarks.workloads import NAME, load_digits_clutter

    register(NAME, load_digits_clutter)


def load_plugin() -> Any:
    """(Re)load searchcore's plugins in this process with this package's sampler and evaluators added."""
    from searchcore.plugins.host import configure, get_host

    host = get_host()
    if PLUGIN_MODULE in host.infos and host.infos[PLUGIN_MODULE].ok:
        return host
    return configure(extra_modules=[PLUGIN_MODULE])
