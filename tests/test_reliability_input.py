"""Issue #5, point 6: malformed input never ends in a traceback.

Property-based (hypothesis): arbitrary YAML documents and arbitrary text as space files, and
arbitrary values for every ``searchcore search`` option. Each ends in a valid search (or a space
that resolves) or in a one-line ``searchcore: error: ...`` with exit code 2. Unknown keys are
refused, not ignored, wherever a space file has a fixed set of keys (and duplicate keys too,
which YAML would otherwise silently overwrite).

The CLI runs in-process (``searchcore.cli.main.main``) for speed; a valid search uses the faulty
plugin's ``instant`` evaluator, so it costs only its bookkeeping.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plugins_faulty as pf
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import searchcore.plugins.host as host_module
from searchcore.cli import main
from searchcore.engine import config
from searchcore.engine import samplers as ob
from searchcore.engine.runner import TrialRunner
from searchcore.errors import UsageError
from searchcore.plugins.host import configure
from searchcore.train.trainer import TrainConfig

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

WORDS = ["digits", "seed-cnn", "tpe", "random", "nsga2", "auto", "hyperband", "median", "none", "val_accuracy", "params",
         "macs", "kernel", "attention", "residual", "adamw", "sgd", "se", "relu", "0", "1", "-1", "3", "1e999", ".nan",
         "true", "null", "", " ", "~", "train", "instant", "plugins_faulty", "ok"]
PLUGINS = ["kernel", "attention", "residual", "dense", "pooling", "widthdepth", "normact", "plugins_faulty"]
OPTION_KEYS = ["channels", "choices", "dilations", "kinds", "reductions", "heads", "growth", "layers", "multipliers", "depths",
               "activations", "batchnorm", "triggers", "ballast"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 9), st.floats(), st.text(max_size=10), st.sampled_from(WORDS))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(WORDS + OPTION_KEYS), st.text(max_size=6)), inner, max_size=4),
), max_leaves=10)


def section(keys: tuple[str, ...]) -> st.SearchStrategy:
    """A mapping over a section's keys (and one it does not know), with arbitrary values."""
    return st.one_of(values, st.dictionaries(st.sampled_from((*keys, "bogus")), values, max_size=len(keys) + 1))


plugin_options = st.dictionaries(st.sampled_from(PLUGINS + ["nope"]), st.one_of(
    st.none(), st.dictionaries(st.sampled_from(OPTION_KEYS + ["bogus"]), st.one_of(values, st.lists(st.integers(-2, 9), max_size=4))),
), max_size=3)
documents = st.fixed_dictionaries({}, optional={
    "name": values,
    "dataset": st.one_of(st.just("digits"), section(config.DATASET)),
    "backbone": st.one_of(st.just("seed-cnn"), section(config.BACKBONE)),
    "plugins": st.one_of(values, plugin_options),
    "objectives": st.one_of(values, st.lists(st.sampled_from(["val_accuracy", "params", "macs", "nope"]), max_size=3)),
    "budget": section(config.BUDGET),
    "search": section(config.SEARCH),
    "train": section(config.TRAIN),
    "input": st.one_of(values, st.lists(st.integers(-1, 9), min_size=3, max_size=3)),
    "classes": values,
    "bogus": values,
})
YAML_TOKENS = ["a: ", "budget:", "trials:", "plugins:", "kernel:", " ", "  ", "\n", "- ", "{", "}", "[", "]", ", ", ": ",
               "&x ", "*x", "<<: *x", "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!!binary aGk=",
               "!!set {a}", "2020-01-01", "? ", "|\n  ", ">", "'", '"', "1", "1e999", ".nan", "~", "#", "%YAML 1.1\n---\n", "---\n", "\t"]
yaml_texts = st.one_of(st.text(max_size=80), st.lists(st.sampled_from(YAML_TOKENS), max_size=25).map("".join))


@pytest.fixture(scope="module")
def host() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(host_module, "_HOST", None)
        for var in ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE", "SEARCHCORE_FAULTY_OFF"):
            mp.delenv(var, raising=False)
        yield configure([pf.NAME])


def one_line_usage_error(code: int, err: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("searchcore: error: ") and "Traceback" not in err


def check_space(text: str, path: Path, host: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's verdict on a space file, then everything ``searchcore search`` checks before it creates anything."""
    path.write_text(text)
    capsys.readouterr()
    code = main(["--plugin", pf.NAME, "space", "show", str(path)])
    out, err = capsys.readouterr()
    if code != 0:
        assert one_line_usage_error(code, err), (code, err, text)
        return
    try:
        cfg = config.load_space(path)
        space = config.resolve(cfg, host_module.get_host(), cfg.input or [1, 8, 8], cfg.classes or 10)
        runner = TrialRunner(cfg, host_module.get_host(), space, None)
        ob.make_sampler(cfg.sampler, cfg.seed, runner.directions, host_module.get_host(), dimensions=space.dimensions)
        ob.make_pruner(cfg.pruner, cfg.epochs, len(runner.directions) > 1)
    except UsageError as e:
        assert "\n" not in str(e).strip(), text
        return
    json.dumps(cfg.as_dict(), allow_nan=True)  # recordable in the study and on the parent run
    TrainConfig(epochs=cfg.epochs, **cfg.train)  # and the trainer takes it: no per-trial failure


@FUZZ
@given(doc=documents)
def test_arbitrary_yaml_documents_resolve_or_fail_in_one_line(doc: dict, host: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_space(yaml.safe_dump(doc, allow_unicode=True), tmp_path / "space.yaml", host, capsys)


@FUZZ
@given(text=yaml_texts)
def test_arbitrary_text_as_a_space_file_fails_in_one_line(text: str, host: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_space(text, tmp_path / "space.yaml", host, capsys)


SECTIONS = {"": config.TOP, "dataset": config.DATASET, "backbone": config.BACKBONE, "budget": config.BUDGET,
            "search": config.SEARCH, "train": config.TRAIN, "plugins.kernel": ("choices", "dilations")}
VALID = {"dataset": {"name": "digits"}, "backbone": {"name": "seed-cnn"}, "budget": {"trials": 2},
         "search": {"seed": 1}, "train": {"lr": 0.01}, "plugins": {"kernel": {"choices": [3, 5]}}}


@settings(max_examples=60, deadline=None)
@given(where=st.sampled_from(sorted(SECTIONS)), key=st.text(string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=12))
def test_unknown_keys_are_refused_naming_the_key(where: str, key: str) -> None:
    if key in SECTIONS[where]:
        return
    doc: dict[str, Any] = json.loads(json.dumps(VALID))
    target = doc
    for part in filter(None, where.split(".")):
        target = target[part]
    target[key] = 1
    with pytest.raises(UsageError) as e:
        cfg = config.parse_space(yaml.safe_dump(doc), "fuzz.yaml")
        config.resolve(cfg, host_module.get_host(), [1, 8, 8], 10)
    assert key.strip() in str(e.value) and "unknown" in str(e.value)


LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10 if p else ['1'] * 10)}]\n" for p, c in zip(" abcdef", "abcdefg"))
HAZARDS = {
    "a date in free-form options": "backbone: {name: seed-cnn, options: {x: 2020-01-01}}\n",
    "binary in objective options": "objectives: {val_accuracy: {x: !!binary aGk=}}\n",
    "a set": "backbone: {name: seed-cnn, options: {x: !!set {a, b}}}\n",
    "deep nesting": "backbone: {name: seed-cnn, options: {x: " + "[" * 3000 + "]" * 3000 + "}}\n",
    "an alias bomb": "backbone:\n  name: seed-cnn\n  options:\n" + "".join(f"    {line}\n" for line in LAUGHS.splitlines()),
    "a self-referencing alias": "backbone: {name: seed-cnn, options: &o {x: *o}}\n",
    "options a backbone refuses": "backbone: {name: seed-cnn, options: {channels: hello}}\n",
    "python tags": "name: !!python/object/apply:os.system ['true']\n",
}


@pytest.mark.parametrize("text", HAZARDS.values(), ids=list(HAZARDS))
def test_known_yaml_hazards_end_in_one_line(text: str, host: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    capsys.readouterr()
    assert one_line_usage_error(main(["space", "show", str(path)]), capsys.readouterr().err)


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(UsageError, match="budget.*trials.*duplicate|duplicate.*trials"):
        config.parse_space("budget:\n  trials: 5\n  trials: 500\n", "dup.yaml")
    with pytest.raises(UsageError, match="duplicate"):
        config.parse_space("budget: {trials: 5}\nbudget: {trials: 500}\n", "dup.yaml")


# --- arbitrary command-line values ----------------------------------------------------------------

INSTANT = """\
dataset: {name: digits, val_fraction: 0.3, test_fraction: 0.2}
backbone: {name: seed-cnn, options: {channels: [8]}}
plugins: {kernel: {choices: [3, 5]}, plugins_faulty: {triggers: [ok]}}
budget: {trials: 1, epochs: 1}
search: {sampler: random, pruner: none, evaluator: instant}
"""
RESOURCE_LIMITS = {"--trials": 2, "--epochs": 2, "--workers": 1, "--threads": 2}  # larger values are valid and run long
OPTIONS = ["--trials", "--epochs", "--timeout", "--sampler", "--pruner", "--workers", "--seed", "--threads", "--name",
           "--storage", "--tracking-uri"]
cli_values = st.one_of(st.text(max_size=20), st.integers(-(2**70), 2**70).map(str), st.floats().map(str),
                       st.sampled_from(["", "-", "--", "0", "1", "2", "nan", "inf", "-inf", "1e-300", "1e308", "0x10", "1_000", " 1",
                                        "tpe", "auto", "median", "sqlite:///", "sqlite:///:memory:", "journal:///", "postgresql://",
                                        "mysql://u:p@127.0.0.1:1/x", "http://127.0.0.1:1", "file:///dev/null", "a'b", "a`b", "ü"]))


def small(option: str, value: str) -> bool:
    """Keep valid resource values small: --trials 10**9 is a valid, very long search."""
    if option not in RESOURCE_LIMITS:
        return True
    try:
        return int(value.strip().replace("_", "")) <= RESOURCE_LIMITS[option]
    except ValueError:
        return True


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "space.yaml").write_text(INSTANT)
    return root


# A valid example runs a real (instant) search, so: fewer examples, and no shrinking (minutes per step).
@settings(max_examples=50, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(option=st.sampled_from(OPTIONS), value=cli_values, data=st.data())
def test_arbitrary_search_option_values_end_in_a_search_or_one_line_exit_2(
    option: str, value: str, data: Any, host: Any, cli_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not small(option, value):
        return
    monkeypatch.chdir(cli_dir)  # stores a fuzzed value names (a relative path) land here
    args = {"--storage": f"sqlite:///{cli_dir / 'study.db'}", "--tracking-uri": f"sqlite:///{cli_dir / 'mlflow.db'}",
            "--name": data.draw(st.sampled_from(["fuzz-a", "fuzz-b"]))}
    args[option] = value
    argv = ["--plugin", pf.NAME, "search", str(cli_dir / "space.yaml"), "--no-baseline", "--no-register", "--quiet"]
    for k, v in args.items():
        argv += [f"{k}={v}"]  # '=' so a value starting with '-' stays a value
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    if code == 0:
        assert "\nsearch " in out and "Traceback" not in err, (argv, err)
    else:
        assert one_line_usage_error(code, err), (argv, code, err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(st.text(max_size=8), st.sampled_from(["search", "sync", "best", "worker", "train", "ui", "space",
                                                                       "--trials", "--name", "--storage", "-q", "--plugin", "--help"])), max_size=5))
def test_arbitrary_argument_lists_never_trace(argv: list[str], host: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole command lines made of junk: argparse errors, --help, or a one-line error; never a traceback."""
    if {"search", "ui", "worker", "train"} & set(argv) and not {"--help"} & set(argv):
        return  # these would start real work on valid input; their option values are fuzzed above
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code in (0, 2) or one_line_usage_error(code, err), (argv, code, err)
    if code not in (0,) and err.strip():
        assert len(err.strip().splitlines()) == 1, (argv, err)
