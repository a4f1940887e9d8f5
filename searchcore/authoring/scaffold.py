"""``searchcore new-plugin NAME``: a separately installable plugin package that already works.

Why: the fastest way to a correct plugin is to start from one that passes the conformance
kit and edit it. The package has the ``searchcore`` entry point, one dimension per stage
with its transformation and block, the kit's tests, a tiny space file to try it, and a README.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from searchcore.errors import UsageError

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
PLACEHOLDER = "__NAME__"


def builtin_plugin_names() -> set[str]:
    """Entry-point names searchcore itself takes; a new plugin under one of them would be refused at load."""
    from searchcore.authoring.testing import builtin_entry_points

    return {ep.name for ep in builtin_entry_points()} | {"core"}


def check_name(name: str) -> str:
    """Plugin names become entry-point, module and dimension prefixes, so they are lowercase identifiers."""
    if not NAME_RE.fullmatch(name) or keyword.iskeyword(name):
        raise UsageError(
            f"plugin name {name!r}: use a lowercase identifier of 1-40 characters (letters, digits, _), e.g. invres"
        )
    if name.startswith("searchcore"):
        raise UsageError(
            f"plugin name {name!r}: leave out the 'searchcore' prefix; the package is named searchcore-{name} for you"
        )
    taken = builtin_plugin_names()
    if name in taken:
        raise UsageError(f"plugin name {name!r} is taken by a built-in plugin ({', '.join(sorted(taken))})")
    return name


def package_dir(name: str, directory: Path) -> Path:
    """Where ``new_plugin`` writes: ``DIRECTORY/searchcore-NAME``."""
    return Path(directory) / f"searchcore-{name.replace('_', '-')}"


def new_plugin(name: str, directory: Path) -> Path:
    """Write the package for plugin ``name`` under ``directory`` and return its root; never overwrites."""
    check_name(name)
    root = package_dir(name, directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} already exists and is not empty; choose another --dir or remove it")
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        "space.yaml": SPACE,
        f"searchcore_{name}/__init__.py": INIT,
        f"searchcore_{name}/plugin.py": PLUGIN,
        "tests/test_conformance.py": TESTS,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.replace(PLACEHOLDER, name).replace("__DIST__", name.replace("_", "-")))
    return root


# --- templates: __NAME__ becomes the plugin name, __DIST__ its dashed form ---------------------------

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "searchcore-__DIST__"
version = "0.1.0"
description = "__NAME__: an improvement plugin for searchcore"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["searchcore>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# This table makes the package a plugin: searchcore loads every entry point of the group "searchcore".
# The name on the left is the plugin's name: its dimensions and block types start with "__NAME__.".
[project.entry-points.searchcore]
__NAME__ = "searchcore___NAME__.plugin"

[tool.setuptools]
packages = ["searchcore___NAME__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]

[tool.ruff]
line-length = 120

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]

[tool.ruff.lint.isort]
known-third-party = ["searchcore"]
"""

INIT = '''\
"""searchcore-__DIST__: the __NAME__ improvement plugin for searchcore (the hooks are in ``plugin``)."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""The __NAME__ improvement: an extra depthwise convolution, added with a residual sum at the end of a stage.

It is a working example to replace with your own improvement; keep the three parts:
dimensions (what the search may choose), the transformation (how a choice edits the
architecture spec) and the block (how the spec's new block type becomes a torch module).
Guide: docs/writing-plugins.md in the searchcore repository.
"""

from __future__ import annotations

from typing import Any

import torch
from searchcore import hookimpl
from searchcore.build import BuildContext
from searchcore.improve import conv_stages, copy_spec, stage_name
from searchcore.space import Dimension
from torch import nn

PLUGIN = "__NAME__"
BLOCK = f"{PLUGIN}.block"


@hookimpl
def searchcore_options() -> dict[str, Any]:
    """Defaults a space file may override under ``plugins: {__NAME__: {kernel: 5}}``."""
    return {"kernel": 3}


@hookimpl
def searchcore_dimensions(base: dict, options: dict[str, Any]) -> list[Dimension]:
    """One on/off dimension per convolutional stage of the backbone, named ``__NAME__.s1``, ``__NAME__.s2`` ..."""
    return [
        Dimension.categorical(f"{PLUGIN}.{stage_name(i)}", [False, True], off=False, help="extra depthwise conv")
        for i in conv_stages(base)
    ]


@hookimpl
def searchcore_transform(spec: dict, params: dict[str, Any], options: dict[str, Any]) -> dict:
    """Append the block to every stage whose dimension is on; a copy, never the input."""
    spec = copy_spec(spec)
    for i, stage in enumerate(spec["stages"]):
        if params.get(f"{PLUGIN}.{stage_name(i)}", False):
            stage["body"] = [*stage["body"], {"type": BLOCK, "size": options["kernel"]}]
    return spec


class DepthwiseResidual(nn.Module):
    """``x + BN(depthwise_conv(x))``: spatial mixing per channel that keeps the shape and starts near identity."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


def block_factory(in_channels: int, options: dict[str, Any], ctx: BuildContext) -> tuple[nn.Module, int]:
    """Build ``__NAME__.block``: returns the module and its output channels."""
    kernel = int(options["size"])
    if kernel % 2 == 0:
        raise ValueError(f"size must be odd to keep the feature map's size, got {kernel}")
    return DepthwiseResidual(in_channels, kernel), in_channels


@hookimpl
def searchcore_blocks(register: Any) -> None:
    register(BLOCK, block_factory)
'''

TESTS = '''\
"""Run with ``pytest`` in the package folder; the plugin need not be installed."""

from __future__ import annotations

import torch
from searchcore.testing import PluginConformance

from searchcore___NAME__ import plugin


class TestConformance(PluginConformance):
    """The searchcore conformance kit: registration, dimensions, sampling, purity, building, round trips, clashes."""

    plugin_module = plugin
    plugin_name = "__NAME__"


def test_block_keeps_the_shape() -> None:
    module, out = plugin.block_factory(8, {"size": 3}, None)
    x = torch.randn(2, 8, 5, 5)
    assert out == 8
    assert module(x).shape == x.shape


def test_transform_adds_one_block_per_chosen_stage() -> None:
    base = {"stages": [{"body": [{"type": "conv", "k": 3}]}, {"body": [{"type": "conv", "k": 3}]}]}
    spec = plugin.searchcore_transform(base, {"__NAME__.s1": True, "__NAME__.s2": False}, {"kernel": 5})
    assert [b["type"] for b in spec["stages"][0]["body"]] == ["conv", "__NAME__.block"]
    assert spec["stages"][0]["body"][1]["size"] == 5
    assert len(spec["stages"][1]["body"]) == 1
'''

SPACE = """\
# A tiny space with only this plugin, to try it:
#   searchcore space show space.yaml
#   searchcore search space.yaml
name: __NAME__-try
dataset: digits
backbone: seed-cnn
plugins: [__NAME__]
budget:
  trials: 2
  epochs: 1
search:
  sampler: random
  pruner: none
  seed: 0
"""

README = """\
# searchcore-__DIST__

The `__NAME__` improvement plugin for searchcore.
It was generated by `searchcore new-plugin __NAME__`; the example improvement in
`searchcore___NAME__/plugin.py` (an extra depthwise convolution per stage) is yours to replace.

## Develop

```bash
pip install -e .                  # registers the entry point "__NAME__"
searchcore plugins --verbose      # lists __NAME__, its hooks and where it was loaded from
pytest                            # the conformance kit and your own tests
searchcore space show space.yaml  # the dimensions: __NAME__.s1, __NAME__.s2, ...
searchcore search space.yaml      # a 2-trial search over this plugin only
```

`searchcore --trace-hooks ...` (or `SEARCHCORE_TRACE_HOOKS=1`) prints every hook call with its
duration. Without installing, `pytest` works as is (the kit loads the module under the name
`__NAME__`).

## Layout

- `pyproject.toml`: the `[project.entry-points.searchcore]` table that makes this a plugin.
- `searchcore___NAME__/plugin.py`: the hooks: options, dimensions, transformation, block.
- `tests/test_conformance.py`: `searchcore.testing.PluginConformance` plus plugin-specific tests.
- `space.yaml`: a tiny space with only this plugin.

## Rules the kit checks

Dimension and block names start with `__NAME__.`; with every dimension off the spec is
unchanged; the transformation never mutates its input; every value of every dimension builds
and trains; no name clashes with the built-in plugins.
"""
