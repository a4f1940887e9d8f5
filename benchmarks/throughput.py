"""Section 6, trainer throughput: training samples per second of searchcore's trainer vs. a bare loop.

Same model (the seed CNN, built by ``searchcore.arch.build.build`` with the same seed), same data, same
batches, same optimiser and schedule, same per-epoch val scoring: ``searchcore.train.trainer.train_model``
against the hand-written loop of the overhead section (:func:`benchmarks.overhead.bare_fit`). Two
workloads: the digits split (8x8, tiny: per-step overheads dominate) and a CIFAR-shaped synthetic
set (3x32x32: convolution dominates). On CPU both run fp32 with the given torch threads; on a GPU
the trainer uses bf16 autocast and channels_last, and the bare loop is measured both plain and with
bf16 autocast. Each figure is the best of several alternating repetitions (the least disturbed).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import Log, Section, Table, load_plugin, pick

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"repeats": 1, "epochs": {"digits": 1, "cifar-shaped": 1}, "cifar_n": 128, "threads": [1]},
    "quick": {"repeats": 3, "epochs": {"digits": 5, "cifar-shaped": 1}, "cifar_n": 1024, "threads": [1]},
    "full": {"repeats": 5, "epochs": {"digits": 5, "cifar-shaped": 2}, "cifar_n": 2048, "threads": [1, 0]},
}


def cifar_shaped(n: int, seed: int = 0) -> Any:
    """Random 3x32x32 images in 10 classes (train ``n``, val and test ``n // 4``): the shape of CIFAR-10."""
    import torch

    from searchcore.train.data import Splits

    g = torch.Generator().manual_seed(seed)
    m = max(2, n // 4)

    def part(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(k, 3, 32, 32, generator=g), torch.randint(0, 10, (k,), generator=g)

    (tx, ty), (vx, vy), (sx, sy) = part(n), part(m), part(m)
    return Splits(tx, ty, vx, vy, sx, sy, 10, "cifar-shaped")


def digits() -> Any:
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import load_splits

    return load_splits(load_space(None), load_plugin())


def measure(workload: str, splits: Any, epochs: int, repeats: int, threads: int, device: Any) -> list[dict[str, Any]]:
    """Samples per second of the trainer and of the bare loop(s) on one workload, best of ``repeats``."""
    import torch

    from benchmarks.overhead import bare_fit
    from searchcore.arch.build import build
    from searchcore.builtin.core import seed_cnn
    from searchcore.train.trainer import TrainConfig, set_threads, train_model

    set_threads(threads)
    torch.set_num_threads(threads)
    host = load_plugin()
    spec = seed_cnn(splits.input_shape, splits.classes, {})
    cuda = device.type == "cuda"
    on_device = splits.to(device) if cuda else splits
    contenders: dict[str, Any] = {
        "searchcore train_model" + (" (bf16 autocast, channels_last)" if cuda else ""):
            lambda m: train_model(m, splits, TrainConfig(epochs=epochs, seed=0, threads=threads, device=str(device))),
        "bare loop" + (" (fp32)" if cuda else ""): lambda m: bare_fit(m.to(device), on_device, epochs, seed=0),
    }
    if cuda:
        contenders["bare loop (bf16 autocast)"] = lambda m: bare_fit(m.to(device), on_device, epochs, seed=0, amp=True)
    seconds: dict[str, list[float]] = {k: [] for k in contenders}
    for fit in contenders.values():  # warm-up: first-call allocations and kernel selection
        fit(build(spec, host.blocks(), seed=0))
    for _ in range(repeats):
        for name, fit in contenders.items():
            model = build(spec, host.blocks(), seed=0)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fit(model)
            if cuda:
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - t0)
    samples = len(splits.train_x) * epochs
    rows = []
    for name, s in seconds.items():
        rows.append({"workload": workload, "contender": name, "threads": threads, "device": str(device), "epochs": epochs,
                     "samples": samples, "best_s": min(s), "median_s": statistics.median(s), "samples_per_s": samples / min(s)})
    return rows


def run(size: str, workdir: Path, log: Log) -> Section:
    import os

    import torch

    preset = pick(size, PRESETS)
    section = Section("throughput", "6. Trainer throughput vs. a bare loop", size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workloads = {"digits": digits(), "cifar-shaped": cifar_shaped(preset["cifar_n"])}
    previous = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        for threads in preset["threads"]:
            threads = threads or (os.cpu_count() or 1)
            for name, splits in workloads.items():
                log(f"  throughput: {name}, {threads} thread(s), {device}")
                rows += measure(name, splits, preset["epochs"][name], preset["repeats"], threads, device)
    finally:
        torch.set_num_threads(previous)
    section.data = {"device": str(device), "results": rows}
    table_rows = []
    for r in rows:
        bare = next(b for b in rows if b["workload"] == r["workload"] and b["threads"] == r["threads"] and b["contender"].startswith("bare loop"))
        table_rows.append([r["workload"], str(r["threads"]), r["contender"], f"{r['samples_per_s']:,.0f}", f"{r['best_s']:.3f}",
                           f"{r['median_s']:.3f}", f"{r['samples_per_s'] / bare['samples_per_s']:.3f}"])
    note = ("No GPU on this machine: AMP (bf16 autocast) is measured only where CUDA is available." if device.type == "cpu"
            else "On CUDA the trainer runs bf16 autocast and channels_last; the bare loop runs fp32 and bf16 autocast.")
    section.tables.append(Table(
        f"Training samples per second, seed CNN ({device}); val scored after every epoch by both",
        ["workload", "threads", "trainer", "samples/s (best)", "best s", "median s", "vs. bare loop"],
        table_rows, note,
    ))
    section.notes.append(note)
    return section
