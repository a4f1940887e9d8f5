"""Run a tiny search from Python with ``searchcore.search`` and print what it found.

    python examples/search_api.py                      # 4 trials of 1 epoch on the default space
    python examples/search_api.py --space space.yaml --trials 8 --out runs/api

The call is the one ``searchcore search`` makes, so a notebook or a pipeline gets the same
study (Optuna storage) and the same records (MLflow) as the command line. Retraining and
registering the winner, and the baseline run, are switched off to keep the example quick.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import searchcore


def run(
    out: Path, space: str | None = None, trials: int = 4, epochs: int = 1, seed: int = 0, threads: int | None = None
) -> Any:
    """One search, its study and MLflow records kept under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return searchcore.search(
        space,
        trials=trials,
        epochs=epochs,
        seed=seed,
        name="api-example",
        storage=f"sqlite:///{out.resolve() / 'study.db'}",
        tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}",
        register=False,
        baseline=False,
        progress=False,
        threads=threads,
    )


def report(result: Any) -> None:
    """The best architectures: objective values, the params that made them, and the spec in one line."""
    print(f"search {result.name!r}: {result.counts} in {result.seconds:.0f} s")
    print(f"study: {result.storage}   mlflow: {result.tracking_uri}")
    for arch in result.best:
        values = ", ".join(f"{n}={v:.4f}" for n, v in zip(result.objectives, arch.values))
        print(f"\ntrial {arch.trial}: {values}")
        print(f"  params: {arch.params}")
        print(f"  spec:   {arch.one_line}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", help="space file (default: the built-in default space)")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--out", type=Path, help="folder for the study and MLflow records (default: a temporary one)")
    args = p.parse_args(argv)
    if args.out is not None:
        report(run(args.out, args.space, args.trials, args.epochs, args.seed, args.threads))
        return 0
    with tempfile.TemporaryDirectory(prefix="searchcore-api-") as tmp:
        report(run(Path(tmp), args.space, args.trials, args.epochs, args.seed, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
