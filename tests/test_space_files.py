"""Space files: every malformed file gives its exact one-line error and exit code 2, a python tag is
refused and never run, overrides shrink the space, and ``count()`` agrees with brute force."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import searchcore.plugins.host as host_module
from searchcore.cli import main
from searchcore.engine.config import load_space, parse_space, resolve
from searchcore.errors import SpaceFileError, UsageError
from searchcore.plugins.host import get_host
from searchcore.space import Dimension, count

# lists plugins can extend, filled in from the host when a test runs
PLUGINS = "<improvement plugins>"
BACKBONES = "<backbones>"
DATASETS = "<datasets>"
SEVEN = ("attention", "dense", "kernel", "normact", "pooling", "residual", "widthdepth")
TOP = "name, dataset, backbone, plugins, objectives, budget, search, train, input, classes"
NULL_DATA = "dataset: null\ninput: [1, 8, 8]\nclasses: 10\n"
SEVEN_COUNT = 4_723_920_000_000  # the default space over the seven first built-in plugins

# (id, file text, the whole error after 'searchcore: error: '); the file is always bad.yaml
CASES = [
    ("invalid-yaml", "budget: [1, 2\n", "bad.yaml: not valid YAML (expected ',' or ']', but got '<stream end>' at line 2 column 1)"),
    ("yaml-tab", "budget:\n\ttrials: 3\n", "bad.yaml: not valid YAML (found character '\\t' that cannot start any token at line 2 column 1)"),
    ("top-level-list", "- budget\n- search\n", "bad.yaml: top level: expected a mapping, got list"),
    ("top-level-string", "just text\n", "bad.yaml: top level: expected a mapping, got string"),
    ("unknown-top-key", "budgett:\n  trials: 3\n", f"bad.yaml: budgett: unknown key; allowed: {TOP}"),
    ("non-string-key", "1: 2\n", "bad.yaml: top level: keys must be strings, got integer 1"),
    ("unknown-plugin", "plugins:\n  kernal: {}\n", f"bad.yaml: plugins.kernal: plugin is not installed; available: {PLUGINS}"),
    ("unknown-plugin-in-list", "plugins: [kernel, nosuch]\n", f"bad.yaml: plugins.nosuch: plugin is not installed; available: {PLUGINS}"),
    ("unknown-plugin-option", "plugins:\n  kernel: {sizes: [3]}\n", "bad.yaml: plugins.kernel.sizes: unknown option; allowed: choices, dilations"),
    ("option-for-optionless-plugin", "plugins:\n  residual: {gate: 1}\n", "bad.yaml: plugins.residual.gate: unknown option; allowed: none (this plugin takes no options)"),
    ("option-scalar-for-list", "plugins:\n  kernel: {choices: 3}\n", "bad.yaml: plugins.kernel.choices: expected a non-empty list, got integer"),
    ("option-wrong-item-type", "plugins:\n  kernel: {choices: [3, five]}\n", "bad.yaml: plugins.kernel.choices: list items must be integers, got 'five'"),
    ("option-bool-for-int", "plugins:\n  kernel: {choices: [3, true]}\n", "bad.yaml: plugins.kernel.choices: list items must be integers, got True"),
    ("option-int-for-string", "plugins:\n  attention: {kinds: [se, 4]}\n", "bad.yaml: plugins.attention.kinds: list items must be strings, got 4"),
    ("empty-choices", "plugins:\n  kernel: {choices: []}\n", "bad.yaml: plugins.kernel.choices: expected a non-empty list, got list"),
    ("plugin-options-not-mapping", "plugins:\n  kernel: [3, 5]\n", "bad.yaml: plugins.kernel: expected a mapping, got list"),
    ("unknown-backbone", "backbone: resnet-9000\n", f"bad.yaml: backbone: unknown backbone 'resnet-9000'; available: {BACKBONES}"),
    ("backbone-without-name", "backbone: {options: {}}\n", "bad.yaml: backbone.name: is required"),
    ("backbone-unknown-key", "backbone: {name: seed-cnn, depth: 3}\n", "bad.yaml: backbone.depth: unknown key; allowed: name, options"),
    ("unknown-dataset", "dataset: nosuch\n", f"bad.yaml: dataset.name: unknown dataset 'nosuch'; available: {DATASETS}"),
    ("dataset-download", "dataset: {name: digits, download: maybe}\n", "bad.yaml: dataset.download: expected true or false, got string"),
    ("dataset-fraction", "dataset: {name: digits, val_fraction: 0.9}\n", "bad.yaml: dataset.val_fraction: 0.9 is out of range; allowed: 0.01..0.5"),
    ("dataset-null-alone", "dataset: null\n", "bad.yaml: dataset: is null, so 'input' and 'classes' must be given"),
    ("dataset-null-no-classes", "dataset: null\ninput: [1, 8, 8]\n", "bad.yaml: dataset: is null, so 'input' and 'classes' must be given"),
    ("input-shape", "dataset: null\ninput: [1, 8]\nclasses: 10\n", "bad.yaml: input: expected [channels, height, width] of positive integers, got [1, 8]"),
    ("classes-one", "dataset: null\ninput: [1, 8, 8]\nclasses: 1\n", "bad.yaml: classes: 1 is out of range; allowed: 2..100000"),
    ("budget-trials-string", "budget:\n  trials: x\n", "bad.yaml: budget.trials: expected an integer, got string 'x'"),
    ("budget-trials-bool", "budget:\n  trials: true\n", "bad.yaml: budget.trials: expected an integer, got boolean True"),
    ("budget-trials-zero", "budget:\n  trials: 0\n", "bad.yaml: budget.trials: 0 is out of range; allowed: 1..1000000"),
    ("budget-epochs-float", "budget:\n  epochs: 2.5\n", "bad.yaml: budget.epochs: expected an integer, got number 2.5"),
    ("budget-timeout-string", "budget:\n  timeout: soon\n", "bad.yaml: budget.timeout: expected a number, got string 'soon'"),
    ("budget-timeout-zero", "budget:\n  timeout: 0\n", "bad.yaml: budget.timeout: 0 is out of range; allowed: 1..1e+09"),
    ("budget-unknown-key", "budget:\n  trails: 3\n", "bad.yaml: budget.trails: unknown key; allowed: trials, epochs, timeout"),
    ("budget-not-mapping", "budget: 10\n", "bad.yaml: budget: expected a mapping, got integer"),
    ("sampler-not-string", "search:\n  sampler: 3\n", "bad.yaml: search.sampler: expected a non-empty string, got integer"),
    ("sampler-empty", "search:\n  sampler: ''\n", "bad.yaml: search.sampler: expected a non-empty string, got string"),
    ("pruner-unknown", "search:\n  pruner: asha\n", "bad.yaml: search.pruner: 'asha' is not allowed; allowed: hyperband, median, successive_halving, none"),
    ("seed-negative", "search:\n  seed: -1\n", "bad.yaml: search.seed: -1 is out of range; allowed: 0..2147483647"),
    ("search-unknown-key", "search:\n  seeed: 1\n", "bad.yaml: search.seeed: unknown key; allowed: sampler, pruner, seed, evaluator, zero_cost"),
    ("zero-cost-unknown", "search:\n  zero_cost: nasbot\n", "bad.yaml: search.zero_cost: unknown proxy 'nasbot'; available: none, macs, naswot, params, synflow"),
    ("zero-cost-not-string", "search:\n  zero_cost: 3\n", "bad.yaml: search.zero_cost: expected a proxy name or a non-empty list of names, got integer 3"),
    ("zero-cost-none-and-more", "search:\n  zero_cost: [none, naswot]\n", "bad.yaml: search.zero_cost: 'none' cannot be combined with other proxies"),
    ("train-optimizer", "train:\n  optimizer: adam\n", "bad.yaml: train.optimizer: 'adam' is not allowed; allowed: adamw, sgd"),
    ("train-lr", "train:\n  lr: fast\n", "bad.yaml: train.lr: expected a number, got string 'fast'"),
    ("train-lr-range", "train:\n  lr: 100\n", "bad.yaml: train.lr: 100 is out of range; allowed: 1e-07..10"),
    ("train-unknown-key", "train:\n  epochs: 3\n", "bad.yaml: train.epochs: unknown key; allowed: batch_size, lr, optimizer, weight_decay, momentum, label_smoothing, deterministic"),
    ("objectives-empty", "objectives: []\n", "bad.yaml: objectives: expected at least one objective"),
    (
        "python-object-apply",
        "name: !!python/object/apply:os.system ['touch PWNED']\n",
        "bad.yaml: not valid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system' at line 1 column 7)",
    ),
    (
        "python-object",
        "!!python/object:searchcore.engine.config.SpaceConfig {source: x, text: y}\n",
        "bad.yaml: not valid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:searchcore.engine.config.SpaceConfig' at line 1 column 1)",
    ),
    (
        "python-name",
        "budget: !!python/name:os.system\n",
        "bad.yaml: not valid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system' at line 1 column 9)",
    ),
]

# run through the real command in fresh processes too: parse-time, resolve-time and the python tag
SUBPROCESS_CASES = ("invalid-yaml", "python-object-apply", "unknown-plugin-option", "budget-trials-string", "zero-cost-unknown")


@pytest.fixture(autouse=True)
def keep_host(monkeypatch):
    monkeypatch.setattr(host_module, "_HOST", host_module._HOST)


def filled(message: str) -> str:
    host = get_host()
    assert {"seed-cnn"} <= set(host.catalog("backbones")) and {"digits", "mnist", "cifar10"} <= set(host.catalog("datasets"))
    for placeholder, names in ((PLUGINS, host.improvement_plugins()), (BACKBONES, host.catalog("backbones")), (DATASETS, host.catalog("datasets"))):
        message = message.replace(placeholder, ", ".join(sorted(names)))
    return message


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_space_file_gives_one_line(tmp_path, monkeypatch, capsys, text, message):
    message = filled(message)
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["space", "show", "bad.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"searchcore: error: {message}\n"
    assert captured.out == ""
    assert not (tmp_path / "PWNED").exists()


def test_cases_cover_the_required_kinds():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({c[1] for c in CASES}) == len(CASES)


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("searchcore")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "searchcore.cli"]


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Each chosen file through ``searchcore space show FILE`` in its own process, all started at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCHCORE_")}
    procs = {}
    for name, text, _ in CASES:
        if name in SUBPROCESS_CASES:
            d = tmp_path_factory.mktemp(name)
            (d / "bad.yaml").write_text(text)
            procs[name] = (subprocess.Popen([*_cli(), "space", "show", "bad.yaml"], cwd=d, env=env, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE), d)
    results = {}
    for name, (proc, d) in procs.items():
        out, err = proc.communicate(timeout=600)
        results[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), d)
    return results


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_cli_process_exits_2_with_one_line(subprocess_results, name):
    r, d = subprocess_results[name]
    message = filled(next(c[2] for c in CASES if c[0] == name))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"searchcore: error: {message}"]
    assert r.stderr.startswith("searchcore: error: ")
    assert r.stdout == ""
    assert not (d / "PWNED").exists()


def test_python_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "ran"
    text = f"name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n"
    with pytest.raises(SpaceFileError, match="could not determine a constructor for the tag"):
        parse_space(text, "evil.yaml")
    assert not marker.exists()


def test_missing_space_file(tmp_path, capsys):
    assert main(["space", "show", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"searchcore: error: {tmp_path / 'nope.yaml'}: no such space file\n"
    with pytest.raises(UsageError):
        load_space(tmp_path / "nope.yaml")


# --- valid files ------------------------------------------------------------------------------


def test_kernel_override_shrinks_the_space(tmp_path):
    host = get_host()
    full = resolve(load_space(None), host, [1, 8, 8], 10)
    assert set(SEVEN) <= set(full.plugins)
    assert count([d for d in full.dimensions if d.plugin in SEVEN]) == SEVEN_COUNT
    assert full.count() == SEVEN_COUNT * count([d for d in full.dimensions if d.plugin not in SEVEN])
    f = tmp_path / "k.yaml"
    f.write_text("plugins:\n  kernel: {choices: [3, 5]}\n")
    only = resolve(load_space(f), host, [1, 8, 8], 10)
    assert only.plugins == ["kernel"]
    assert [(d.name, d.choices, d.off) for d in only.dimensions] == [(f"kernel.s{i}", (3, 5), 3) for i in (1, 2, 3)]
    assert only.count() == 8
    everything = "\n".join(f"  {p}:" for p in full.plugins if p != "kernel")
    f.write_text(f"plugins:\n  kernel: {{choices: [3, 5]}}\n{everything}\n")
    shrunk = resolve(load_space(f), host, [1, 8, 8], 10)
    assert shrunk.plugins == full.plugins
    assert shrunk.count() == full.count() // 27 * 8
    assert shrunk.spec(shrunk.off_params()) == full.base


def test_cli_space_show_counts_the_override(tmp_path, capsys):
    f = tmp_path / "k.yaml"
    f.write_text(NULL_DATA + "plugins:\n  kernel: {choices: [3, 5]}\n  residual:\n")
    assert main(["space", "show", str(f)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"space: {f}   backbone: seed-cnn   input: 1x8x8   classes: 10"
    assert "plugins: kernel, residual" in out
    assert out.splitlines()[-1] == "6 dimensions; distinct architectures: 64"


def _values(d: Dimension) -> list:
    if d.kind == "categorical":
        return list(d.choices)
    assert d.kind == "int"
    return list(range(int(d.low), int(d.high) + 1, int(d.step or 1)))


def brute_force(dims: list[Dimension]) -> list[dict]:
    """Every assignment, by walking the dimensions in order and trying each value of every active one."""
    found: list[dict] = []

    def walk(i: int, params: dict) -> None:
        if i == len(dims):
            found.append(dict(params))
            return
        d = dims[i]
        if not d.active(params):
            walk(i + 1, params)
            return
        for v in _values(d):
            params[d.name] = v
            walk(i + 1, params)
            del params[d.name]

    walk(0, {})
    return found


def test_count_matches_brute_force_for_a_small_conditional_space(tmp_path):
    f = tmp_path / "small.yaml"
    f.write_text(
        "backbone: {name: seed-cnn, options: {channels: [8, 16]}}\n" + NULL_DATA +
        "plugins:\n"
        "  attention: {kinds: [none, se, mhsa], reductions: [4, 8], heads: [1, 2]}\n"
        "  dense: {growth: [8], layers: [2, 3]}\n"
        "  kernel: {choices: [3, 5]}\n"
    )
    space = resolve(load_space(f), get_host(), [1, 8, 8], 10)
    assert any(d.condition for d in space.dimensions)
    every = brute_force(space.dimensions)
    assert space.count() == len(every) == (1 + 2 + 2) ** 2 * (1 + 2) ** 2 * 2**2
    # each assignment is one the space accepts, and each gives its own architecture
    specs = set()
    for params in every:
        assert space.rebuild_params(params) == params
        specs.add(repr(space.spec(params)))
    assert len(specs) == len(every)


@pytest.mark.parametrize(
    "dims",
    [
        [Dimension.int("n", 1, 3), Dimension.categorical("x", [1, 2, 3], condition=("n", [2]))],
        [Dimension.int("n", 0, 8, step=4), Dimension.int("m", 1, 5, condition=("n", [4, 8])), Dimension.categorical("b", [True, False])],
        [Dimension.categorical("a", ["p", "q"]), Dimension.categorical("b", [1, 2], condition=("a", ["p"])),
         Dimension.categorical("c", [1, 2, 3], condition=("b", [2]))],
        [Dimension.categorical("a", ["p", "q", "r"]), Dimension.categorical("b", [1, 2], condition=("a", ["p", "q"])),
         Dimension.categorical("c", ["x", "y", "z"], condition=("a", ["q", "r"]))],
    ],
    ids=["int-parent", "stepped-int-parent", "chained", "overlapping"],
)
def test_count_matches_brute_force_for_hand_made_spaces(dims):
    assert count(dims) == len(brute_force(dims))
