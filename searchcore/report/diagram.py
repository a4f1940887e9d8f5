"""The winning architecture drawn: its blocks, their output shapes and parameters, and which plugin
changed what relative to the unimproved backbone.

Attribution is computed, not guessed from names: for each plugin the winner uses, the space
builds the spec with *only that plugin's* choices applied to the backbone, and every part of the
network (stem, each stage's body / attention / shortcut / downsampler, head) that differs from
the plain backbone is credited to it. Blocks whose type a plugin registered (``attention.se``)
are credited to that plugin too. Shapes and parameter counts come from building the model and
running one zero image through it with forward hooks.

Drawn with matplotlib into SVG (text kept as text, so it is searchable and small) and PNG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from searchcore.report.collect import CORE_COLOR, is_on, plugin_colors, switch_off
from searchcore.report.credit import describe_choice
from searchcore.space import Dimension

BOX_W, BOX_H, GAP, ROW_H, LABEL_W = 1.6, 0.62, 0.35, 0.98, 0.95


@dataclass
class Block:
    type: str
    options: dict[str, Any]
    shape: list[int] | None = None
    params: int = 0
    plugins: list[str] = field(default_factory=list)


@dataclass
class Row:
    label: str
    blocks: list[Block]
    shortcut: bool = False
    shortcut_plugins: list[str] = field(default_factory=list)
    before_down: int = -1  # index of the first block after the shortcut's sum (the downsampler), -1 if none


@dataclass
class Diagram:
    rows: list[Row]
    input_shape: list[int]
    params: int
    changes: dict[str, list[str]]  # plugin -> what it changed, in words
    plugins: list[str]

    def svg(self) -> str:
        return _draw(self, "svg").decode()

    def png(self) -> bytes:
        return _draw(self, "png")


def section_keys(spec: dict) -> dict[tuple, Any]:
    """The parts of a spec a plugin can change, each keyed so two specs compare part by part."""
    keys: dict[tuple, Any] = {("stem",): spec["stem"], ("head",): spec["head"]}
    for i, st in enumerate(spec["stages"]):
        for part in ("body", "attention", "shortcut", "down"):
            keys[("stage", i, part)] = st[part]
    return keys


def attribution(space: Any, dims: list[Dimension], params: dict[str, Any]) -> dict[tuple, list[str]]:
    """Which plugins changed each part of the winner (see the module docstring)."""
    every = {d.name for d in dims}
    base = section_keys(space.spec(switch_off(dims, params, every)))
    out: dict[tuple, list[str]] = {}
    for plugin in dict.fromkeys(d.plugin for d in dims):
        mine = {d.name for d in dims if d.plugin == plugin}
        if not any(is_on(d, params) for d in dims if d.name in mine):
            continue
        alone = section_keys(space.spec(switch_off(dims, params, every - mine)))
        for key, value in alone.items():
            if base.get(key) != value:
                out.setdefault(key, []).append(plugin)
    return out


def describe(spec: dict, space: Any = None, dims: list[Dimension] | None = None, params: dict[str, Any] | None = None,
             model: nn.Module | None = None) -> Diagram:
    """Everything the drawing needs; ``space``/``dims``/``params`` enable plugin attribution."""
    import torch

    from searchcore.arch.build import build
    from searchcore.plugins.host import get_host

    host = get_host()
    model = model if model is not None else build(spec, host.blocks())
    dims = dims or []
    params = params or {}
    owners = attribution(space, dims, params) if space is not None and dims else {}
    shapes: dict[int, list[int]] = {}
    hooks = []

    def watch(m: nn.Module) -> None:
        hooks.append(m.register_forward_hook(lambda mod, inp, out: shapes.__setitem__(id(mod), list(out.shape[1:]))))

    def block(b: dict, module: nn.Module | None, section: tuple) -> Block:
        opts = {k: v for k, v in b.items() if k != "type"}
        plugins = list(owners.get(section, []))
        if "." in b["type"]:
            provider = host.provider("blocks", b["type"])
            provider = provider if provider != "?" else b["type"].split(".", 1)[0]
            if provider in plugins:
                plugins.remove(provider)
            plugins.insert(0, provider)
        out = Block(b["type"], opts, plugins=plugins)
        if module is not None:
            watch(module)
            out.params = sum(p.numel() for p in module.parameters())
            out.shape = [id(module)]  # replaced by the real shape after the forward pass
        return out

    rows = [Row("input", [Block("input", {}, list(spec["input"]))])]
    if spec["stem"]:
        rows.append(Row("stem", [block(b, model.stem[j], ("stem",)) for j, b in enumerate(spec["stem"])]))
    for i, st in enumerate(spec["stages"]):
        stage = model.stages[i]
        blocks = [block(b, stage.body[j], ("stage", i, "body")) for j, b in enumerate(st["body"])]
        blocks += [block(b, stage.attention[j], ("stage", i, "attention")) for j, b in enumerate(st["attention"])]
        row = Row(f"stage {i + 1}", blocks, shortcut=st["shortcut"] is not None, shortcut_plugins=owners.get(("stage", i, "shortcut"), []))
        if st["down"] is not None:
            row.before_down = len(blocks)
            blocks.append(block(st["down"], stage.down, ("stage", i, "down")))
        rows.append(row)
    rows.append(Row("head", [block(b, model.head[j], ("head",)) for j, b in enumerate(spec["head"])]))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *spec["input"], device=next(model.parameters()).device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    for r in rows[1:]:
        for b in r.blocks:
            if b.shape is not None:
                b.shape = shapes.get(b.shape[0])
    changes = {p: [describe_choice(d, params[d.name]) for d in dims if d.plugin == p and is_on(d, params)] for p in dict.fromkeys(d.plugin for d in dims)}
    changes = {p: c for p, c in changes.items() if c}
    return Diagram(rows, list(spec["input"]), sum(p.numel() for p in model.parameters()), changes, list(dict.fromkeys(d.plugin for d in dims)))


# --- drawing ----------------------------------------------------------------------------------------------


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _lines(b: Block) -> list[str]:
    """Two or three short lines for a box: what it is, its key options, its output."""
    o = b.options
    if b.type == "input":
        return ["input", "x".join(map(str, b.shape or []))]
    if b.type == "conv":
        k = o.get("k", 3)
        title = f"conv {k}x{k}" + (f" /{o['s']}" if o.get("s", 1) != 1 else "") + (f" d{o['d']}" if o.get("d", 1) != 1 else "")
        detail = ", ".join(x for x in ["BN" if o.get("bn") else "", str(o.get("act", "relu"))] if x)
    elif b.type in ("maxpool", "avgpool"):
        title, detail = f"{b.type} {o.get('k', 2)}", ""
    elif b.type == "linear":
        title, detail = "linear", ""
    else:
        title = b.type
        detail = ", ".join(f"{k}={v}" for k, v in o.items() if not isinstance(v, list) and k not in ("k", "d", "bn", "act"))[:28]
    shape = "x".join(map(str, b.shape)) if b.shape else ""
    last = f"{shape}  {_count(b.params)}p" if b.params else shape
    return [x for x in (title, detail, last) if x]


def _lighten(hex_color: str, amount: float = 0.6) -> str:
    r, g, bl = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    mix = [int(c + (255 - c) * amount) for c in (r, g, bl)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def _draw(d: Diagram, fmt: str) -> bytes:
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    colors = plugin_colors(d.plugins)
    widest = max(len(r.blocks) + (1 if r.shortcut else 0) for r in d.rows)
    width = LABEL_W + widest * (BOX_W + GAP) + 0.3
    legend_lines = max(1, len(d.changes))
    height = len(d.rows) * ROW_H + 0.3 * legend_lines + 0.8
    with rc_context({"svg.fonttype": "none", "font.size": 7}):
        fig = Figure(figsize=(width, height), dpi=110)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, width)
        ax.set_ylim(0, height)
        ax.axis("off")
        ax.text(0.15, height - 0.25, f"best architecture: {_count(d.params)} parameters, input {'x'.join(map(str, d.input_shape))}",
                fontsize=9, fontweight="bold", va="center")
        prev: tuple[float, float] | None = None
        for r_i, row in enumerate(d.rows):
            y = height - 0.55 - (r_i + 1) * ROW_H + (ROW_H - BOX_H) / 2
            ax.text(0.15, y + BOX_H / 2, row.label, fontsize=8, fontweight="bold", va="center")
            x = LABEL_W
            centres = []
            for b_i, b in enumerate(row.blocks):
                if row.shortcut and b_i == row.before_down:
                    x = _sum_node(ax, row, x, y, colors, Circle, FancyArrowPatch, centres)
                face = _lighten(colors.get(b.plugins[0], "#7f7f7f")) if b.plugins else CORE_COLOR
                edge = colors.get(b.plugins[0], "#555555") if b.plugins else "#555555"
                ax.add_patch(FancyBboxPatch((x, y), BOX_W, BOX_H, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=face,
                                            edgecolor=edge, linewidth=1.6 if b.plugins else 0.8))
                for k, line in enumerate(_lines(b)):
                    ax.text(x + BOX_W / 2, y + BOX_H - 0.13 - k * 0.17, line, ha="center", va="center", fontsize=6.5,
                            fontweight="bold" if k == 0 else "normal")
                for k, p in enumerate(b.plugins):
                    ax.add_patch(FancyBboxPatch((x + BOX_W - 0.16 - k * 0.14, y + BOX_H - 0.14), 0.1, 0.1, boxstyle="square,pad=0",
                                                facecolor=colors.get(p, "#7f7f7f"), edgecolor="none"))
                if centres:
                    ax.add_patch(FancyArrowPatch((centres[-1][0], y + BOX_H / 2), (x, y + BOX_H / 2), arrowstyle="->", mutation_scale=8))
                elif prev is not None:
                    ax.add_patch(FancyArrowPatch(prev, (x + BOX_W / 2, y + BOX_H), arrowstyle="->", mutation_scale=8, color="#777777"))
                centres.append((x + BOX_W, x))
                x += BOX_W + GAP
            if row.shortcut and row.before_down < 0:
                x = _sum_node(ax, row, x, y, colors, Circle, FancyArrowPatch, centres)
            prev = (LABEL_W + BOX_W / 2, y)  # rows read like lines of text: the next one starts below this one's start
        ly = 0.22 + 0.3 * (legend_lines - 1)
        for p in d.plugins:
            if p in d.changes:
                ax.add_patch(FancyBboxPatch((0.2, ly - 0.07), 0.16, 0.16, boxstyle="square,pad=0", facecolor=colors[p], edgecolor="none"))
                ax.text(0.45, ly, f"{p}: {'; '.join(d.changes[p])}", fontsize=7.5, va="center")
                ly -= 0.3
        if not d.changes:
            ax.text(0.2, ly, "every plugin off: this is the unimproved backbone", fontsize=7.5, va="center")
        else:
            ax.add_patch(FancyBboxPatch((width - 2.3, 0.15), 0.16, 0.16, boxstyle="square,pad=0", facecolor=CORE_COLOR, edgecolor="#555555"))
            ax.text(width - 2.05, 0.23, "backbone, unchanged", fontsize=7.5, va="center")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt)
    return buf.getvalue()


def _sum_node(ax: Any, row: Row, x: float, y: float, colors: dict[str, str], circle: Any, arrow: Any, centres: list) -> float:
    """The ``+`` where the residual shortcut rejoins, the shortcut drawn as a bracket over the row's blocks."""
    cx, cy = x + 0.2, y + BOX_H / 2
    color = colors.get(row.shortcut_plugins[0], "#555555") if row.shortcut_plugins else "#555555"
    ax.add_patch(circle((cx, cy), 0.16, facecolor="white", edgecolor=color, linewidth=1.4))
    ax.text(cx, cy, "+", ha="center", va="center", fontsize=9, fontweight="bold", color=color)
    if centres:
        ax.add_patch(arrow((centres[-1][0], cy), (cx - 0.16, cy), arrowstyle="->", mutation_scale=8))
    start, top = LABEL_W + 0.12, y + BOX_H + 0.12
    ax.plot([start, start, cx], [y + BOX_H, top, top], color=color, linewidth=1.3, solid_joinstyle="round")
    ax.add_patch(arrow((cx, top), (cx, cy + 0.16), arrowstyle="->", mutation_scale=8, color=color, linewidth=1.3))
    ax.text(cx + 0.08, top + 0.01, "shortcut" + (f" ({', '.join(row.shortcut_plugins)})" if row.shortcut_plugins else ""),
            ha="left", va="bottom", fontsize=6.5, color=color)
    centres.append((cx + 0.16, cx - 0.16))
    return x + 0.4 + GAP
