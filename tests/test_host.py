"""The plugin host with throwaway third-party plugins installed through a faked entry point:
discovery, broken plugins kept out with their reason, --plugin/--disable and hook tracing."""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import searchcore.plugins.host as host_module
from searchcore.arch.build import build
from searchcore.cli import main
from searchcore.engine.config import load_space, resolve
from searchcore.errors import PluginError
from searchcore.plugins.host import PluginHost

# what this installation ships (core, kernel, attention ...), read before any fake plugin is on the path
BUILTIN_EPS = list(md.entry_points(group="searchcore"))
BUILTIN = sorted(ep.name for ep in BUILTIN_EPS)


@functools.cache
def builtin_plugins() -> list[str]:
    """The improvement plugins of the installation alone, no fake plugin."""
    return PluginHost(entry_points=BUILTIN_EPS).improvement_plugins()


@functools.cache
def builtin_space():
    return resolve(load_space(None), PluginHost(entry_points=BUILTIN_EPS), [1, 8, 8], 10)

FAKE_PLUGIN = """
    import torch

    from searchcore import hookimpl
    from searchcore.arch.improve import copy_spec
    from searchcore.space import Dimension


    @hookimpl
    def searchcore_options():
        return {"rates": [0.0, 0.25, 0.5]}


    @hookimpl
    def searchcore_dimensions(base, options):
        return [Dimension.categorical("fake.dropout", options["rates"], off=0.0, help="dropout before the head")]


    @hookimpl
    def searchcore_transform(spec, params):
        rate = params.get("fake.dropout", 0.0)
        if not rate:
            return None
        spec = copy_spec(spec)
        spec["head"] = [{"type": "fake.dropout", "p": rate}] + spec["head"]
        return spec


    @hookimpl
    def searchcore_blocks(register):
        register("fake.dropout", lambda in_ch, o, ctx: (torch.nn.Dropout(o["p"]), in_ch))
"""

BROKEN = {
    # entry-point name: (module source, the reason its status gives)
    "badimport": ("import sc_no_such_module_anywhere\n", "import failed: ModuleNotFoundError: No module named 'sc_no_such_module_anywhere'"),
    "unknownhook": (
        """
        from searchcore import hookimpl

        @hookimpl
        def searchcore_nonexistent():
            return 1
        """,
        "unknown hook 'searchcore_nonexistent' (see searchcore.plugins.hookspecs for the hooks that exist)",
    ),
    "badsig": (
        """
        from searchcore import hookimpl

        @hookimpl
        def searchcore_blocks(register, colour):
            pass
        """,
        "Plugin 'badsig' for hook 'searchcore_blocks' hookimpl definition: searchcore_blocks(register, colour) "
        "Argument(s) {'colour'} are declared in the hookimpl but can not be found in the hookspec",
    ),
    "kernelclash": (
        """
        from searchcore import hookimpl
        from searchcore.space import Dimension

        @hookimpl
        def searchcore_dimensions(base):
            return [Dimension.categorical("kernel.s1", [3, 9])]
        """,
        "dimension name 'kernel.s1' is already taken by plugin 'kernel'",
    ),
    "zdupblock": (
        """
        from torch import nn

        from searchcore import hookimpl

        @hookimpl
        def searchcore_blocks(register):
            register("attention.se", lambda in_ch, o, ctx: (nn.Identity(), in_ch))
        """,
        "block 'attention.se' is already registered by plugin 'attention'",
    ),
}


def install(root: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """What pip would leave behind: the modules, and a dist-info with METADATA and entry_points.txt."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[searchcore]\n" + "".join(f"{ep} = {mod}\n" for ep, mod in entry_points.items()))


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Keep the process-wide host, the environment and the fake modules from leaking into other tests."""
    monkeypatch.setattr(host_module, "_HOST", host_module._HOST)
    for var in ("SEARCHCORE_PLUGINS", "SEARCHCORE_DISABLE", "SEARCHCORE_TRACE_HOOKS"):
        monkeypatch.delenv(var, raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("sc_"):
            del sys.modules[name]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> Path:
    install(tmp_path, "sc-fake-plugin", "0.3", {"fake": "sc_fake_plugin"}, {"sc_fake_plugin": FAKE_PLUGIN})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def broken(tmp_path, monkeypatch) -> Path:
    install(tmp_path, "sc-fake-plugin", "0.3", {"fake": "sc_fake_plugin"}, {"sc_fake_plugin": FAKE_PLUGIN})
    for name, (source, _) in BROKEN.items():
        install(tmp_path, f"sc-{name}", "1.0", {name: f"sc_{name}"}, {f"sc_{name}": source})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def cli(*args: str, pythonpath: Path) -> subprocess.Popen:
    """Start the installed ``searchcore`` command in a fresh process that sees ``pythonpath``."""
    exe = Path(sys.executable).with_name("searchcore")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "searchcore.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCHCORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """``searchcore plugins`` with the fake and the broken plugins installed, and ``searchcore space show``
    with the fake one, run side by side (each fresh process spends seconds importing torch)."""
    good, bad = tmp_path_factory.mktemp("good"), tmp_path_factory.mktemp("bad")
    install(good, "sc-fake-plugin", "0.3", {"fake": "sc_fake_plugin"}, {"sc_fake_plugin": FAKE_PLUGIN})
    install(bad, "sc-fake-plugin", "0.3", {"fake": "sc_fake_plugin"}, {"sc_fake_plugin": FAKE_PLUGIN})
    for name, (source, _) in BROKEN.items():
        install(bad, f"sc-{name}", "1.0", {name: f"sc_{name}"}, {f"sc_{name}": source})
    procs = {"plugins": cli("plugins", pythonpath=bad), "space show": cli("space", "show", pythonpath=good)}
    results = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def table(stdout: str) -> dict[str, list[str]]:
    """Rows of the ``searchcore plugins`` table by plugin name: [version, package, dimensions, status].

    A long status wraps onto indented lines of its own; they are joined back with one space.
    """
    rows: dict[str, list[str]] = {}
    last = None
    for line in stdout.splitlines()[1:]:
        if not line.strip():
            break
        if line.startswith(" ") and last is not None:
            rows[last][3] += " " + line.strip()
            continue
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == 5, line
        last = cells[0]
        rows[last] = cells[1:]
    return rows


# --- discovery ------------------------------------------------------------------------------


def test_fake_plugin_is_discovered(fake):
    host = PluginHost()
    info = host.infos["fake"]
    assert (info.name, info.package, info.version, info.source, info.status) == ("fake", "sc-fake-plugin", "0.3", "entry point", "ok")
    assert info.location == str(fake / "sc_fake_plugin.py")
    assert info.hooks == ["searchcore_blocks", "searchcore_dimensions", "searchcore_options", "searchcore_transform"]
    assert sorted(host.infos) == sorted([*BUILTIN, "fake"])
    assert host.provider("blocks", "fake.dropout") == "fake"
    assert "fake" in host.improvement_plugins()


def test_fake_plugin_dimensions_reach_the_space_and_the_model(fake):
    host = PluginHost()
    space = resolve(load_space(None), host, [1, 8, 8], 10)
    assert "fake" in space.plugins
    dims = {d.name: d for d in space.dimensions}
    assert dims["fake.dropout"].plugin == "fake" and dims["fake.dropout"].choices == (0.0, 0.25, 0.5)
    assert space.spec(space.off_params()) == space.base
    params = {**space.off_params(), "fake.dropout": 0.25}
    spec = space.spec(params)
    assert spec["head"][0] == {"type": "fake.dropout", "p": 0.25}
    model = build(spec, registry=host.blocks())
    assert isinstance(model.head[0], torch.nn.Dropout) and model.head[0].p == 0.25
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_fake_plugin_options_come_from_the_space_file(fake, tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("dataset: null\ninput: [1, 8, 8]\nclasses: 10\nplugins:\n  fake: {rates: [0.0, 0.5]}\n  kernel: {}\n")
    space = resolve(load_space(f), PluginHost(), [1, 8, 8], 10)
    assert space.plugins == ["fake", "kernel"]
    assert {d.name: d.choices for d in space.dimensions}["fake.dropout"] == (0.0, 0.5)


def test_cli_space_show_has_the_fake_dimension(cli_runs):
    r = cli_runs["space show"]
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    default = builtin_space()
    assert f"plugins: {', '.join(sorted([*default.plugins, 'fake']))}" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("fake.dropout"))
    assert re.split(r"\s{2,}", line.strip()) == ["fake.dropout", "categorical", "{0.0, 0.25, 0.5}", "0.0"]
    # one more dimension, three times the architectures
    n, total = len(default.dimensions) + 1, int(default.count()) * 3
    assert r.stdout.splitlines()[-1] == f"{n} dimensions; distinct architectures: {total:,}"


# --- broken plugins -------------------------------------------------------------------------


def test_broken_plugins_are_kept_out_with_their_reason(broken):
    host = PluginHost()
    with pytest.raises(PluginError) as e:
        resolve(load_space(None), host, [1, 8, 8], 10)
    assert str(e.value) == "plugin 'kernelclash' (package sc-kernelclash): dimension name 'kernel.s1' is already taken by plugin 'kernel'"
    host.catalog("blocks")
    for name, (_, reason) in BROKEN.items():
        assert host.infos[name].status == f"broken: {reason}", name
        assert host.infos[name].package == f"sc-{name}"
        assert not host.infos[name].ok
    assert [i.name for i in host.loaded] == sorted([*BUILTIN, "fake"])
    # the broken ones are gone for good: the space resolves without them, the fake plugin included
    space = resolve(load_space(None), host, [1, 8, 8], 10)
    assert space.plugins == sorted([*builtin_plugins(), "fake"])
    assert [d.plugin for d in space.dimensions if d.name == "kernel.s1"] == ["kernel"]
    assert host.provider("blocks", "attention.se") == "attention"


def test_cli_plugins_lists_the_fake_and_the_broken_plugins_and_exits_zero(cli_runs):
    r = cli_runs["plugins"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rows = table(r.stdout)
    assert sorted(rows) == sorted([*BUILTIN, "fake", *BROKEN])
    for name, (_, reason) in BROKEN.items():
        assert rows[name][:3] == ["1.0", f"sc-{name}", "-"], name
        assert rows[name][3] == f"broken: {reason}", name
    # one error line per broken plugin, naming it and its package; nothing else (the space still resolved)
    assert r.stderr.splitlines() == [f"error: plugin '{name}' (package sc-{name}): {reason}" for name, (_, reason) in sorted(BROKEN.items())]
    assert rows["fake"] == ["0.3", "sc-fake-plugin", "1", "ok"]
    assert rows["kernel"] == ["0.1.0", "searchcore", "3", "ok"]
    assert rows["attention"] == ["0.1.0", "searchcore", "9", "ok"]


# --- --plugin, --disable, the environment -------------------------------------------------------


@pytest.fixture
def dev_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "sc_dev_plugin.py").write_text(textwrap.dedent(FAKE_PLUGIN.replace("fake.", "sc_dev_plugin.")))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "sc_dev_plugin"


def test_plugin_flag_adds_a_development_module(dev_module, capsys):
    assert main(["--plugin", dev_module, "plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert rows[dev_module] == ["dev", "(development)", "1", "ok"]
    assert f"{dev_module}  (--plugin: " in out
    assert "dimensions: sc_dev_plugin.dropout" in out
    info = host_module.get_host().infos[dev_module]
    assert info.source == "--plugin" and info.ok


def test_env_adds_a_development_module(dev_module, monkeypatch):
    monkeypatch.setenv("SEARCHCORE_PLUGINS", f" {dev_module} ,")
    host = PluginHost()
    assert host.infos[dev_module].status == "ok"
    assert host.infos[dev_module].package == "(development)"
    space = resolve(load_space(None), host, [1, 8, 8], 10)
    assert "sc_dev_plugin.dropout" in {d.name for d in space.dimensions}


def test_a_missing_development_module_is_broken_not_fatal(capsys):
    assert main(["--plugin", "sc_not_there", "plugins"]) == 0
    captured = capsys.readouterr()
    assert table(captured.out)["sc_not_there"][3] == "broken: import failed: ModuleNotFoundError: No module named 'sc_not_there'"
    assert "error: plugin 'sc_not_there' (package (development)): import failed: ModuleNotFoundError: No module named 'sc_not_there'" in captured.err


def _space_dims(out: str) -> set[str]:
    return {line.split()[0] for line in out.splitlines() if re.match(r"^[a-z_]+\.\S+\s", line)}


def test_disable_flag_removes_a_plugin(capsys):
    assert main(["--disable", "dense", "space", "show"]) == 0
    out = capsys.readouterr().out
    dims = _space_dims(out)
    assert f"plugins: {', '.join(p for p in builtin_plugins() if p != 'dense')}" in out
    assert not any(d.startswith("dense.") for d in dims)
    assert {"kernel.s1", "attention.s3.heads", "widthdepth.width"} <= dims
    assert dims == {d.name for d in builtin_space().dimensions if d.plugin != "dense"}
    assert f"{len(dims)} dimensions;" in out and len(dims) == len(builtin_space().dimensions) - 9
    assert host_module.get_host().infos["dense"].status == "disabled"
    assert main(["--disable", "dense", "plugins"]) == 0
    assert table(capsys.readouterr().out)["dense"] == ["0.1.0", "searchcore", "-", "disabled"]


def test_env_disables_plugins(monkeypatch, capsys):
    monkeypatch.setenv("SEARCHCORE_DISABLE", "attention,pooling")
    host = PluginHost()
    assert host.infos["attention"].status == "disabled" and host.infos["pooling"].status == "disabled"
    assert host.infos["kernel"].ok
    space = resolve(load_space(None), host, [1, 8, 8], 10)
    assert space.plugins == [p for p in builtin_plugins() if p not in ("attention", "pooling")]
    assert "attention.se" not in host.blocks()
    assert main(["space", "show"]) == 0
    dims = _space_dims(capsys.readouterr().out)
    assert dims and not any(d.startswith(("attention.", "pooling.")) for d in dims)


def test_a_space_file_naming_a_disabled_plugin_says_so(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text("dataset: null\ninput: [1, 8, 8]\nclasses: 10\nplugins: [kernel, dense]\n")
    assert main(["--disable", "dense", "space", "show", str(f)]) == 2
    err = capsys.readouterr().err
    available = ", ".join(p for p in builtin_plugins() if p != "dense")
    assert err == f"searchcore: error: {f}: plugins.dense: plugin is disabled; available: {available}\n"


def test_trace_hooks_prints_timings(capsys):
    assert main(["--trace-hooks", "plugins"]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("[searchcore trace]")]
    pattern = re.compile(r"^\[searchcore trace\] (searchcore_[a-z_]+) \[([a-z0-9_,]+)\] \d+\.\d\d ms$")
    assert lines and all(pattern.match(x) for x in lines), lines[:5]
    calls = {pattern.match(x).groups() for x in lines}
    assert ("searchcore_backbones", "core") in calls
    assert ("searchcore_dimensions", "kernel") in calls
    assert ("searchcore_blocks", "attention") in calls
    assert main(["plugins"]) == 0
    assert "[searchcore trace]" not in capsys.readouterr().err
