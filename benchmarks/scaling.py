"""Section 3, parallel scaling: finished trials per minute with 1 and 2 workers on this machine's cores.

The same seed-CNN trials as the overhead section (the ``replay`` sampler, one torch thread per
trial, MLflow on), run by ``searchcore.engine.api.run_search``:

* Optuna backend, ``workers=1`` and ``workers=2`` (the second worker is a ``searchcore worker``
  subprocess on Optuna's journal file, searchcore's default store for several local workers);
* Ray backend, ``max_concurrent=1`` and ``2`` (one CPU per trial, no scheduler), where it exists.

Two rates per run: end to end (trials over the whole call, start-up of workers and clusters
included) and steady state (trials finished after every worker's first one, over the time from
the last of those first completions to the last completion), read from the trials' MLflow records.
The speed-up target applies to the steady state, which is what a long search sees; the end-to-end
figure shows what start-up costs a search this short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import Log, Section, Table, Target, fmt_s, fmt_x, pick, run_child

TARGET = 1.9  # issue #17: 2 workers on 2 cores, steady state

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"trials": 3, "epochs": 1, "configs": [("searchcore", 2), ("searchcore-ray", 2)]},
    # quick: 24 trials; with fewer the second Optuna worker may finish none before the search ends
    "quick": {"trials": 24, "epochs": 2, "configs": [("searchcore", 1), ("searchcore", 2), ("searchcore-ray", 1), ("searchcore-ray", 2)]},
    "full": {"trials": 60, "epochs": 4, "configs": [("searchcore", 1), ("searchcore", 2), ("searchcore-ray", 1), ("searchcore-ray", 2)]},
}
LABELS = {"searchcore": "Optuna backend (multi-process)", "searchcore-ray": "Ray backend"}


def rates(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """(end-to-end, steady-state) finished trials per minute of one run.

    Steady state starts when every worker has finished its first trial. With each worker's finish
    times (``worker_ends``, Optuna backend) that is the latest of their first finishes, and a run in
    which a worker finished nothing never reached it (None). Without them (Ray: its trial processes
    are not the workers), the ``concurrency``-th finish stands for it.
    """
    ends = sorted(row.get("ends") or [])
    n, w = len(ends), row["concurrency"]
    end_to_end = 60.0 * n / row["wall"] if row.get("wall") else None
    by_worker = row.get("worker_ends")
    if by_worker:
        if len(by_worker) < w:
            return end_to_end, None
        start = max(min(v) for v in by_worker.values())
        ends = sorted(e for v in by_worker.values() for e in v)
    else:
        start = ends[w - 1] if n >= w else None
    after = [e for e in ends if start is not None and e > start]
    steady = 60.0 * len(after) / (after[-1] - start) if after and after[-1] > start else None
    return end_to_end, steady


def worker_note(row: dict[str, Any]) -> str:
    """Trials each worker process finished, e.g. ``trials per worker 7+5``."""
    by_worker = row.get("worker_ends")
    if not by_worker or row["concurrency"] < 2:
        return ""
    counts = sorted((len(v) for v in by_worker.values()), reverse=True) + [0] * max(0, row["concurrency"] - len(by_worker))
    return "; trials per worker " + "+".join(str(c) for c in counts)


def run(size: str, workdir: Path, log: Log) -> Section:
    from benchmarks.overhead import fixed_params

    preset = pick(size, PRESETS)
    section = Section("scaling", "3. Parallel scaling (1 vs. 2 workers)", size)
    n, epochs = preset["trials"], preset["epochs"]
    replay = workdir / "replay-seed.json"
    workdir.mkdir(parents=True, exist_ok=True)
    replay.write_text(json.dumps(fixed_params("seed", n)))
    results = []
    for i, (stack, workers) in enumerate(preset["configs"]):
        log(f"  scaling: {LABELS[stack]}, {workers} worker(s), {n} trials x {epochs} epochs")
        row: dict[str, Any] = {"stack": stack, "concurrency": workers, "trials": n, "epochs": epochs}
        args = ["--stack", stack, "--trials", str(n), "--epochs", str(epochs), "--concurrency", str(workers)]
        try:
            row.update(run_child("benchmarks.overhead", args, workdir / f"{i}-{stack}-{workers}", log, replay=replay))
        except (RuntimeError, OSError) as e:
            text = str(e)
            row["error"] = ("not available: " + text.strip().splitlines()[-1][:200]) if "NotImplementedError" in text else text.splitlines()[0][:300]
            log(f"    {row['error']}")
        row["end_to_end"], row["steady"] = rates(row) if "wall" in row else (None, None)
        results.append(row)
    section.data = {"trials": n, "epochs": epochs, "results": results}
    render(section)
    return section


def render(section: Section) -> None:
    """The section's table and targets from its measured data (``python -m benchmarks.run --render`` re-renders)."""
    section.tables, section.targets = [], []
    results, n, epochs = section.data["results"], section.data["trials"], section.data["epochs"]
    rows = []
    for stack in dict.fromkeys(r["stack"] for r in results):
        mine = {r["concurrency"]: r for r in results if r["stack"] == stack}
        one = mine.get(1, {})
        for w, r in sorted(mine.items()):
            if "error" in r:
                rows.append([LABELS[stack], str(w), "-", "-", "-", "-", "-", r["error"]])
                continue
            e2e_x = r["end_to_end"] / one["end_to_end"] if w > 1 and one.get("end_to_end") and r["end_to_end"] else None
            st_x = r["steady"] / one["steady"] if w > 1 and one.get("steady") and r["steady"] else None
            rows.append([LABELS[stack], str(w), fmt_s(r["wall"], 1), fmt_s(r["end_to_end"], 1), fmt_s(r["steady"], 1),
                         fmt_x(e2e_x) if w > 1 else "", fmt_x(st_x) if w > 1 else "", f"CPU {r['cpu']:.1f} s; {r.get('records', '')}{worker_note(r)}"])
            if w == 2:
                met = None if st_x is None else st_x >= TARGET
                extra = r["cpu"] / one["cpu"] if one.get("cpu") and r.get("cpu") else None
                why = (f"left: 2 workers on 2 cores leave no core for the rest; the 2-worker run spent {fmt_x(extra)} the CPU "
                       f"of the 1-worker run for the same {r['trials']} trials (worker start-up, each worker's MLflow writer, "
                       "the driver or Ray's own processes), CPU the trials would otherwise have") if met is False and extra else ""
                section.targets.append(Target(f"scaling: {LABELS[stack]}", f">= {TARGET}x trials/min with 2 workers (steady state)",
                                              f"{st_x:.2f}x steady, {e2e_x:.2f}x end to end" if st_x and e2e_x else "-", met, why))
        if 2 in mine and "error" in mine[2]:
            section.targets.append(Target(f"scaling: {LABELS[stack]}", f">= {TARGET}x trials/min with 2 workers", "-", None, mine[2]["error"]))
    section.tables.append(Table(
        f"Finished trials per minute, {n} seed-CNN trials x {epochs} epochs, 1 torch thread per trial",
        ["backend", "workers", "wall s", "trials/min end to end", "trials/min steady", "speed-up end to end", "speed-up steady", "notes"],
        rows,
        "steady: trials finished after each worker's first, over the time from the last first completion to the last "
        "completion (Optuna: the study's finish times by worker process; '-' when a worker finished no trial, i.e. it was still "
        "starting up when the search ended; Ray: MLflow record end times). end to end includes starting the worker "
        "subprocess or the Ray cluster.",
    ))
