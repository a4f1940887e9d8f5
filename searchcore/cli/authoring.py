"""Plugin-authoring subcommands (``new-plugin``), added to the CLI parser by ``cli.build_parser``.

Kept apart from the search commands so the two grow independently.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_authoring_commands(sub: Any) -> None:
    """Register ``new-plugin NAME [--dir D]`` on the CLI's subparsers."""
    sp = sub.add_parser(
        "new-plugin",
        help="write a new, installable improvement-plugin package",
        description="Write DIR/searchcore-NAME: pyproject with the searchcore entry point, a working plugin module, "
        "conformance tests, a tiny space file and a README. Guide: docs/writing-plugins.md.",
    )
    sp.add_argument("name", metavar="NAME", help="plugin name: a lowercase identifier such as invres")
    sp.add_argument(
        "--dir", default=".", metavar="D", help="folder to create the package in (default: the current folder)"
    )
    sp.set_defaults(func=cmd_new_plugin)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from searchcore.authoring.scaffold import new_plugin

    root = new_plugin(args.name, Path(args.dir))
    shown = os.path.relpath(root) if not os.path.relpath(root).startswith("..") else str(root)
    print(f"created {shown}")
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        print(f"  {rel}")
    print("next:")
    print(f"  cd {shown} && pip install -e . && pytest")
    print(f"  searchcore plugins --verbose   # lists {args.name}")
    print("  searchcore search space.yaml   # a 2-trial search over this plugin only")
    return 0
