"""The ``searchcore`` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from searchcore.cli.console import fraction, nonneg_int, positive_float, positive_int, table
from searchcore.engine.quiet import quiet_libraries
from searchcore.errors import PluginError, SearchcoreError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"searchcore: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse (3.11) drops a value that is exactly '--' (``--seed=--``) and hands the action an
        # untyped [] instead of an error; refuse it as the missing value it is
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one argument")
        return super()._get_values(action, arg_strings)


def one_line(text: str) -> str:
    """An error message as one line, whatever the input it quotes: line breaks (including Unicode
    ones such as U+0085 and U+2028) and other control characters are written as escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text.strip())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="searchcore", description="Plugin-based neural architecture search.")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="load a plugin module (development)")
    p.add_argument("--disable", action="append", default=[], metavar="NAME", help="disable a plugin by name")
    p.add_argument("--trace-hooks", action="store_true", help="print every hook call with its duration")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sp = sub.add_parser("plugins", help="list plugins, their dimensions and status")
    sp.add_argument("--verbose", "-v", action="store_true", help="show hooks and where each plugin was loaded from")
    sp.set_defaults(func=cmd_plugins)

    sp = sub.add_parser("space", help="inspect a search space")
    ssub = sp.add_subparsers(dest="space_command", metavar="ACTION", parser_class=_Parser, required=True)
    show = ssub.add_parser("show", help="show the combined search space")
    show.add_argument("file", nargs="?", help="space file (default: the built-in default space)")
    show.set_defaults(func=cmd_space_show)

    sp = sub.add_parser("build", help="build a spec and print parameters, MACs and output shape")
    sp.add_argument("spec", help="architecture spec JSON file")
    sp.set_defaults(func=cmd_build)

    from searchcore.cli import commands

    commands.add_commands(sub, {"positive_int": positive_int, "nonneg_int": nonneg_int, "positive_float": positive_float, "fraction": fraction})
    from searchcore.cli.authoring import add_authoring_commands

    add_authoring_commands(sub)
    from searchcore.cli.results import add_results_commands

    add_results_commands(sub)  # report, ablate
    return p


# --- commands -------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from searchcore.engine.config import load_space
    from searchcore.plugins.host import get_host

    host = get_host()
    dims_by_plugin: dict[str, list[str]] = {}
    clashed: set[str] = set()
    while True:
        try:
            space = _resolve_quiet(load_space(None), host)
        except PluginError as e:
            if e.plugin in host.infos and not host.infos[e.plugin].ok and e.plugin not in clashed:
                clashed.add(e.plugin)  # a dimension clash broke this plugin; the others still have their dimensions
                continue
            print(f"note: default space not resolved: {e}", file=sys.stderr)
        except SearchcoreError as e:
            print(f"note: default space not resolved: {e}", file=sys.stderr)
        else:
            for d in space.dimensions:
                dims_by_plugin.setdefault(d.plugin, []).append(d.name)
        break
    host.catalog("blocks")  # catalog errors mark plugins broken; show them
    rows = []
    for info in sorted(host.infos.values(), key=lambda i: i.name):
        dims = dims_by_plugin.get(info.name, [])
        rows.append((info.name, info.version, info.package, str(len(dims)) if info.ok else "-", info.status))
    table(["plugin", "version", "package", "dimensions", "status"], rows)
    if args.verbose:
        for info in sorted(host.infos.values(), key=lambda i: i.name):
            print(f"\n{info.name}  ({info.source}: {info.location or '-'})")
            print(f"  hooks: {', '.join(info.hooks) or '-'}")
            if dims_by_plugin.get(info.name):
                print(f"  dimensions: {', '.join(dims_by_plugin[info.name])}")
    broken = [i for i in host.infos.values() if i.status.startswith("broken")]
    for info in broken:
        print(f"error: plugin {info.name!r} (package {info.package}): {info.status[len('broken: '):]}", file=sys.stderr)
    return 0


def _resolve_quiet(cfg: Any, host: Any) -> Any:
    from searchcore.engine.config import resolve
    from searchcore.engine.runner import dataset_shape

    shape, classes = dataset_shape(cfg, host)
    return resolve(cfg, host, shape, classes)


def cmd_space_show(args: argparse.Namespace) -> int:
    from searchcore.engine.config import load_space
    from searchcore.plugins.host import get_host

    cfg = load_space(args.file)
    host = get_host()
    space = _resolve_quiet(cfg, host)
    shape, classes = space.base["input"], space.base["classes"]
    print(f"space: {cfg.source}   backbone: {cfg.backbone}   input: {'x'.join(map(str, shape))}   classes: {classes}")
    print(f"plugins: {', '.join(space.plugins)}")
    rows = []
    for d in space.dimensions:
        cond = f"{d.condition[0]} in {{{', '.join(map(str, d.condition[1]))}}}" if d.condition else ""
        rows.append((d.name, d.kind, d.describe(), str(d.off), cond))
    table(["dimension", "type", "choices / range", "off", "condition"], rows)
    n = space.count()
    print(f"{len(space.dimensions)} dimensions; distinct architectures: {'infinite (continuous dimensions)' if math.isinf(n) else f'{int(n):,}'}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from searchcore.arch.build import build, output_shape, param_count
    from searchcore.arch.spec import encode, from_json, spec_hash
    from searchcore.plugins.host import get_host
    from searchcore.train.objectives import count_macs

    path = Path(args.spec)
    if not path.is_file():
        raise UsageError(f"{args.spec}: no such spec file")
    spec = from_json(path.read_text(), str(path))
    model = build(spec, get_host().blocks())
    print(f"spec:    {encode(spec)}")
    print(f"hash:    {spec_hash(spec)}")
    print(f"params:  {param_count(model):,}")
    print(f"MACs:    {count_macs(model, spec['input']):,}")
    print(f"input:   {'x'.join(map(str, spec['input']))}")
    print(f"output:  {'x'.join(map(str, output_shape(model, spec['input'])))}")
    return 0


# --- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from searchcore.plugins.host import configure

    quiet_libraries()
    try:
        configure(args.plugin, args.disable, trace=args.trace_hooks or None)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SearchcoreError as e:
        print(f"searchcore: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("searchcore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
