"""NAS-Bench-201 (Dong & Yang, ICLR 2020): its cell space, the real cell in PyTorch, a table evaluator.

The cell is a 4-node DAG; node ``j`` sums ``op(i->j)(node i)`` over ``i < j`` and node 3 is the
output. Each of the 6 edges takes one of 5 ops, so the space has 5**6 = 15,625 cells. The plugin
gives the search 6 dimensions (``nasbench201.edge0`` .. ``edge5``, in the benchmark's edge order
1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2), a backbone that stacks the cell like the benchmark does,
and an evaluator that looks a cell up in the benchmark's CIFAR-10 table instead of training it,
so strategies can be compared on thousands of searches in minutes.

Strategies that suit this space are searchcore's own samplers ``evolution`` and ``mf-evolution``
(evolution plus a promotion pruner on the 12-epoch score; give the space ``budget: {epochs: 200}``
so it screens at 12 of 200 epochs and trains the best 1/16 fully), and ``zc-evolution``, which also
asks a zero-cost proxy before screening: :func:`zero_cost` gives the table's NASWOT score for its
scorer; see :mod:`searchcore.engine.strategies`. The cheap fidelity is the 12-epoch VALIDATION
accuracy; the 12-epoch test accuracy is read for the record only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from searchcore.arch.spec import copy_spec
from searchcore.errors import SpecError, UsageError
from searchcore.plugins.hookspecs import hookimpl
from searchcore.space import Dimension

PLUGIN = "nasbench201"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), the benchmark's order
NODES = 4
CELL = f"{PLUGIN}.cell"
REDUCE = f"{PLUGIN}.reduce"
LASTACT = f"{PLUGIN}.lastact"
# The benchmark's ResNet cell (x + conv3x3(conv3x3(x))): the backbone's cell before any search.
DEFAULT_OPS = ("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "skip_connect")
TABLE_ENV = "SEARCHCORE_NB201_TABLE"
COLUMNS = (
    "index",
    "arch_str",
    "params_M",
    "cifar10_valid_acc",
    "cifar10_test_acc",
    "cifar10_test_acc_12ep",
    "cifar10_valid_acc_12ep",
    "naswot_score",
)
LOW_FIDELITY_EPOCHS = 12
FULL_EPOCHS = 200


def dimension_names() -> list[str]:
    return [f"{PLUGIN}.edge{i}" for i in range(len(EDGES))]


# --- the cell string ----------------------------------------------------------------------------


def arch_str(ops: Sequence[str]) -> str:
    """The benchmark's cell string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, from 6 ops in edge order."""
    ops = list(ops)
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} ops from {', '.join(OPS)}; got {ops}")
    groups, k = [], 0
    for node in range(1, NODES):
        groups.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(node)) + "|")
        k += node
    return "+".join(groups)


def parse_arch_str(text: str) -> list[str]:
    """The inverse of :func:`arch_str`; refuses anything that is not a well-formed 4-node cell string."""
    groups = text.strip().split("+")
    if len(groups) != NODES - 1:
        raise ValueError(f"{text!r}: expected {NODES - 1} node groups joined by '+'")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise ValueError(f"{text!r}: node group {group!r} must start and end with '|'")
        entries = group[1:-1].split("|")
        if len(entries) != node:
            raise ValueError(f"{text!r}: node {node} needs {node} inputs, got {len(entries)}")
        for i, entry in enumerate(entries):
            op, _, src = entry.partition("~")
            if op not in OPS or src != str(i):
                raise ValueError(f"{text!r}: bad edge {entry!r} (expected op~{i} with op one of {', '.join(OPS)})")
            ops.append(op)
    return ops


# --- the cell in PyTorch --------------------------------------------------------------------------


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BatchNorm: the benchmark's conv op and its reduction block's halves."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape, kept on the autograd graph of the input."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.c_in == self.c_out:
            return x.mul(0.0)
        n, _, h, w = x.shape
        return x.new_zeros(n, self.c_out, h, w)


class Pool(nn.Module):
    """3x3 average pool, stride 1, padding not counted; a 1x1 ReLU-Conv-BN first when channels change."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.pre = ReLUConvBN(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.pre(x))


def make_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """One edge's op; ``skip_connect`` between different widths becomes a 1x1 ReLU-Conv-BN projection."""
    if name == "none":
        return Zero(c_in, c_out)
    if name == "skip_connect":
        return nn.Identity() if c_in == c_out else ReLUConvBN(c_in, c_out, 1)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3)
    if name == "avg_pool_3x3":
        return Pool(c_in, c_out)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}; ops are {', '.join(OPS)}")


class Cell(nn.Module):
    """The benchmark's cell: node 0 is the input, node j = sum of op(i->j)(node i) over i < j, node 3 is the output.

    Edges out of node 0 map ``c_in`` to ``c_out`` channels; every other edge keeps ``c_out``.
    """

    def __init__(self, c_in: int, c_out: int, ops: Sequence[str]) -> None:
        super().__init__()
        arch_str(ops)  # validates
        self.ops = list(ops)
        self.edges = nn.ModuleList(make_op(op, c_in if src == 0 else c_out, c_out) for op, (_, src) in zip(ops, EDGES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for node in range(1, NODES):
            total = self.edges[k](nodes[0])
            for i in range(1, node):
                total = total + self.edges[k + i](nodes[i])
            nodes.append(total)
            k += node
        return nodes[-1]


class ResNetReduce(nn.Module):
    """The benchmark's reduction block: a ResNet basic block with stride 2 and an avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def cell_block(in_channels: int, options: dict, ctx: Any = None) -> tuple[nn.Module, int]:
    out = int(options.get("out") or in_channels)
    return Cell(in_channels, out, list(options["ops"])), out


def reduce_block(in_channels: int, options: dict, ctx: Any = None) -> tuple[nn.Module, int]:
    out = int(options.get("out") or 2 * in_channels)
    return ResNetReduce(in_channels, out), out


def lastact_block(in_channels: int, options: dict, ctx: Any = None) -> tuple[nn.Module, int]:
    """BatchNorm + ReLU before pooling: cells end in a sum of BatchNorm outputs, not an activation."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU()), in_channels


@hookimpl
def searchcore_blocks(register: Callable[..., None]) -> None:
    register(CELL, cell_block)
    register(REDUCE, reduce_block)
    register(LASTACT, lastact_block)


# --- backbone, dimensions, transformation -----------------------------------------------------------


def backbone(input_shape: list[int], classes: int, options: dict) -> dict:
    """The benchmark's skeleton: stem, 3 stages of ``cells`` cells at C, 2C, 4C, reductions between.

    Defaults are small (C=16, one cell per stage) so a trained trial stays cheap; the benchmark
    itself uses C=16 and 5 cells, and its table scores that network whatever widths the spec has.
    """
    c = int(options.get("channels") or 16)
    n = int(options.get("cells") or 1)
    ops = list(options.get("ops") or DEFAULT_OPS)
    arch_str(ops)
    widths = [c, 2 * c, 4 * c]
    stages = []
    for i, w in enumerate(widths):
        down = {"type": REDUCE, "out": widths[i + 1]} if i + 1 < len(widths) else None
        body = [{"type": CELL, "ops": list(ops), "out": w} for _ in range(n)]
        stages.append({"body": body, "attention": [], "shortcut": None, "down": down})
    return {
        "schema": 1,
        "input": list(input_shape),
        "classes": int(classes),
        "stem": [{"type": "conv", "out": c, "k": 3, "d": 1, "s": 1, "bn": True, "act": "none"}],
        "stages": stages,
        "head": [{"type": LASTACT}, {"type": "gap"}, {"type": "flatten"}, {"type": "linear"}],
    }


@hookimpl
def searchcore_backbones(register: Callable[..., None]) -> None:
    register(PLUGIN, backbone)


@hookimpl
def searchcore_options() -> dict[str, Any]:
    return {"table": ""}


def cells(spec: dict) -> list[dict]:
    """Every cell block in the stage bodies, in order."""
    return [b for st in spec["stages"] for b in st["body"] if b.get("type") == CELL]


@hookimpl
def searchcore_dimensions(base: dict, options: dict) -> list[Dimension]:
    """One dimension per edge, and only when the backbone has cells (elsewhere they would change nothing)."""
    found = cells(base)
    if not found:
        return []
    current = list(found[0]["ops"])
    return [
        Dimension.categorical(
            name, OPS, off=current[i], help=f"op on the edge into node {EDGES[i][0]} from node {EDGES[i][1]}"
        )
        for i, name in enumerate(dimension_names())
    ]


@hookimpl
def searchcore_transform(spec: dict, params: dict) -> dict:
    """Write the sampled ops into every cell (the benchmark repeats one cell throughout the network)."""
    spec = copy_spec(spec)
    names = dimension_names()
    for block in cells(spec):
        ops = list(block["ops"])
        for i, name in enumerate(names):
            if name in params:
                ops[i] = params[name]
        block["ops"] = ops
    return spec


def spec_ops(spec: dict) -> list[str]:
    """The one cell a spec repeats; a spec with no cells, or with different cells, is not in the table."""
    found = cells(spec)
    if not found:
        raise SpecError(f"the {PLUGIN} evaluator needs a spec with {CELL!r} blocks (backbone {PLUGIN!r})")
    ops = list(found[0]["ops"])
    if any(list(b["ops"]) != ops for b in found[1:]):
        raise SpecError(
            f"the {PLUGIN} table scores networks that repeat one cell; this spec has several different cells"
        )
    arch_str(ops)
    return ops


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One table row: what the benchmark measured for one cell."""

    index: int
    params_m: float
    valid_acc: float
    test_acc: float
    test_acc_12ep: float  # for reporting only: screening by it would peek at the test set
    valid_acc_12ep: float  # the honest cheap fidelity
    naswot: float | None  # NASWOT zero-cost score; None where the table has none


_TABLES: dict[tuple[str, int, int], dict[str, Entry]] = {}


def table_path(config: Any = None) -> Path:
    """The table: option ``table`` (space file: ``plugins.nasbench201.table``), else ``$SEARCHCORE_NB201_TABLE``."""
    plugins = config.get("plugins") if isinstance(config, dict) else getattr(config, "plugins", None)
    options = (plugins or {}).get(PLUGIN) or {}
    path = options.get("table") if isinstance(options, dict) else None
    path = path or os.environ.get(TABLE_ENV, "")
    if not path:
        raise UsageError(f"NAS-Bench-201 table not set: give plugins.{PLUGIN}.table in the space file or ${TABLE_ENV}")
    return Path(path)


def _optional_float(text: str | None) -> float | None:
    """An empty cell is a score the benchmark's authors did not measure, not an error."""
    text = (text or "").strip()
    return float(text) if text else None


def load_table(path: str | Path) -> dict[str, Entry]:
    """Read the CSV once per file version; every problem is one line naming the file and the columns expected."""
    p = Path(path)
    expected = f"expected a CSV with columns {', '.join(COLUMNS)}"
    try:
        st = p.stat()
    except OSError:
        raise UsageError(f"NAS-Bench-201 table {p}: no such file; {expected}") from None
    key = (str(p), st.st_mtime_ns, st.st_size)
    if key in _TABLES:
        return _TABLES[key]
    table: dict[str, Entry] = {}
    try:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"NAS-Bench-201 table {p}: missing column {missing[0]!r}; {expected}")
            for row in reader:
                try:
                    parse_arch_str(row["arch_str"])
                    entry = Entry(
                        int(row["index"]),
                        float(row["params_M"]),
                        float(row["cifar10_valid_acc"]),
                        float(row["cifar10_test_acc"]),
                        float(row["cifar10_test_acc_12ep"]),
                        float(row["cifar10_valid_acc_12ep"]),
                        _optional_float(row["naswot_score"]),
                    )
                except (TypeError, ValueError) as e:
                    raise UsageError(f"NAS-Bench-201 table {p}: line {reader.line_num}: {e}; {expected}") from None
                table[row["arch_str"].strip()] = entry
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"NAS-Bench-201 table {p}: cannot read it ({e}); {expected}") from None
    if not table:
        raise UsageError(f"NAS-Bench-201 table {p}: no rows; {expected}")
    _TABLES.clear()  # one table at a time: a new version replaces the old
    _TABLES[key] = table
    return table


def lookup(table: dict[str, Entry], ops: Sequence[str], source: str = "table") -> Entry:
    arch = arch_str(ops)
    entry = table.get(arch)
    if entry is None:
        raise UsageError(f"NAS-Bench-201 table {source}: no row for cell {arch}; is the table complete?")
    return entry


def evaluate(spec: dict, config: Any, report: Callable[[int, dict[str, float]], None]) -> dict[str, float]:
    """Score a spec's cell from the table, as a training run would report it.

    First ``report(12, {"val_accuracy": ...})`` with the 12-epoch VALIDATION accuracy (the cheap
    fidelity, where a pruner may stop the trial; the 12-epoch test accuracy would let it peek at the
    test set), then the 200-epoch validation accuracy as the result. The test accuracy is returned
    for the record only; nothing may choose by it.
    """
    path = table_path(config)
    entry = lookup(load_table(path), spec_ops(spec), str(path))
    report(LOW_FIDELITY_EPOCHS, {"val_accuracy": entry.valid_acc_12ep / 100.0})
    return {
        "val_accuracy": entry.valid_acc / 100.0,
        "test_accuracy": entry.test_acc / 100.0,
        "params": entry.params_m * 1e6,
    }


def zero_cost(spec: dict, config: Any) -> dict[str, float]:
    """The cell's zero-cost scores from the table: ``{"naswot": score}``, empty where the table has none.

    A zero-cost proxy scores an untrained network in about a second, so a search can rank many
    cells before training any; the table holds the published NASWOT score, so a search on the
    benchmark pays a lookup instead of computing it (the caller charges its cost).
    """
    path = table_path(config)
    entry = lookup(load_table(path), spec_ops(spec), str(path))
    return {} if entry.naswot is None else {"naswot": entry.naswot}


@hookimpl
def searchcore_evaluators(register: Callable[..., None]) -> None:
    register(PLUGIN, evaluate)
