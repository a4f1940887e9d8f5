"""Section 4, search quality with real training: best test accuracy against epochs consumed.

Every search is ``searchcore.engine.api.run_search`` on the default digits space with real training
(searchcore's trainer), one torch thread, MLflow on, for several seeds per strategy:

* ``random``: random sampler, no pruner;
* ``tpe``: TPE (searchcore's settings), no pruner;
* ``tpe+hyperband``: TPE with the Hyperband pruner (the default space's strategy);
* ``nsga2``: NSGA-II on two objectives, val accuracy (max) and parameters (min);
* ``mf-evolution``: regularised evolution that screens every trial after its first epoch and trains
  the best 1/epochs share fully (the NAS-Bench-201 winner, checked here before it may be the default).

The benchmark plugin's ``train-test`` evaluator trains exactly as evaluator ``train`` does and also
scores each trained trial once on the test split; the searches look at val only. A search's curve
is, after each finished trial (in order of completion), the test accuracy of the trial with the best
val accuracy so far, against the epochs trained so far (a pruned trial counts the epochs it ran).
Reference: the seed's baseline CNN (every plugin off) trained for the same epochs with the same seed.

Child entry point::

    python -m benchmarks.quality --strategy NAME --seed S --trials N --epochs E --out FILE
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import Log, Section, Table, Target, load_plugin, pick, run_child, search_settings, write_json

STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"sampler": "random", "pruner": "none", "objectives": "[val_accuracy]"},
    "tpe": {"sampler": "tpe", "pruner": "none", "objectives": "[val_accuracy]"},
    "tpe+hyperband": {"sampler": "tpe", "pruner": "hyperband", "objectives": "[val_accuracy]"},
    "nsga2": {"sampler": "nsga2", "pruner": "none", "objectives": "[val_accuracy, params]"},
    "mf-evolution": {"sampler": "mf-evolution", "pruner": "none", "objectives": "[val_accuracy]"},
}
TARGET_FRACTION = 1 / 3
JOBS = 2

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "trials": 2, "epochs": 1, "strategies": ["random", "tpe+hyperband"]},
    "quick": {"seeds": 3, "trials": 6, "epochs": 2, "strategies": list(STRATEGIES)},
    "full": {"seeds": 5, "trials": 12, "epochs": 3, "strategies": list(STRATEGIES)},
}

SPACE = """\
name: quality
dataset: digits
backbone: seed-cnn
objectives: {objectives}
budget: {{trials: {trials}, epochs: {epochs}}}
search: {{sampler: {sampler}, pruner: {pruner}, seed: {seed}, evaluator: train-test}}
"""


# --- one search (a child process) -------------------------------------------------------------------


def one_search(strategy: str, seed: int, trials: int, epochs: int, workdir: Path) -> dict[str, Any]:
    """Run one search and return its trials in completion order: epochs used, val and test accuracy, size."""
    import optuna

    from searchcore.engine.api import run_search

    load_plugin()
    if strategy == "baseline":
        return {"strategy": strategy, "seed": seed, "baseline_test_accuracy": baseline(seed, epochs)}
    spec = STRATEGIES[strategy]
    space = workdir / "quality.yaml"
    space.write_text(SPACE.format(trials=trials, epochs=epochs, seed=seed, **spec))
    storage = f"sqlite:///{workdir / 'study.db'}"
    run_search(space, search_settings(trials=trials, epochs=epochs, seed=seed, storage=storage, tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                                      name="quality", threads=1, register=False, baseline=False, progress=False))
    study = optuna.load_study(study_name="quality", storage=storage)
    rows = []
    for t in sorted((t for t in study.trials if t.datetime_complete is not None), key=lambda t: t.datetime_complete):
        metrics = t.user_attrs.get("metrics", {})
        used = int(metrics.get("epochs", len(t.intermediate_values)))
        rows.append({"number": t.number, "state": t.state.name, "epochs": used,
                     "val": float(t.values[0]) if t.values else None, "test": metrics.get("test_accuracy"), "params": metrics.get("params")})
    return {"strategy": strategy, "seed": seed, "trials": rows}


def baseline(seed: int, epochs: int) -> float:
    """Test accuracy of the seed CNN (every plugin off) trained like a trial with ``seed``."""
    from searchcore.engine.config import load_space
    from searchcore.engine.results import baseline_test_accuracy
    from searchcore.engine.runner import prepare

    cfg = load_space(None)
    cfg.seed, cfg.epochs = seed, epochs
    return baseline_test_accuracy(prepare(cfg, load_plugin(), 1))


# --- curves -------------------------------------------------------------------------------------------


def curve(trials: list[dict[str, Any]]) -> list[tuple[int, float | None]]:
    """(epochs consumed so far, test accuracy of the best-by-val finished trial so far) after each trial."""
    out: list[tuple[int, float | None]] = []
    spent, best_val, best_test = 0, None, None
    for t in trials:
        spent += t["epochs"]
        if t["state"] == "COMPLETE" and t["val"] is not None and t["test"] is not None and (best_val is None or t["val"] > best_val):
            best_val, best_test = t["val"], float(t["test"])
        out.append((spent, best_test))
    return out


def at(points: list[tuple[int, float | None]], epochs: float) -> float:
    """A curve's value once ``epochs`` have been spent (0 before its first finished trial)."""
    value = 0.0
    for spent, acc in points:
        if spent > epochs:
            break
        value = acc if acc is not None else 0.0
    return value


def mean_curve(curves: list[list[tuple[int, float | None]]], grid: list[int]) -> list[float]:
    return [statistics.fmean(at(c, e) for c in curves) for e in grid]


def reach(grid: list[int], values: list[float], level: float) -> int | None:
    """First epoch count on ``grid`` where ``values`` reach ``level``."""
    for e, v in zip(grid, values):
        if v >= level - 1e-12:
            return e
    return None


# --- the section ------------------------------------------------------------------------------------------


def run(size: str, workdir: Path, log: Log) -> Section:
    preset = pick(size, PRESETS)
    section = Section("quality", "4. Search quality with real training (digits, default space)", size)
    seeds = list(range(preset["seeds"]))
    n, epochs = preset["trials"], preset["epochs"]
    jobs = [(s, seed) for seed in seeds for s in preset["strategies"]] + [("baseline", seed) for seed in seeds]

    def one(job: tuple[str, int]) -> dict[str, Any]:
        strategy, seed = job
        log(f"  quality: {strategy}, seed {seed} ({n} trials x {epochs} epochs)")
        args = ["--strategy", strategy, "--seed", str(seed), "--trials", str(n), "--epochs", str(epochs)]
        try:
            return run_child("benchmarks.quality", args, workdir / f"{strategy}-{seed}", log)
        except (RuntimeError, OSError) as e:
            return {"strategy": strategy, "seed": seed, "error": str(e).splitlines()[0][:300]}

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        results = list(pool.map(one, jobs))
    section.data = {"trials": n, "epochs": epochs, "seeds": seeds, "results": results}
    _tables(section, results, preset["strategies"], n, epochs)
    return section


def _tables(section: Section, results: list[dict[str, Any]], strategies: list[str], n: int, epochs: int) -> None:
    baselines = [r["baseline_test_accuracy"] for r in results if r["strategy"] == "baseline" and "baseline_test_accuracy" in r]
    curves = {s: [curve(r["trials"]) for r in results if r["strategy"] == s and "trials" in r] for s in strategies}
    errors = {s: [r["error"] for r in results if r["strategy"] == s and "error" in r] for s in strategies}
    budget = n * epochs
    checkpoints = sorted({max(1, round(budget * f)) for f in (1 / 6, 1 / 3, 1 / 2, 1.0)})
    grid = list(range(0, budget + 1))
    means = {s: mean_curve(c, grid) for s, c in curves.items() if c}
    random_final = statistics.fmean(c[-1][1] or 0.0 for c in curves.get("random", [])) if curves.get("random") else None
    random_epochs = statistics.fmean(c[-1][0] for c in curves.get("random", [])) if curves.get("random") else None
    rows = []
    for s in strategies:
        cs = curves[s]
        if not cs:
            rows.append([s, "0", *(["-"] * (len(checkpoints) + 3)), "; ".join(errors[s])[:200] or "no result"])
            continue
        finals = [c[-1][1] or 0.0 for c in cs]
        spent = statistics.fmean(c[-1][0] for c in cs)
        cells = [f"{100 * at_mean:.2f}" for at_mean in (statistics.fmean(at(c, e) for c in cs) for e in checkpoints)]
        reached = reach(grid, means[s], random_final) if random_final is not None else None
        rows.append([s, str(len(cs)), *cells, f"{100 * statistics.fmean(finals):.2f} +- {100 * (statistics.pstdev(finals)):.2f}",
                     f"{spent:.0f}", f"{reached}" if reached is not None else "not reached", "; ".join(errors[s])[:200]])
    base = f"{100 * statistics.fmean(baselines):.2f} +- {100 * statistics.pstdev(baselines):.2f}" if baselines else "-"
    section.tables.append(Table(
        f"Best test accuracy (%) by epochs consumed, mean over seeds ({n} trials x {epochs} epochs per search)",
        ["strategy", "seeds", *[f"at {e} epochs" for e in checkpoints], "final (mean +- sd)", "epochs used",
         "epochs to random's final best", "errors"],
        rows,
        f"Reference: the seed's baseline CNN (every plugin off, same epochs and seeds): {base} %. The test accuracy shown is that of "
        "the best-by-val trial so far; epochs consumed count pruned trials' epochs. 'epochs to random's final best': first point "
        "where the strategy's mean curve reaches random search's mean final best.",
    ))
    nsga = [r for r in results if r["strategy"] == "nsga2" and "trials" in r]
    if nsga:
        front_sizes, smallest = [], []
        for r in nsga:
            done = [t for t in r["trials"] if t["state"] == "COMPLETE" and t["val"] is not None and t["params"] is not None]
            front = [t for t in done if not any((o["val"] >= t["val"] and o["params"] <= t["params"]) and (o["val"] > t["val"] or o["params"] < t["params"])
                                                for o in done)]
            front_sizes.append(len(front))
            good = [t["params"] for t in front if random_final is not None and t["test"] is not None and t["test"] >= random_final - 0.01]
            if good:
                smallest.append(min(good))
        section.tables.append(Table(
            "NSGA-II: accuracy vs. parameters",
            ["seeds", "Pareto front size (mean)", "smallest front model within 1 point of random's final best test acc (params, median)"],
            [[str(len(nsga)), f"{statistics.fmean(front_sizes):.1f}", f"{statistics.median(smallest):,.0f}" if smallest else "-"]],
        ))
    if random_final is not None and "tpe+hyperband" in means and random_epochs:
        reached = reach(grid, means["tpe+hyperband"], random_final)
        fraction = reached / random_epochs if reached is not None else None
        section.targets.append(Target(
            "quality: TPE+Hyperband vs. random search", f"reaches random's final best with <= 1/3 of its epochs ({random_epochs:.0f})",
            f"reached at {reached} epochs ({fraction:.2f} of random's)" if fraction is not None else "not reached within its budget",
            fraction is not None and fraction <= TARGET_FRACTION))
    section.data["random_final_mean"] = random_final
    section.data["baseline_mean"] = statistics.fmean(baselines) if baselines else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description="One search of the quality section (a child of benchmarks.run).")
    p.add_argument("--strategy", choices=[*STRATEGIES, "baseline"], required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    write_json(Path(a.out), one_search(a.strategy, a.seed, a.trials, a.epochs, Path.cwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
