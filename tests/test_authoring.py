"""Plugin authoring end to end: the guide and its hook reference, the scaffold, the examples, the debugging switches.

The slow tests install packages into a throwaway venv made from this interpreter (with
``--system-site-packages`` and a ``.pth`` that adds this environment's site-packages, so
torch and the editable searchcore are shared and nothing is downloaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchcore.authoring import docgen, scaffold
from searchcore.errors import UsageError
from searchcore.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-plugins.md"
GHOST = ROOT / "examples" / "ghost_plugin"
NAME = "scaffolded"  # the plugin the slow tests generate, install and search


def ruff() -> str:
    exe = Path(sys.executable).with_name("ruff")
    if not exe.exists():
        pytest.skip("ruff is not installed next to this interpreter")
    return str(exe)


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, (
        f"{' '.join(map(str, p.args))} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    )
    return p


@pytest.fixture
def fresh_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cli.main configures the process-wide host; put the previous one back afterwards."""
    from searchcore.plugins import host

    monkeypatch.setattr(host, "_HOST", host._HOST)
    yield


# --- the hook reference ------------------------------------------------------------------------


def test_every_hook_has_a_docstring() -> None:
    assert docgen.undocumented(hookspecs) == []


def test_every_hook_has_a_reference_entry() -> None:
    section = docgen.section(GUIDE.read_text())
    names = [n for n, _ in docgen.hook_functions(hookspecs)]
    assert len(names) >= 9
    missing = [n for n in names if f"### `{n}`" not in section]
    assert not missing, f"no reference entry for {missing}; run: python -m searchcore.authoring.docgen"


def test_hook_reference_is_current() -> None:
    assert docgen.is_current(GUIDE), (
        "docs/writing-plugins.md: the hook reference is stale; run: python -m searchcore.authoring.docgen"
    )


def test_a_hook_without_docstring_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "fake_hookspecs.py"
    src.write_text(
        'import pluggy\n\nPROJECT = "searchcore"\nhookspec = pluggy.HookspecMarker(PROJECT)\n\n'
        '# --- a phase ---\n\n@hookspec\ndef searchcore_documented(register):\n    """Said."""\n\n'
        "@hookspec\ndef searchcore_silent():\n    pass\n"
    )
    spec = importlib.util.spec_from_file_location("fake_hookspecs", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert [n for n, _ in docgen.hook_functions(mod)] == ["searchcore_documented", "searchcore_silent"]
    assert docgen.undocumented(mod) == ["searchcore_silent"]
    with pytest.raises(docgen.DocgenError, match="searchcore_silent"):
        docgen.render(mod)
    src.write_text(src.read_text().replace("    pass", '    """Now said."""'))
    spec.loader.exec_module(mod)
    text = docgen.render(mod)
    assert "### `searchcore_silent`" in text and "| a phase | Said. |" in text


def test_docgen_rewrites_a_stale_section(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text(f"# Guide\n\ntext\n\n{docgen.START}\nSTALE-TEXT\n{docgen.END}\n\nafter\n")
    assert docgen.main([str(doc), "--check"]) == 1
    assert docgen.main([str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Guide\n\ntext\n\n") and text.endswith(f"{docgen.END}\n\nafter\n")
    assert "### `searchcore_transform`" in text and "STALE-TEXT" not in text
    assert docgen.main([str(doc), "--check"]) == 0
    doc.write_text("no markers\n")
    assert docgen.main([str(doc)]) == 2
    assert "needs exactly one" in capsys.readouterr().err


def test_reference_renders_params_as_a_list() -> None:
    text = docgen.render()
    assert "- **params**: the values sampled for this plugin's own dimensions" in text
    assert ":param" not in text and ":class:" not in text
    assert "``" not in text.replace("```", ""), "reST double backticks left in the Markdown"


def test_guide_documents_the_debugging_switches() -> None:
    text = GUIDE.read_text()
    for needle in (
        "--trace-hooks",
        "SEARCHCORE_TRACE_HOOKS",
        "plugins --verbose",
        "searchcore new-plugin",
        "invres.block",
    ):
        assert needle in text


# --- the scaffold ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "Invres", "in-res", "1st", "class", "kernel", "searchcore_x", "x" * 41, "a b"])
def test_scaffold_refuses_bad_names(bad: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        scaffold.new_plugin(bad, tmp_path)
    assert "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())


def test_scaffold_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    target = scaffold.package_dir("demo", tmp_path)
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        scaffold.new_plugin("demo", tmp_path)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_scaffold_writes_a_lint_clean_package(tmp_path: Path) -> None:
    root = scaffold.new_plugin("my_plug", tmp_path)
    assert root == tmp_path / "searchcore-my-plug"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "searchcore_my_plug/__init__.py",
        "searchcore_my_plug/plugin.py",
        "space.yaml",
        "tests/test_conformance.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.searchcore]\nmy_plug = "searchcore_my_plug.plugin"' in pyproject
    assert "PluginConformance" in (root / "tests/test_conformance.py").read_text()
    assert "plugins: [my_plug]" in (root / "space.yaml").read_text()
    ok(run([ruff(), "check", "--no-cache", "."], cwd=root))


def test_new_plugin_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from searchcore.cli.authoring import add_authoring_commands
    from searchcore.cli.main import _Parser

    parser = _Parser(prog="searchcore")
    add_authoring_commands(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(["new-plugin", "demo", "--dir", str(tmp_path)])
    assert isinstance(args, argparse.Namespace) and args.func(args) == 0
    out = capsys.readouterr().out
    assert "searchcore-demo" in out and "searchcore_demo/plugin.py" in out
    with pytest.raises(UsageError, match="not empty"):
        args.func(args)


def test_new_plugin_is_wired_into_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture, fresh_host: None) -> None:
    from searchcore import cli

    assert cli.main(["new-plugin", "demo", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "searchcore-demo" / "pyproject.toml").is_file()
    assert cli.main(["new-plugin", "Demo", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lowercase identifier" in err[0]


# --- debugging switches ------------------------------------------------------------------------


def test_trace_hooks_flag_prints_each_call_with_its_time(capsys: pytest.CaptureFixture, fresh_host: None) -> None:
    from searchcore import cli

    assert cli.main(["--trace-hooks", "plugins"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[searchcore trace] ")]
    for hook in ("searchcore_blocks [attention]", "searchcore_backbones [core]", "searchcore_dimensions [kernel]"):
        assert any(hook in line and line.endswith(" ms") for line in lines), f"no trace of {hook} in:\n{err}"


def test_trace_hooks_environment_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from searchcore.plugins.host import ENV_TRACE, PluginHost

    monkeypatch.setenv(ENV_TRACE, "1")
    host = PluginHost()
    host.catalog("samplers")
    assert "[searchcore trace] searchcore_samplers [core]" in capsys.readouterr().err
    assert any(k.startswith("searchcore_samplers") for k in host.hook_times)
    monkeypatch.setenv(ENV_TRACE, "0")
    PluginHost().catalog("samplers")
    assert "[searchcore trace]" not in capsys.readouterr().err


def test_plugins_verbose_shows_hooks_and_origin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, fresh_host: None
) -> None:
    from searchcore import cli

    monkeypatch.syspath_prepend(str(GHOST))
    try:
        assert cli.main(["--plugin", "searchcore_ghost", "plugins", "--verbose"]) == 0
    finally:
        sys.modules.pop("searchcore_ghost", None)
    out = capsys.readouterr().out
    assert f"kernel  (entry point: {ROOT / 'plugins' / 'kernel.py'})" in out
    assert "  hooks: searchcore_dimensions, searchcore_options, searchcore_transform" in out
    assert f"searchcore_ghost  (--plugin: {GHOST / 'searchcore_ghost' / '__init__.py'})" in out
    assert "  hooks: searchcore_blocks, searchcore_dimensions, searchcore_options, searchcore_transform" in out
    assert "dimensions: ghost.s1, ghost.s1.ratio" in out


# --- installed into a throwaway venv (slow) ----------------------------------------------------------


def make_venv(path: Path) -> Path:
    """A venv over this interpreter whose site-packages also sees this environment's (torch, searchcore)."""
    ok(run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)]))
    py = path / "bin" / "python"
    site = Path(ok(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])).stdout.strip())
    parent = sysconfig.get_paths()["purelib"]
    (site / "_searchcore_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return py


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A venv with a freshly scaffolded plugin and the ghost example pip-installed (not editable)."""
    tmp = tmp_path_factory.mktemp("authoring")
    py = make_venv(tmp / "venv")
    generated = scaffold.new_plugin(NAME, tmp)
    ghost = tmp / "ghost_plugin"
    shutil.copytree(GHOST, ghost, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache"))
    pip = [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    ok(run([*pip, str(generated), str(ghost)], cwd=tmp, timeout=180))
    return {"python": py, "tmp": tmp, "generated": generated, "ghost": ghost}


def run_tests_installed(py: Path, package: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The package's own tests against the installed copy (``-o pythonpath=`` drops the source folder)."""
    args = [
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "pythonpath=",
        "--rootdir",
        str(package),
        str(package / "tests"),
    ]
    return ok(run([str(py), *args], cwd=cwd, timeout=180))


@pytest.mark.slow
def test_installed_plugins_are_listed(installed: dict[str, Path]) -> None:
    p = ok(run([str(installed["python"]), "-m", "searchcore.cli", "plugins", "--verbose"], cwd=installed["tmp"]))
    site = Path(
        ok(
            run([str(installed["python"]), "-c", "import searchcore_ghost; print(searchcore_ghost.__file__)"])
        ).stdout.strip()
    )
    table = p.stdout.split("\n\n", 1)[0].splitlines()
    rows = {line.split()[0]: line.split() for line in table if line.strip()}
    assert rows[NAME][1:] == ["0.1.0", f"searchcore-{NAME}", "3", "ok"], p.stdout
    assert rows["ghost"][1:] == ["0.1.0", "searchcore-ghost", "6", "ok"], p.stdout
    assert str(site).startswith(str(installed["tmp"] / "venv"))
    assert f"ghost  (entry point: {site})" in p.stdout
    assert f"dimensions: {NAME}.s1, {NAME}.s2, {NAME}.s3" in p.stdout
    assert "broken" not in p.stdout + p.stderr


@pytest.mark.slow
def test_scaffolded_package_passes_its_tests_installed(installed: dict[str, Path]) -> None:
    p = run_tests_installed(installed["python"], installed["generated"], installed["tmp"])
    assert " passed" in p.stdout and "failed" not in p.stdout


@pytest.mark.slow
def test_ghost_example_passes_its_tests_installed(installed: dict[str, Path]) -> None:
    p = run_tests_installed(installed["python"], installed["ghost"], installed["tmp"])
    assert " passed" in p.stdout and "failed" not in p.stdout


@pytest.mark.slow
def test_two_trial_search_samples_the_scaffolded_dimension(installed: dict[str, Path]) -> None:
    py, tmp = installed["python"], installed["tmp"]
    if run([str(py), "-m", "searchcore.cli", "search", "--help"]).returncode != 0:
        pytest.skip("searchcore search does not exist yet")
    import optuna

    db = tmp / "search.db"
    cmd = [
        str(py),
        "-m",
        "searchcore.cli",
        "search",
        str(installed["generated"] / "space.yaml"),
        "--name",
        "scaffold-try",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--storage",
        f"sqlite:///{db}",
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--no-register",
        "--no-baseline",
        "--quiet",
        "--threads",
        "1",
    ]
    ok(run(cmd, cwd=tmp, timeout=300))
    study = optuna.load_study(study_name="scaffold-try", storage=f"sqlite:///{db}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        assert set(t.params) == {f"{NAME}.s1", f"{NAME}.s2", f"{NAME}.s3"}, t.params


# --- the tutorial's own package and the Python API example (slow) ------------------------------------


@pytest.mark.slow
def test_tutorial_package_works(tmp_path: Path) -> None:
    """The guide's ``# file:`` blocks form a package that is lint clean and passes its tests."""
    files = docgen.extract(GUIDE, tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in files)
    assert names == [
        "pyproject.toml",
        "searchcore_invres/__init__.py",
        "space.yaml",
        "tests/test_conformance.py",
        "tests/test_invres.py",
    ]
    ok(run([ruff(), "check", "--no-cache", "."], cwd=tmp_path))
    p = ok(
        run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "tests"],
            cwd=tmp_path,
        )
    )
    assert "14 passed" in p.stdout


@pytest.mark.slow
def test_search_api_example(tmp_path: Path) -> None:
    pytest.importorskip("searchcore.engine.api")
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text("name: api\ndataset: digits\nplugins: [residual]\nsearch: {sampler: random, pruner: none}\n")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "search_api.py"),
        "--space",
        str(space),
        "--trials",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    p = ok(run(cmd, cwd=tmp_path, timeout=300))
    assert "trial " in p.stdout and "residual.s1" in p.stdout
    study = optuna.load_study(study_name="api-example", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
