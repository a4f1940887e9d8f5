"""``searchcore build`` against hand-counted parameters and MACs, and one-line usage errors."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import searchcore.plugins.host as host_module
from searchcore.cli import main


def conv(out: int, k: int = 3, s: int = 1) -> dict:
    return {"type": "conv", "out": out, "k": k, "d": 1, "s": s, "bn": False, "act": "relu"}


def seed_spec(shape: list[int], classes: int) -> dict:
    """The seed CNN written out by hand, not taken from the backbone."""
    return {
        "schema": 1,
        "input": shape,
        "classes": classes,
        "stem": [],
        "stages": [
            {"body": [conv(c)], "attention": [], "shortcut": None, "down": {"type": "maxpool", "k": 2, "s": 2}}
            for c in (32, 64, 128)
        ],
        "head": [{"type": "flatten"}, {"type": "linear"}],
    }


def seed_counts(shape: list[int], classes: int, kernels=(3, 3, 3)) -> tuple[int, int]:
    """(params, MACs) of the seed CNN by hand: a conv costs out_h*out_w*out_c*in_c*k*k MACs, a linear in*out."""
    c, h, w = shape
    params = macs = 0
    for out, k in zip((32, 64, 128), kernels, strict=True):
        params += c * out * k * k + out
        macs += h * w * out * c * k * k
        c, h, w = out, math.ceil(h / 2), math.ceil(w / 2)
    features = c * h * w
    return params + features * classes + classes, macs + features * classes


def parse(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        rows[key] = value.strip()
    return rows


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("searchcore")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "searchcore.cli"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """The real command in fresh processes, started side by side: a good build and two usage errors."""
    d = tmp_path_factory.mktemp("cli")
    (d / "seed.json").write_text(json.dumps(seed_spec([1, 8, 8], 10), indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCHCORE_")}
    commands = {
        "build": ["build", "seed.json"],
        "missing": ["build", "missing.json"],
        "bogus flag": ["space", "show", "--bogus"],
    }
    procs = {
        name: subprocess.Popen([*_cli(), *args], cwd=d, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


@pytest.fixture(autouse=True)
def keep_host(monkeypatch):
    monkeypatch.setattr(host_module, "_HOST", host_module._HOST)


def test_hand_counts_of_the_seed():
    assert seed_counts([1, 8, 8], 10) == (93_962, 18_432 + 294_912 + 294_912 + 1_280)
    assert seed_counts([3, 32, 32], 10) == (113_738, 884_736 + 4_718_592 + 4_718_592 + 20_480)


def test_build_prints_params_macs_and_output(runs):
    r = runs["build"]
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    rows = parse(r.stdout)
    assert list(rows) == ["spec", "hash", "params", "MACs", "input", "output"]
    params, macs = seed_counts([1, 8, 8], 10)
    assert rows["params"] == f"{params:,}" == "93,962"
    assert rows["MACs"] == f"{macs:,}" == "609,536"
    assert rows["input"] == "1x8x8"
    assert rows["output"] == "10"
    assert rows["hash"] == "3bab456ebef4"
    assert rows["spec"].startswith("v1 1x8x8>10 stem[] | [conv(out=32,k=3,d=1,s=1,bn=F,act=relu)] att[] sc=~ down=maxpool(k=2,s=2) | ")


@pytest.mark.parametrize(("shape", "classes"), [([3, 32, 32], 10), ([1, 28, 28], 26), ([3, 9, 13], 5)])
def test_build_counts_for_other_inputs(tmp_path, capsys, shape, classes):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(seed_spec(shape, classes)))
    assert main(["build", str(f)]) == 0
    rows = parse(capsys.readouterr().out)
    params, macs = seed_counts(shape, classes)
    assert (rows["params"], rows["MACs"]) == (f"{params:,}", f"{macs:,}")
    assert rows["input"] == "x".join(map(str, shape)) and rows["output"] == str(classes)


def test_build_counts_an_improved_spec(tmp_path, capsys):
    """Kernel 5 in stage 1, a projection shortcut in stage 2, a strided-conv downsampler in stage 3."""
    spec = seed_spec([1, 8, 8], 10)
    spec["stages"][0]["body"][0]["k"] = 5
    spec["stages"][1]["shortcut"] = "auto"
    spec["stages"][2]["down"] = {"type": "conv", "out": None, "k": 3, "d": 1, "s": 2, "bn": False, "act": "relu"}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(spec))
    assert main(["build", str(f)]) == 0
    rows = parse(capsys.readouterr().out)
    params, macs = seed_counts([1, 8, 8], 10, kernels=(5, 3, 3))
    params += 32 * 64 + (128 * 128 * 9 + 128)  # 1x1 projection without bias; the down conv with bias
    macs += 4 * 4 * 64 * 32 + 1 * 1 * 128 * 128 * 9  # the projection at 4x4; the stride-2 conv 2x2 -> 1x1
    assert (rows["params"], rows["MACs"]) == (f"{params:,}", f"{macs:,}")


def test_missing_spec_file_is_one_line(runs):
    r = runs["missing"]
    assert r.returncode == 2
    assert r.stderr == "searchcore: error: missing.json: no such spec file\n"
    assert r.stdout == ""


def test_unknown_flag_is_one_line(runs):
    r = runs["bogus flag"]
    assert r.returncode == 2
    assert r.stderr == "searchcore: error: unrecognized arguments: --bogus\n"
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "s.json: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[]", "s.json: expected a JSON object, got list"),
        ("GHOST", "block type 'ghost.module' is not provided by any loaded plugin; it is provided by plugin 'ghost', which is not loaded: install it or remove it from --disable"),
        ("NO-HEAD", "s.json: missing key 'head'"),
    ],
    ids=["invalid-json", "not-an-object", "ghost-block", "missing-key"],
)
def test_bad_spec_files_are_one_line(tmp_path, monkeypatch, capsys, content, message):
    spec = seed_spec([1, 8, 8], 10)
    if content == "GHOST":
        spec = copy.deepcopy(spec)
        spec["stages"][0]["attention"] = [{"type": "ghost.module"}]
        content = json.dumps(spec)
    elif content == "NO-HEAD":
        del spec["head"]
        content = json.dumps(spec)
    (tmp_path / "s.json").write_text(content)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "s.json"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"searchcore: error: {message}\n"
    assert captured.out == ""


def test_usage_errors_in_process_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["build"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "searchcore: error: the following arguments are required: spec\n"
    with pytest.raises(SystemExit) as e:
        main(["space", "show", "a.yaml", "b.yaml"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "searchcore: error: unrecognized arguments: b.yaml\n"
