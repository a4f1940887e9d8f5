"""Search-related subcommands (search, worker, best, ui, train, sync), added to the CLI parser."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from searchcore.cli.console import table
from searchcore.errors import UsageError


def add_commands(sub: Any, types: dict[str, Any]) -> None:
    """Register the search commands; kept apart from cli.py so each stays small."""
    pi, nn, pf = types["positive_int"], types["nonneg_int"], types["positive_float"]

    sp = sub.add_parser("search", help="run or resume a search")
    sp.add_argument("space", nargs="?", help="space file (default: the built-in default space)")
    sp.add_argument("--trials", type=pi, help="total trial budget of the search (across restarts)")
    sp.add_argument("--timeout", type=pf, help="stop starting trials after this many seconds")
    sp.add_argument("--epochs", type=pi, help="epochs per trial")
    sp.add_argument("--sampler", help="auto (tpe-zc: TPE whose start-up trials a zero-cost proxy picks; NSGA-II for several objectives), tpe, random, nsga2, evolution, mf-evolution, zc-evolution, grid, or one a plugin adds")
    sp.add_argument("--pruner", choices=["hyperband", "median", "successive_halving", "none"])
    sp.add_argument("--workers", type=pi, default=1, help="worker processes on this machine")
    sp.add_argument("--storage", help="study storage URL (default: sqlite:///searchcore.db here)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    sp.add_argument("--seed", type=nn)
    sp.add_argument("--name", help="search name: Optuna study, MLflow experiment and registered model")
    sp.add_argument("--threads", type=pi, help="torch threads per worker (default: cores / workers)")
    sp.add_argument("--no-register", action="store_true", help="do not retrain and register the best architectures")
    sp.add_argument("--no-baseline", action="store_true", help="do not retrain the unimproved backbone (the search's first trial) to compare test accuracies at the end")
    sp.add_argument("--quiet", "-q", action="store_true", help="no live progress")
    sp.add_argument("--isolate", action="store_true", help="run each trial in a fresh process (its process group is killed on stop or prune)")
    sp.add_argument("--deterministic", action="store_true", help="deterministic torch algorithms: same seed, same metrics, bit for bit")
    ray = sp.add_argument_group("Ray backend (--backend ray)")
    ray.add_argument("--backend", choices=["optuna", "ray"], default="optuna", help="optuna (default): a study and workers; ray: a Ray Tune experiment")
    ray.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: start a private local Ray on a free port)")
    ray.add_argument("--cpus-per-trial", type=pf, help="CPUs per trial, also its torch threads (default 1)")
    ray.add_argument("--gpus-per-trial", type=types["fraction"], help="GPUs per trial; a fraction shares one GPU (default 0)")
    ray.add_argument("--max-concurrent", type=pi, help="most trials running at once (default: as many as the resources allow)")
    ray.add_argument("--max-failures", type=nn, help="retries of a trial whose worker died, from its last checkpoint (default 1)")
    ray.add_argument("--scheduler", choices=["asha", "hyperband", "none"], help="early stopping on val_accuracy (default asha)")
    ray.add_argument("--resume", action="store_true", help="continue the interrupted Ray experiment of --name, searcher state included")
    ray.add_argument("--ray-storage", help="folder for Ray's experiment state and checkpoints (default: ./ray_results; shared on a multi-machine cluster)")
    sp.set_defaults(func=cmd_search)

    sp = sub.add_parser("worker", help="join a search's study from any machine and run trials")
    sp.add_argument("--storage", required=True, help="the study storage URL the search uses")
    sp.add_argument("--name", required=True, help="the search name")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the search recorded)")
    sp.add_argument("--threads", type=pi)
    sp.add_argument("--timeout", type=pf)
    sp.add_argument("--isolate", action="store_true", help="run each trial in a fresh process")
    # a local worker of `searchcore search --workers N`: start up, then wait for "go" on stdin (EOF: the search gave up)
    sp.add_argument("--wait-for-go", action="store_true", help=argparse.SUPPRESS)
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("best", help="list the top architectures of a search")
    sp.add_argument("name", nargs="?", default=None)
    sp.add_argument("--storage")
    sp.add_argument("--top", type=pi, default=10)
    sp.set_defaults(func=cmd_best)

    sp = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    sp.add_argument("--tracking-uri", default=None)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=pi, default=5000)
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("train", help="retrain one architecture and report its test accuracy")
    sp.add_argument("source", help="SPEC.json or models:/NAME/VERSION")
    sp.add_argument("--space", help="space file giving dataset and training settings (default space otherwise)")
    sp.add_argument("--epochs", type=pi)
    sp.add_argument("--seed", type=nn)
    sp.add_argument("--tracking-uri", default=None)
    sp.add_argument("--finetune", action="store_true", help="start a models:/ source from its registered weights instead of from scratch")
    sp.add_argument("--save", metavar="PATH", help="write the retrained weights (a state dict) to PATH, e.g. for `searchcore export SPEC --weights PATH`")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("sync", help="write trials missing from MLflow (after an outage), exactly once")
    sp.add_argument("name")
    sp.add_argument("--storage")
    sp.add_argument("--tracking-uri")
    sp.set_defaults(func=cmd_sync)

    from searchcore.track import export

    export.add_command(sub, types)


def cmd_search(args: argparse.Namespace) -> int:
    from searchcore.engine.api import run_search
    from searchcore.engine.settings import Settings
    from searchcore.report.hook import log_search_report

    s = Settings(trials=args.trials, epochs=args.epochs, timeout=args.timeout, sampler=args.sampler, pruner=args.pruner, seed=args.seed,
                 workers=args.workers, storage=args.storage, tracking_uri=args.tracking_uri, name=args.name, threads=args.threads,
                 register=not args.no_register, baseline=not args.no_baseline, progress=not args.quiet,
                 isolate=args.isolate, deterministic=args.deterministic, backend=args.backend, address=args.address,
                 cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                 max_failures=args.max_failures, scheduler=args.scheduler, resume=args.resume or False, ray_storage=args.ray_storage)
    result = run_search(args.space, s, report=log_search_report)
    print_result(result)
    return 0


def print_result(r: Any) -> None:
    from searchcore.arch.build import build
    from searchcore.plugins.host import get_host
    from searchcore.train.objectives import count_macs

    c = r.counts
    print(f"\nsearch {r.name!r}: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed"
          + (f", {c['INTERRUPTED']} interrupted (re-queued)" if c.get("INTERRUPTED") else "") + f" in {r.seconds:.0f}s")
    if r.stopped_reason:
        print(r.stopped_reason)
    rows = []
    for a in r.best:
        model = build(a.spec, get_host().blocks())
        macs = count_macs(model, a.spec["input"])
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(r.objectives, a.values))
        test = f"{a.test_accuracy:.4f}" if a.test_accuracy is not None else "-"
        rows.append((str(a.trial), values, f"{int(a.metrics.get('params', 0)):,}", f"{macs:,}", test, a.one_line))
    if rows:
        print("\ntop architectures" + (" (Pareto front)" if len(r.objectives) > 1 else "") + ":")
        table(["trial", "objectives", "params", "MACs", "test acc", "architecture"], rows)
    if r.baseline_won:
        test = f", test accuracy {r.best[0].test_accuracy:.4f}" if r.best[0].test_accuracy is not None else ""
        print(f"\nno trial beat the baseline (every plugin off, trial {r.best[0].trial}): it is the best{test}"
              + (" and the registered model" if r.best[0].model_uri else ""))
    elif r.baseline_test_accuracy is not None and r.best and r.best[0].test_accuracy is not None:
        print(f"\nbest architecture test accuracy {r.best[0].test_accuracy:.4f} vs. baseline (every plugin off, same epochs) {r.baseline_test_accuracy:.4f}")
    for a in r.best:
        if a.model_uri:
            print(f"registered: {a.model_uri}")
    from searchcore.track.tracking import mask_url

    print(f"\nrecords: study {r.name!r} in {mask_url(r.storage)}; MLflow {mask_url(r.tracking_uri)}")
    print(f"browse:  searchcore ui --tracking-uri {mask_url(r.tracking_uri)}")
    link = _search_link(r)
    if link:
        print(f"         then open {link}")


def _search_link(r: Any, port: int = 5000) -> str | None:
    """The search's trials in MLflow, best first, as ``searchcore ui`` serves them (None if unknown)."""
    try:
        from mlflow.tracking import MlflowClient

        from searchcore.report import links

        exp = MlflowClient(tracking_uri=r.tracking_uri).get_experiment_by_name(r.name)
    except Exception:
        return None
    return links.experiment_url(links.base_url("127.0.0.1", port), exp.experiment_id) if exp is not None else None


def cmd_worker(args: argparse.Namespace) -> int:
    from searchcore.engine.backends.optuna_search import join_study

    stats = join_study(args.storage, args.name, args.threads, args.tracking_uri, args.timeout, isolate=args.isolate,
                       wait_for_go=args.wait_for_go)
    if stats is None:
        return 0  # the search stopped before it released its workers
    print(f"worker finished {stats.finished} trials" + (f"; {stats.stopped_reason}" if stats.stopped_reason else ""), file=sys.stderr)
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from searchcore.engine.backends.optuna_search import best_architectures, find_study

    study, _ = find_study(args.name, args.storage)
    names = list(study.user_attrs.get("searchcore_config", {}).get("objectives", {"value": {}}))
    rows = []
    for a in best_architectures(study, names, top=args.top):
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, a.values))
        rows.append((str(a.trial), values, f"{int(a.metrics.get('params', 0)):,}", a.one_line))
    if not rows:
        print(f"search {study.study_name!r} has no completed trial yet")
        return 0
    table(["trial", "objectives", "params", "architecture"], rows)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from searchcore.report.links import print_ui_links
    from searchcore.track.tracking import DEFAULT_TRACKING

    uri = args.tracking_uri or DEFAULT_TRACKING
    print_ui_links(uri, args.host, args.port)  # one link per search, straight to MLflow's model-training view
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    return subprocess.call(cmd + _ui_app())


def _ui_app() -> list[str]:
    """``--app-name searchcore``: MLflow's server with the model-training view as the browser's
    default (searchcore.track.mlflow_view), when this install registered the plugin; else plain MLflow."""
    from importlib.metadata import entry_points

    from searchcore.track.mlflow_view import APP_NAME

    if any(e.name == APP_NAME for e in entry_points(group="mlflow.app")):
        return ["--app-name", APP_NAME]
    print("searchcore: note: reinstall searchcore (pip install -e .) for run pages that open in the model-training view", file=sys.stderr)
    return []


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from searchcore.arch.build import param_count
    from searchcore.arch.spec import encode, from_json
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare
    from searchcore.plugins.host import get_host
    from searchcore.track import models
    from searchcore.train.fit import fit
    from searchcore.train.trainer import evaluate

    host = get_host()
    cfg = load_space(args.space)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.epochs is not None:
        cfg.epochs = args.epochs
    runner = prepare(cfg, host, None)
    init_state = None
    if args.source.startswith("models:/"):
        spec = models.lookup(args.source, args.tracking_uri).spec  # spec.json: the tag may be cut short
        if args.finetune:
            init_state = models.load(args.source, args.tracking_uri)[1].state_dict()
    elif args.finetune:
        raise UsageError("--finetune starts from a registered model's weights: give models:/NAME/VERSION")
    else:
        path = Path(args.source)
        if not path.is_file():
            raise UsageError(f"{args.source}: no such spec file (or use models:/NAME/VERSION)")
        spec = from_json(path.read_text(), str(path))
    if list(spec["input"]) != runner.splits.input_shape:
        raise UsageError(f"{args.source}: spec input {spec['input']} does not match dataset {cfg.dataset['name']} input {runner.splits.input_shape}")
    fitted = fit(spec, host, runner.splits, runner.train_config(), runner.space.options, final=True, init_state=init_state)
    model, result = fitted.model, fitted.result
    test = evaluate(model, runner.splits.test_x, runner.splits.test_y)
    print(f"architecture: {encode(spec)}")
    print(f"params: {param_count(model):,}  epochs: {cfg.epochs}  val accuracy: {result.val_accuracy:.4f}  test accuracy: {test:.4f}")
    if fitted.metrics:
        print("plugins: " + "  ".join(f"{k}: {v:.4g}" for k, v in sorted(fitted.metrics.items())))
    if args.save:
        import torch

        torch.save(model.state_dict(), args.save)
        print(f"weights: {args.save}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from searchcore.engine.backends.optuna_search import find_study
    from searchcore.engine.results import ATTR_PARENT, ATTR_TRACKING
    from searchcore.engine.sync import sync_study
    from searchcore.track.tracking import DEFAULT_TRACKING

    study, _ = find_study(args.name, args.storage)
    uri = args.tracking_uri or study.user_attrs.get(ATTR_TRACKING) or DEFAULT_TRACKING
    written = sync_study(study, uri, study.user_attrs.get(ATTR_PARENT))
    from searchcore.track.tracking import mask_url

    print(f"sync: wrote {written} missing trial runs to MLflow {mask_url(uri)}")
    return 0
