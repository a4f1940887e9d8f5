"""Measure searchcore's own import graph: modules, edges, cycles, upward edges, private imports.

Reads every ``import``/``from`` statement with ``ast`` (imports inside functions included), so a
cycle hidden by a function-level import still shows. Usage::

    python scripts/import_graph.py [PACKAGE_DIR] [--layers a,b,c] [--ignore mod1,mod2] [--edges]

``--layers`` lists subpackages from top to bottom; an edge from a lower layer up to a higher one is
counted as upward. ``--ignore`` leaves out alias modules kept only for old import paths.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    """Dotted module name of ``path`` inside the package at ``root``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """Absolute module named by a (possibly relative) ``from`` import."""
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def read_graph(root: Path) -> tuple[set[str], dict[str, set[str]], list[tuple[str, str, str]]]:
    """Modules, edges (module -> imported modules) and cross-module private imports."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: list[tuple[str, str, str]] = []

    def owner(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(mod, path.name == "__init__.py", node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append((sub, None) if sub in modules else (base, alias.name))
            for target, name in targets:
                dest = owner(target)
                if dest is None or dest == mod:
                    continue
                edges[mod].add(dest)
                if name and name.startswith("_") and not name.startswith("__"):
                    private.append((mod, dest, name))
    return modules, edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str, layers: list[str]) -> int | None:
    """Position of ``module`` in the top-to-bottom ``layers`` list, None when in no layer."""
    for i, layer in enumerate(layers):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="searchcore")
    parser.add_argument("--layers", default="", help="comma-separated subpackages, top layer first")
    parser.add_argument("--ignore", default="", help="comma-separated modules to leave out (aliases)")
    parser.add_argument("--edges", action="store_true", help="print every upward edge and private import")
    args = parser.parse_args(argv)
    root = Path(args.package).resolve()
    modules, edges, private = read_graph(root)
    ignored = {m for m in args.ignore.split(",") if m}
    modules -= ignored
    edges = {m: {d for d in ds if d not in ignored} for m, ds in edges.items() if m not in ignored}
    private = [p for p in private if p[0] not in ignored]
    layers = [f"{root.name}.{name}" for name in args.layers.split(",") if name]
    upward = []
    for src, dests in edges.items():
        for dest in dests:
            a, b = layer_of(src, layers), layer_of(dest, layers)
            if a is not None and b is not None and b < a:
                upward.append((src, dest))
    found = cycles(edges)
    print(f"modules: {len(modules)}")
    print(f"edges: {sum(len(d) for d in edges.values())}")
    print(f"cycles: {len(found)}" + "".join(f"\n  {len(c)}: {' '.join(c)}" for c in found))
    if layers:
        print(f"upward edges: {len(upward)}")
    print(f"private imports: {len(private)}")
    if args.edges:
        for src, dest in sorted(upward):
            print(f"  up: {src} -> {dest}")
        for src, dest, name in sorted(private):
            print(f"  private: {src} -> {dest}.{name}")
    return 1 if found or upward or private else 0


if __name__ == "__main__":
    sys.exit(main())
