"""Every benchmark section runs end to end at its tiny ``smoke`` size, and the runner writes its JSON
and Markdown. Nothing here reads a timing: benchmarks are measured by ``make bench``, not by tests."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The ``benchmarks`` package (it lives beside ``tests``, not in the installed distribution)."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)
    return importlib.import_module("benchmarks")


def _run(name: str, tmp_path: Path) -> Any:
    module = importlib.import_module(f"benchmarks.{name}")
    lines: list[str] = []
    section = module.run("smoke", tmp_path / name, lines.append)
    assert section.name == name and section.size == "smoke"
    assert section.tables and all(t.rows for t in section.tables), f"{name}: empty table"
    for t in section.tables:
        assert all(len(r) == len(t.columns) for r in t.rows), f"{name}: ragged table {t.title!r}"
        assert t.markdown().count("\n|") >= len(t.rows) + 1
    json.dumps(section.as_json(), default=str)  # the JSON the runner writes
    return section


@pytest.mark.slow
def test_overhead(bench: Any, tmp_path: Path) -> None:
    section = _run("overhead", tmp_path)
    rows = {r["stack"]: r for r in section.data["results"]}
    assert {"bare", "searchcore", "optuna+mlflow", "ray-tune"} <= set(rows)
    for stack, r in rows.items():
        assert "error" not in r, f"{stack}: {r.get('error')}"
        assert r["wall"] > 0 and r["accuracy"] is not None
    # the same architectures, data and arithmetic: every stack reaches the same val accuracy
    assert rows["searchcore"]["accuracy"] == pytest.approx(rows["bare"]["accuracy"], abs=1e-6)
    assert rows["optuna+mlflow"]["accuracy"] == pytest.approx(rows["bare"]["accuracy"], abs=1e-6)
    assert rows["searchcore"]["records"] == "2 trial runs"
    assert any(b["part"].startswith("training") and b["seconds"] > 0 for b in rows["searchcore+profile"]["profile"]["buckets"])


def test_replay_sampler_proposes_the_fixed_params(bench: Any) -> None:
    import optuna

    from benchmarks.overhead import fixed_params
    from searchcore.engine.config import load_space
    from searchcore.engine.runner import prepare

    params = fixed_params("sampled", 3, seed=1)
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 3
    space = prepare(load_space(None), bench.load_plugin(), None).space
    study = optuna.create_study(sampler=bench.make_replay_sampler(params))
    for expected in params + params[:1]:
        trial = study.ask()
        assert space.sample(trial) == expected
        study.tell(trial, 0.0)
    import pickle

    assert pickle.loads(pickle.dumps(bench.make_replay_sampler(params))).params == params


@pytest.mark.slow
def test_bookkeeping(bench: Any, tmp_path: Path) -> None:
    section = _run("bookkeeping", tmp_path)
    for r in section.data["results"]:
        if "error" in r and "not reachable" in r["error"]:
            continue
        assert "error" not in r, r.get("error")
        assert r["finished"] == r["trials"] and r["mlflow_runs"] == r["trials"] + 1  # the trials and the parent run
        assert r["writes_per_trial"] > 10
    assert section.data["tpe_in_memory"][0]["ms_per_trial_cpu"] > 0


@pytest.mark.slow
def test_scaling(bench: Any, tmp_path: Path) -> None:
    section = _run("scaling", tmp_path)
    for r in section.data["results"]:
        assert "error" not in r, f"{r['stack']}: {r.get('error')}"
        assert len(r["ends"]) == r["trials"] and r["end_to_end"] > 0


@pytest.mark.slow
def test_quality(bench: Any, tmp_path: Path) -> None:
    section = _run("quality", tmp_path)
    assert set(section.data["datasets"]) == {"digits", "digits-clutter"}  # the saturated and the harder workload
    for dataset, data in section.data["datasets"].items():
        results = data["results"]
        assert all("error" not in r for r in results), [r.get("error") for r in results]
        searches = [r for r in results if "trials" in r]
        assert searches and all(len(r["trials"]) == data["trials"] for r in searches)
        assert all(t["test"] is not None for r in searches for t in r["trials"] if t["state"] == "COMPLETE")
        assert data["baseline_mean"] is not None, dataset
    assert any(t.title.startswith("digits-clutter:") for t in section.tables)


@pytest.mark.slow
def test_quality_keeps_a_workload_it_does_not_remeasure(bench: Any, tmp_path: Path) -> None:
    from benchmarks import quality

    old = {"trials": 1, "epochs": 1, "seeds": [0], "results": [  # the layout from before workloads existed: digits
        {"strategy": "random", "seed": 0, "trials": [{"number": 0, "state": "COMPLETE", "epochs": 1, "val": 0.5, "test": 0.4, "params": 1.0}]}]}
    section = quality.run("smoke", tmp_path / "q", lambda _: None, datasets=["digits-clutter"], jobs=1, previous=old)
    assert section.data["datasets"]["digits"]["results"] == old["results"]
    assert section.data["datasets"]["digits-clutter"]["results"]


def test_clutter_workload_is_deterministic_and_off_the_ceiling_by_construction(bench: Any) -> None:
    import torch

    from benchmarks import workloads

    digits = torch.rand(5, 8, 8)
    a, b = workloads.clutter_images(digits), workloads.clutter_images(digits)
    assert a.shape == (5, 1, workloads.CANVAS, workloads.CANVAS) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and not torch.equal(a[:, 0], digits)
    shifted = workloads.clutter_images(digits, canvas=12, fragments=0, noise=0.0, contrast=(1.0, 1.0))
    assert shifted.shape == (5, 1, 12, 12) and torch.allclose(shifted.sum(dim=(1, 2, 3)), digits.sum(dim=(1, 2)))
    splits = bench.load_plugin().catalog("datasets")[workloads.NAME](None, None, False, 0, 0.2, 0.2)
    assert splits.input_shape == [1, workloads.CANVAS, workloads.CANVAS] and splits.classes == 10 and len(splits.test_y) == 359


def test_throughput(bench: Any, tmp_path: Path) -> None:
    section = _run("throughput", tmp_path)
    contenders = {r["contender"] for r in section.data["results"]}
    assert any(c.startswith("searchcore") for c in contenders) and any(c.startswith("bare loop") for c in contenders)


def test_nb201(bench: Any, tmp_path: Path) -> None:
    pytest.importorskip("benchmarks.nb201")
    module = importlib.import_module("benchmarks.nb201")
    section = module.run("smoke", tmp_path / "nb201", lambda _: None)
    json.dumps(section.as_json(), default=str)


def test_runner_writes_json_and_markdown_and_keeps_other_sections(bench: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import run

    out, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    out.write_text(json.dumps({"sections": {"quality": {"name": "quality", "title": "4. kept", "size": "full", "tables": [], "targets": [],
                                                         "notes": ["from an earlier run"], "data": {}, "seconds": 1.0}}}))
    assert run.main(["--size", "smoke", "--only", "throughput", "--out", str(out), "--md", str(md)]) == 0
    report = json.loads(out.read_text())
    assert set(report["sections"]) == {"throughput", "quality"}
    assert report["machine"]["cores"] and report["machine"]["versions"]["torch"]
    text = md.read_text()
    assert "6. Trainer throughput" in text and "from an earlier run" in text and "| CPU |" in text
    assert "Training samples per second" in capsys.readouterr().out


def test_runner_records_a_failing_section(bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import run

    def boom(size: str, workdir: Path, log: Any) -> Any:
        raise RuntimeError("no such thing")

    throughput = importlib.import_module("benchmarks.throughput")
    monkeypatch.setattr(throughput, "run", boom)
    section = run.run_section("throughput", "smoke", tmp_path)
    assert section.notes == ["failed: RuntimeError: no such thing"]
    assert "RuntimeError" in section.data["traceback"]
    assert sys.modules["benchmarks.throughput"] is throughput
