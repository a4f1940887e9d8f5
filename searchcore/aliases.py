"""Old import paths, kept for plugins and scripts written before the packages moved.

``import searchcore.spec`` gives the module ``searchcore.arch.spec`` itself (the same object, so a
monkeypatch reaches the real one). No file sits at an old path, so git follows each moved file.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

ALIASES = {
    "searchcore.build": "searchcore.plugins.building",  # build(spec) keeps its default: the loaded plugins' blocks
    "searchcore.spec": "searchcore.arch.spec",
    "searchcore.improve": "searchcore.arch.improve",
    "searchcore.hookspecs": "searchcore.plugins.hookspecs",
    "searchcore.host": "searchcore.plugins.host",
    "searchcore.core": "searchcore.builtin.core",
    "searchcore.testing": "searchcore.authoring.testing",
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name to the module at its new path."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in ALIASES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its own name."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import searchcore`` does)."""
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())
