"""NAS-Bench-201 (CIFAR-10): how good an architecture each search strategy finds for a given budget.

Every search is a plain in-memory Optuna study over the ``nasbench201`` plugin's six dimensions,
scored by the plugin's table evaluator exactly as searchcore would call it. Budgets are in
full-training equivalents (FTE), and what a strategy sees is what it pays for: a full lookup (the
200-epoch validation accuracy) costs 1; a strategy with a pruner also sees the 12-epoch VALIDATION
accuracy, reported first, which costs 12/200, also when the trial then goes on to the full lookup;
a strategy with a zero-cost scorer pays 0.0005 for each NASWOT score it asks for. Strategies without
a pruner never see the 12-epoch score and are not charged for it. A search stops before the lookup
that would overrun the budget (a trial promoted without budget left is stopped at the screening
step, a proxy score that does not fit is refused).

The result of a search is the CIFAR-10 test accuracy of the architecture the search itself reports
as best by validation: the best 200-epoch validation accuracy among the cells it trained in full,
or, before it has trained any in full, the best 12-epoch validation accuracy among those it screened
(the order :func:`searchcore.engine.strategies.fitness_key` ranks trials in). No strategy ever
chooses by test accuracy; the 12-epoch test column is not read.

No strategy knows the budget, so one run to the largest budget gives every smaller budget's result
exactly: the best evaluation finished before the spent budget first passed it (the lookup that
would have overrun is the only one that differs, and it would not have counted).

``python -m benchmarks.nb201 [--quick] [--seeds N] [--json PATH]``; as a section of
``benchmarks.run``: ``run(size, workdir, log)``. The table is not part of the repository: give it
with ``--table`` or ``$SEARCHCORE_NB201_TABLE``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from searchcore_plugins import nasbench201 as nb

from benchmarks import Log, Section, Table, Target, machine, pick, write_json
from searchcore.engine.strategies import (
    EvolutionSampler,
    Scorer,
    multi_fidelity_evolution,
    multi_fidelity_tpe,
)
from searchcore.space import sample

# the shared data folder sits beside the project checkout (../shared), in CI as here
SHARED_TABLE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-bench-201" / "cifar10.csv")
LOW_COST = nb.LOW_FIDELITY_EPOCHS / nb.FULL_EPOCHS
FULL_COST = 1.0
ZC_COST = 0.0005  # one NASWOT score: about 1 s of a 1,830 s training
EPS = 1e-9
DEFAULT = "default"
BEST = "zc-evolution"  # the strategy this benchmark reports as searchcore's best
PEER = "tpe"
TARGETS = {2: 94.20, 5: 94.30}  # FTE -> mean test accuracy (%) over the seeds, for BEST
BUDGETS = [0.5, 1, 2, 3, 5, 10, 50, 100]
CURVE = ("default", "random", "tpe", BEST)  # the strategies the anytime plot shows
PLOT = Path(__file__).resolve().parent / "img" / "nb201-anytime.png"
REFERENCES = (
    "optimum 94.37; RoBoT (ICLR 2024) 94.36 at ~1.2 FTE, RANK-NOSH 94.26 at ~1.5 FTE, local search 94.14 at 6 FTE; "
    "REA 93.92 +- 0.30 and random 93.70 +- 0.36 (NAS-Bench-201 paper)"
)

# name -> factory(seed, scorer) -> (sampler, pruner or None); only zero-cost strategies use the scorer
Strategy = Callable[[int, Scorer], tuple[optuna.samplers.BaseSampler, Any]]


def searchcore_default(seed: int, scorer: Scorer | None = None) -> tuple[optuna.samplers.BaseSampler, Any]:
    """What ``searchcore search`` runs when the space names no strategy (sampler ``auto``, its default
    pruner), resolved through the plugins' catalog as a search does, for 200-epoch trials."""
    from searchcore.engine.config import SpaceConfig
    from searchcore.engine.samplers import make_pruner, make_sampler
    from searchcore.plugins.host import get_host

    cfg = SpaceConfig(source="(defaults)", text="")
    dims = nb.searchcore_dimensions(base=nb.backbone([3, 32, 32], 10, {}), options={})
    sampler = make_sampler(cfg.sampler, seed, ["maximize"], get_host(), dimensions=dims, epochs=nb.FULL_EPOCHS, scorer=scorer)
    return sampler, getattr(sampler, "pruner", None) or make_pruner(cfg.pruner, nb.FULL_EPOCHS, False)


def catalog(name: str) -> Strategy:
    """A sampler from the plugins' catalog by name, as a space file naming it gets it (with its pruner)."""

    def factory(seed: int, scorer: Scorer | None = None) -> tuple[optuna.samplers.BaseSampler, Any]:
        from searchcore.engine.samplers import make_sampler
        from searchcore.plugins.host import get_host

        sampler = make_sampler(name, seed, ["maximize"], get_host(), epochs=nb.FULL_EPOCHS, scorer=scorer)
        return sampler, getattr(sampler, "pruner", None)

    return factory


STRATEGIES: dict[str, Strategy] = {
    "default": searchcore_default,
    "random": lambda seed, scorer=None: (optuna.samplers.RandomSampler(seed=seed), None),
    "tpe": lambda seed, scorer=None: (optuna.samplers.TPESampler(seed=seed), None),
    "evolution": lambda seed, scorer=None: (EvolutionSampler(seed=seed), None),
    "mf-tpe": lambda seed, scorer=None: multi_fidelity_tpe(seed=seed),
    "mf-evolution": lambda seed, scorer=None: multi_fidelity_evolution(seed=seed),
    BEST: catalog(BEST),
}
DESCRIPTIONS = {
    "random": "Optuna RandomSampler",
    "tpe": "Optuna TPESampler, defaults (the peer)",
    "evolution": "regularised evolution, P=20, S=5, no repeats",
    "mf-tpe": "multivariate TPE, no repeats + promotion pruner (top 1/16 at 12 epochs)",
    "mf-evolution": "evolution + promotion pruner (top 1/16 at 12 epochs)",
    BEST: "zero-cost first: NASWOT-filtered start, ridge-model local search on the 12-epoch scores, scheduled promotion",
    "default": "searchcore's default strategy (sampler auto and its pruner, as `searchcore search` resolves them)",
}
PRESETS = {
    "smoke": {"seeds": 2, "budgets": [1, 3]},
    "quick": {"seeds": 5, "budgets": BUDGETS},
    "full": {"seeds": 30, "budgets": BUDGETS},
}


def bkey(budget: float) -> str:
    """A budget as a JSON key: ``50``, ``12.5``."""
    return f"{budget:g}"


def table_path(given: str | None = None) -> Path | None:
    """``--table``, else ``$SEARCHCORE_NB201_TABLE``, else the shared data folder; None when none exists."""
    for candidate in (given, os.environ.get(nb.TABLE_ENV), SHARED_TABLE):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class Ledger:
    """The budget of one search: charges each lookup a strategy sees and refuses one that would overrun."""

    def __init__(self, budget: float) -> None:
        self.budget, self.spent, self.low, self.full, self.proxy = budget, 0.0, 0, 0, 0

    def can(self, cost: float) -> bool:
        return self.spent + cost <= self.budget + EPS

    def charge(self, cost: float) -> None:
        self.spent += cost
        if cost == LOW_COST:
            self.low += 1
        elif cost == ZC_COST:
            self.proxy += 1
        else:
            self.full += 1


def search(strategy: str, seed: int, budgets: list[float], table: str | Path) -> dict[str, Any]:
    """One seeded search up to the largest budget; the result at every budget in ``budgets``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    base = nb.backbone([3, 32, 32], 10, {})
    dims = nb.searchcore_dimensions(base=base, options={})
    config = {"plugins": {nb.PLUGIN: {"table": str(table)}}}
    top = max(budgets)
    ledger = Ledger(top)

    def scorer(params: dict[str, Any]) -> float | None:
        """NASWOT for a full params dict, charged to the search; refused (None) when it would overrun."""
        if not ledger.can(ZC_COST):
            return None
        ledger.charge(ZC_COST)
        return nb.zero_cost(nb.searchcore_transform(spec=base, params=params), config).get("naswot")

    sampler, pruner = STRATEGIES[strategy](seed, scorer)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner or optuna.pruners.NopPruner())
    screened = pruner is not None
    # (spent after the lookup, fidelity: 1 screened / 2 full, validation accuracy, test accuracy)
    history: list[tuple[float, int, float, float]] = []
    t0 = time.perf_counter()
    while ledger.can(LOW_COST if screened else FULL_COST):
        trial = study.ask()
        params = sample(trial, dims)
        spec = nb.searchcore_transform(spec=base, params=params)

        entry = nb.lookup(nb.load_table(table), nb.spec_ops(spec), str(table))  # the test accuracy, for the record

        def report(
            epoch: int, metrics: dict[str, float], _trial: optuna.Trial = trial, _test: float = entry.test_acc
        ) -> None:
            if not screened:
                return  # the strategy never sees the 12-epoch score: not charged
            ledger.charge(LOW_COST)
            history.append((ledger.spent, 1, metrics["val_accuracy"], _test / 100.0))
            _trial.report(metrics["val_accuracy"], epoch)
            if _trial.should_prune() or not ledger.can(FULL_COST):
                raise optuna.TrialPruned()

        try:
            result = nb.evaluate(spec, config, report)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        ledger.charge(FULL_COST)
        study.tell(trial, result["val_accuracy"])
        history.append((ledger.spent, 2, result["val_accuracy"], result["test_accuracy"]))
    seconds = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    out: dict[str, Any] = {
        "strategy": strategy,
        "seed": seed,
        "seconds": seconds,
        "trials": len(trials),
        "screened": ledger.low,
        "full": ledger.full,
        "proxy": ledger.proxy,
        "spent": ledger.spent,
        "budgets": {},
    }
    for b in budgets:
        done = [h for h in history if h[0] <= b + EPS]
        best = max(done, key=lambda h: (h[1], h[2])) if done else None  # a full result outranks a screened one
        out["budgets"][bkey(b)] = {
            "test": None if best is None else 100 * best[3],
            "valid": None if best is None else 100 * best[2],
            "fidelity": None if best is None else ("full" if best[1] == 2 else "12 epochs"),
            "full": sum(h[1] == 2 for h in done),
        }
    return out


def _job(args: tuple[str, int, list[float], str]) -> dict[str, Any]:
    return search(*args)


def run_all(
    strategies: list[str], seeds: list[int], budgets: list[float], table: Path, jobs: int, log: Log
) -> dict[str, Any]:
    """Every strategy x seed, ``jobs`` processes; per strategy and budget: mean, std, standard error."""
    nb.load_table(table)  # parsed once, before the workers fork
    work = [(s, seed, budgets, str(table)) for s in strategies for seed in seeds]
    t0 = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            runs = list(pool.map(_job, work, chunksize=1))
    else:
        runs = [_job(w) for w in work]
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = {}
    for s in strategies:
        mine = [r for r in runs if r["strategy"] == s]
        row: dict[str, Any] = {"search_seconds": sum(r["seconds"] for r in mine), "budgets": {}}
        for b in budgets:
            tests = [r["budgets"][bkey(b)]["test"] for r in mine]
            got = [t for t in tests if t is not None]
            mean = statistics.fmean(got) if got else math.nan
            std = statistics.pstdev(got) if len(got) > 1 else 0.0
            row["budgets"][bkey(b)] = {
                "mean": mean,
                "std": std,
                "sem": std / math.sqrt(len(got)) if got else math.nan,
                "n": len(got),
                "none_found": len(tests) - len(got),
                "tests": tests,
                "full_evaluations": statistics.fmean(r["budgets"][bkey(b)]["full"] for r in mine),
            }
        row["trials"] = statistics.fmean(r["trials"] for r in mine)
        row["proxy"] = statistics.fmean(r["proxy"] for r in mine)
        row["screened"] = statistics.fmean(r["screened"] for r in mine)
        summary[s] = row
        log(
            f"  nb201: {s:13s} "
            + "  ".join(f"{b:g} FTE {row['budgets'][bkey(b)]['mean']:.2f}" for b in budgets)
            + f"  ({row['search_seconds']:.0f} s of searching)"
        )
    return {"summary": summary, "runs": runs, "wall_seconds": wall, "seeds": seeds, "budgets": budgets, "jobs": jobs}


def cell(entry: dict[str, Any]) -> str:
    """``mean ± std`` over the seeds that found something; how many found nothing when some did not."""
    if not entry["n"]:
        return "—"
    text = f"{entry['mean']:.2f} ± {entry['std']:.2f}"
    return text + (f" ({entry['n']}/{entry['n'] + entry['none_found']})" if entry["none_found"] else "")


def tables(data: dict[str, Any]) -> tuple[Table, list[Target]]:
    budgets = data["budgets"]
    rows = []
    for s, row in data["summary"].items():
        top = bkey(budgets[-1])
        rows.append(
            [
                s + (" (best)" if s == BEST else ""),
                *[cell(row["budgets"][bkey(b)]) for b in budgets],
                f"{row['budgets'][top]['full_evaluations']:.1f}",
                f"{row['trials']:.0f}",
                f"{row.get('proxy', 0.0):.0f}",
                f"{row['search_seconds']:.0f}",
                DESCRIPTIONS.get(s, ""),
            ]
        )
    n = len(data["seeds"])
    table = Table(
        f"NAS-Bench-201 CIFAR-10, anytime: test accuracy (%) of the chosen cell per budget in FTE, mean ± std over {n} seeds",
        [
            "strategy",
            *[f"{b:g} FTE" for b in budgets],
            f"full trainings @{budgets[-1]:g}",
            f"trials @{budgets[-1]:g}",
            f"proxy scores @{budgets[-1]:g}",
            "search s (sum)",
            "what",
        ],
        rows,
        "FTE: one 200-epoch training; a 12-epoch screening costs 0.06, a NASWOT score 0.0005, both charged. "
        "Honest fidelity: screening reads the 12-epoch VALIDATION accuracy. The chosen cell is the best by 200-epoch "
        "validation among those trained in full, or, before any, the best by 12-epoch validation among those "
        "screened; '—': nothing evaluated within the budget, (k/n): only k of n seeds had. "
        f"References: {REFERENCES}. "
        f"Wall time {data['wall_seconds']:.0f} s on {data['jobs']} processes.",
    )
    targets = []
    summary = data["summary"]
    for b, goal in TARGETS.items():
        mine = summary.get(BEST, {}).get("budgets", {}).get(bkey(b))
        if mine is None:
            continue
        peer = summary.get(PEER, {}).get("budgets", {}).get(bkey(b))
        default = summary.get(DEFAULT, {}).get("budgets", {}).get(bkey(b))
        measured = f"{mine['mean']:.2f} ± {mine['sem']:.2f} (sem)" + "".join(
            f"; {name} {other['mean']:.2f}" if other and other["n"] else f"; {name} —"
            for name, other in (("TPE", peer), ("default", default))
        )
        met = mine["n"] == len(data["seeds"]) and mine["mean"] >= goal
        note = "" if met else f"{goal - mine['mean']:.2f} points short; see the NAS-Bench-201 section"
        targets.append(Target(f"NAS-Bench-201 at {b:g} FTE ({BEST})", f">= {goal:.2f}", measured, met, note))
    return table, targets


def plot(data: dict[str, Any], path: Path) -> Path | None:
    """The anytime curve of the strategies in :data:`CURVE` as a PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    budgets = data["budgets"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for s in CURVE:
        row = data["summary"].get(s)
        if row is None:
            continue
        pts = [(b, row["budgets"][bkey(b)]) for b in budgets if row["budgets"][bkey(b)]["n"]]
        xs = [b for b, _ in pts]
        ys = [e["mean"] for _, e in pts]
        err = [e["sem"] for _, e in pts]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=s + (" (best)" if s == BEST else ""))
    for b, goal in TARGETS.items():
        ax.plot([b], [goal], marker="*", color="black", markersize=11, linestyle="none")
    ax.axhline(94.37, color="grey", linestyle=":", linewidth=1, label="optimum 94.37")
    ax.plot([1.2, 1.5, 6], [94.36, 94.26, 94.14], marker="x", color="grey", linestyle="none",
            label="RoBoT, RANK-NOSH, local search (published)")
    ax.set_xscale("log")
    ax.set_xlabel("budget (full-training equivalents, log scale)")
    ax.set_ylabel("CIFAR-10 test accuracy of the chosen cell (%)")
    ax.set_ylim(92.0, 94.5)
    ax.set_title(f"NAS-Bench-201, honest 12-epoch fidelity, {len(data['seeds'])} seeds (mean ± sem); * goals")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(size: str, workdir: Path, log: Log) -> Section:
    """The section for ``benchmarks.run``; without the table it says so and measures nothing."""
    preset = pick(size, PRESETS)
    section = Section("nb201", "NAS-Bench-201 search quality per budget (anytime, FTE)", size)
    table = table_path()
    if table is None:
        why = f"skipped: no NAS-Bench-201 table (set ${nb.TABLE_ENV} to its cifar10.csv)"
        section.notes.append(why)
        section.tables.append(Table(section.title, ["status"], [[why]]))
        return section
    data = run_all(
        list(STRATEGIES), list(range(preset["seeds"])), preset["budgets"], table, min(2, os.cpu_count() or 1), log
    )
    t, targets = tables(data)
    section.tables.append(t)
    section.targets.extend(targets if size != "smoke" else [])
    if size == "full":
        img = plot(data, PLOT)
        if img is not None:
            section.notes.append(f"![NAS-Bench-201 anytime curve](img/{img.name})")
    section.data = {k: v for k, v in data.items() if k != "runs"}
    section.seconds = data["wall_seconds"]
    return section


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nb201", description=__doc__.splitlines()[0])
    p.add_argument("--table", help=f"the CIFAR-10 table (default ${nb.TABLE_ENV})")
    p.add_argument("--seeds", type=int, help="seeds per strategy (default 30; 5 with --quick)")
    p.add_argument("--seed-offset", type=int, default=0, help="first seed (tune on other seeds than you report)")
    p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS, help=f"budgets in FTE (default {BUDGETS})")
    p.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), default=list(STRATEGIES))
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    p.add_argument("--quick", action="store_true", help="5 seeds: a check that it runs, not figures to quote")
    p.add_argument("--json", "--out", dest="json", help="write the results here")
    p.add_argument("--plot", help=f"save the anytime curve here (e.g. {PLOT.relative_to(Path.cwd()) if PLOT.is_relative_to(Path.cwd()) else PLOT})")
    a = p.parse_args(argv)
    table = table_path(a.table)
    if table is None:
        print(f"no NAS-Bench-201 table: give --table or ${nb.TABLE_ENV}", file=sys.stderr)
        return 2
    seeds = a.seeds or (5 if a.quick else 30)
    data = run_all(
        a.strategies,
        list(range(a.seed_offset, a.seed_offset + seeds)),
        sorted(a.budgets),
        table,
        a.jobs,
        lambda m: print(m, file=sys.stderr, flush=True),
    )
    t, targets = tables(data)
    print(t.text())
    for target in targets:
        print(f"target {target.name}: {target.goal}: {target.measured} -> {target.verdict}")
    if a.plot:
        print(f"plot: {plot(data, Path(a.plot)) or 'matplotlib not installed'}")
    if a.json:
        write_json(
            Path(a.json), {"machine": machine(), "table": str(table), **data, "targets": [vars(x) for x in targets]}
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
