"""Result commands: ``searchcore report`` (one offline HTML page) and ``searchcore ablate``.

Kept apart from ``commands.py`` so the search commands do not import the reporting stack
(matplotlib, plotly) and this module can be wired into the parser with one call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from searchcore.cli.console import positive_int, table
from searchcore.errors import SearchcoreError, UsageError


def add_results_commands(sub: Any) -> None:
    """Register ``report`` and ``ablate`` on the CLI's subparsers."""

    sp = sub.add_parser("report", help="write a self-contained HTML report of a search (works offline)")
    sp.add_argument("name", nargs="?", default=None, help="search name (default: the only search in the storage)")
    sp.add_argument("--storage", help="study storage URL (default: sqlite:///searchcore.db here)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the search recorded)")
    sp.add_argument("--out", help="output folder for index.html (default: report-NAME)")
    sp.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM maps (no model is loaded, no data read)")
    sp.add_argument("--ui-port", type=positive_int, default=5000, help="port the report's MLflow UI link uses")
    sp.add_argument("--dashboard-port", type=positive_int, default=8080, help="port the report's optuna-dashboard link uses")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("ablate", help="retrain the best architecture without each improvement in turn and compare")
    sp.add_argument("name", nargs="?", default=None, help="search name (default: the only search in the storage)")
    sp.add_argument("--storage", help="study storage URL (default: sqlite:///searchcore.db here)")
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the search recorded)")
    sp.add_argument("--by", choices=("plugin", "dimension"), default="plugin", help="switch off whole plugins (default) or one searched choice at a time")
    sp.add_argument("--repeats", type=positive_int, default=3, help="seeds per variant: the search's seed and the next ones (default 3)")
    sp.add_argument("--trial", type=int, help="ablate this trial instead of the winner")
    sp.add_argument("--epochs", type=positive_int, help="epochs per training (default: the search's)")
    sp.add_argument("--threads", type=positive_int, help="torch CPU threads")
    sp.set_defaults(func=cmd_ablate)


def _open(name: str | None, storage: str | None) -> tuple[Any, str]:
    from searchcore.engine.backends.optuna_search import find_study

    return find_study(name, storage)


def _tracking(study: Any, explicit: str | None) -> str:
    from searchcore.engine.results import ATTR_TRACKING
    from searchcore.track.tracking import DEFAULT_TRACKING

    return explicit or study.user_attrs.get(ATTR_TRACKING) or DEFAULT_TRACKING


def cmd_report(args: argparse.Namespace) -> int:
    from searchcore.report import assemble, collect, html, links
    from searchcore.track.tracking import mask_url

    study, url = _open(args.name, args.storage)
    tracking = _tracking(study, args.tracking_uri)
    runner = None
    try:
        runner = collect.runner_from_study(study)
    except SearchcoreError as e:  # an uninstalled plugin or a missing dataset: report what the study alone can say
        print(f"searchcore: note: the search's space could not be rebuilt ({e}); no exact costs, diagram attribution or Grad-CAM",
              file=sys.stderr)
    data = collect.load(study, space=runner.space if runner is not None else None, tracking_uri=tracking, storage_url=url)
    parts = assemble.assemble(study, data, splits=runner.splits if runner is not None else None, gradcam=not args.no_gradcam)
    out = Path(args.out or f"report-{study.study_name}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder: {e.strerror}") from None
    path = out / "index.html"
    html.write(parts, path, ui_port=args.ui_port, dashboard_port=args.dashboard_port)
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained, opens offline)")
    measured = html.measured_headline(parts.ablation)
    if measured:
        print(f"  {measured}")
    print(f"  {'estimated: ' if measured else ''}{parts.credit.headline}")
    for note in parts.notes:
        print(f"  note: {note}")
    if data.experiment_id:
        print(f"MLflow:           {links.ui_command(mask_url(tracking), args.ui_port)}  ->  "
              f"{links.experiment_url(links.base_url('127.0.0.1', args.ui_port), data.experiment_id)}")
    print(f"optuna-dashboard: {links.dashboard_command(data.storage_url or mask_url(url), args.dashboard_port)}  ->  "
          f"{links.dashboard_url(links.base_url('127.0.0.1', args.dashboard_port), data.study_id)}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from searchcore.report import ablate, collect
    from searchcore.train.trainer import set_threads

    study, _ = _open(args.name, args.storage)
    set_threads(args.threads)
    runner = collect.runner_from_study(study, threads=args.threads)
    result = ablate.ablate(study, runner, by=args.by, repeats=args.repeats, trial=args.trial, epochs=args.epochs)
    run_id = ablate.record(study, result, _tracking(study, args.tracking_uri))
    full = result["full"]
    print(f"\nablation of trial {result['trial']} of {study.study_name!r}: {len(result['seeds'])} seeds x {result['epochs']} epochs; "
          f"full winner test accuracy {full['test_mean']:.4f}, {full['params']:,} params")
    rows = [(r["label"], f"{r['val_diff_mean']:+.2f} ± {r['val_diff_sd']:.2f}", f"{r['test_diff_mean']:+.2f} ± {r['test_diff_sd']:.2f}",
             f"[{r['test_diff_min']:+.2f}, {r['test_diff_max']:+.2f}]", f"{r['params_pct']:+.1f}%", f"{r['macs_pct']:+.1f}%") for r in result["rows"]]
    table(["improvement (switched off)", "val gain (pts)", "test gain (pts)", "test range", "params added", "MACs added"], rows)
    print("gain = full winner minus the winner without it, paired by seed; mean ± sd over seeds")
    print(f"recorded in the study{' and in MLflow run ' + run_id if run_id else ''}; `searchcore report {study.study_name}` shows it")
    return 0
