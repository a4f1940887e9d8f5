"""The search drawn: each plot both as a PNG (matplotlib) and as an interactive plotly figure.

PNGs are what MLflow shows inline and what survives e-mail; the plotly figures are for
hovering over a trial to see its architecture. matplotlib is used through ``Figure`` objects,
never ``pyplot``, so no GUI backend is ever touched and nothing global changes in the caller's
process (the search may be running inside a notebook).

Every plot is made on its own: one that cannot be drawn (too few trials for fANOVA, a
multi-objective study without curves) becomes a note, and the others are still made.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

from searchcore.report.collect import COST_LABELS, SearchData, plugin_colors
from searchcore.report.credit import LEVEL, Credit

COMPLETE_COLOR, PRUNED_COLOR, FAIL_COLOR, CHOSEN_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c"
TOP_PARAMS = 8  # parallel coordinates stay readable with this many axes


@dataclass
class Plot:
    key: str
    title: str
    caption: str
    png: bytes | None = None
    figure: Any = None  # plotly Figure
    error: str = ""


@dataclass
class Importances:
    method: str
    by_param: dict[str, float]
    by_plugin: dict[str, float]
    note: str = ""


def param_importances(study: Any, data: SearchData) -> Importances:
    """fANOVA importances (Optuna's, seeded) of the params every complete trial has, summed per plugin.

    fANOVA rather than PED-ANOVA: it rates a parameter by the variance it explains over the whole
    range of results, which is what "which choice mattered" means here; PED-ANOVA rates what
    separates the top 10 % and needs more trials than a small search has to be stable.
    """
    import optuna

    method = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"
    plugin_of = {d.name: d.plugin for d in data.dims}
    done = data.complete
    if len(done) < 2:
        return Importances(method, {}, {}, f"needs at least 2 complete trials, the search has {len(done)}")
    values = {t.number: data.value(t) for t in done}

    def target(ft: Any) -> float:
        v = values.get(ft.number)
        return float(v) if v is not None else float("nan")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=target)
    except Exception as e:  # e.g. no param shared by all trials, or every param constant
        return Importances(method, {}, {}, f"not computable: {type(e).__name__}: {e}")
    by_plugin: dict[str, float] = {}
    for name, v in imp.items():
        p = plugin_of.get(name, name.split(".", 1)[0])
        by_plugin[p] = by_plugin.get(p, 0.0) + float(v)
    note = "" if imp else "no parameter varied across the complete trials"
    return Importances(method, {k: float(v) for k, v in imp.items()}, dict(sorted(by_plugin.items(), key=lambda kv: -kv[1])), note)


def render(study: Any, data: SearchData, credit: Credit, importances: Importances | None = None, png: bool = True, html: bool = True) -> list[Plot]:
    """Every plot of the search, each guarded on its own."""
    importances = importances if importances is not None else param_importances(study, data)
    makers = [
        ("history", "Optimisation history", lambda p: _history(p, data)),
        ("learning_curves", "Learning curves", lambda p: _curves(p, data)),
        ("importances", "Parameter importances", lambda p: _importances(p, data, importances)),
        ("pareto", f"Pareto front: {data.primary} vs {COST_LABELS.get(data.cost, data.cost)}", lambda p: _pareto(p, data)),
        ("parallel", "Parallel coordinates", lambda p: _parallel(p, study, data, importances)),
        ("credit", "Per-plugin credit", lambda p: _credit(p, data, credit)),
    ]
    plots = []
    for key, title, make in makers:
        plot = Plot(key, title, "")
        try:
            make(plot)
            if not png:
                plot.png = None
            if not html:
                plot.figure = None
        except Exception as e:
            plot.error = f"{type(e).__name__}: {e}"
            plot.png, plot.figure = None, None
        plots.append(plot)
    return plots


# --- helpers -------------------------------------------------------------------------------------------


def _figure(width: float = 7.5, height: float = 4.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _layout(fig: Any, title: str, x: str, y: str) -> Any:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=440,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.2))
    return fig


def _hover(data: SearchData, t: Any) -> str:
    spec = (t.spec or "")[:160]
    params = "<br>".join(f"{k} = {v}" for k, v in t.params.items())
    return f"trial {t.number} ({t.state})<br>{params}<br><i>{spec}</i>"


# --- the plots ----------------------------------------------------------------------------------------


def _history(plot: Plot, data: SearchData) -> None:
    import plotly.graph_objects as go

    done = sorted(data.complete, key=lambda t: t.number)
    if not done:
        raise ValueError("no complete trial yet")
    xs = [t.number for t in done]
    ys = [data.value(t) for t in done]
    better = max if data.primary_maximize else min
    best, run = [], None
    for y in ys:
        run = y if run is None else better(run, y)
        best.append(run)
    plot.caption = (f"{data.primary} of each complete trial and the best so far; {len(data.trials) - len(done)} pruned or failed "
                    "trials have no final value (see the learning curves).")
    fig = _figure()
    ax = fig.subplots()
    ax.scatter(xs, ys, s=22, color=COMPLETE_COLOR, label="complete trial", zorder=3)
    ax.step(xs, best, where="post", color=CHOSEN_COLOR, label="best so far")
    chosen = [t for t in done if t.number in data.finalised]
    ax.scatter([t.number for t in chosen], [data.value(t) for t in chosen], marker="*", s=160, color=CHOSEN_COLOR, zorder=4, label="chosen")
    ax.set(xlabel="trial", ylabel=data.primary, title=plot.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    plot.png = _png(fig)
    f = go.Figure()
    f.add_scatter(x=xs, y=ys, mode="markers", name="complete trial", marker=dict(color=COMPLETE_COLOR),
                  hovertext=[_hover(data, t) for t in done], hoverinfo="text")
    f.add_scatter(x=xs, y=best, mode="lines", line=dict(shape="hv", color=CHOSEN_COLOR), name="best so far")
    f.add_scatter(x=[t.number for t in chosen], y=[data.value(t) for t in chosen], mode="markers", name="chosen",
                  marker=dict(symbol="star", size=14, color=CHOSEN_COLOR))
    plot.figure = _layout(f, plot.title, "trial", data.primary)
    plot.figure.update_xaxes(tickformat="d")


def _curves(plot: Plot, data: SearchData) -> None:
    import plotly.graph_objects as go
    from matplotlib.ticker import MaxNLocator

    trials = [t for t in data.trials if t.curve]
    if not trials:
        raise ValueError("no trial reported per-epoch val accuracy")
    color = {"COMPLETE": COMPLETE_COLOR, "PRUNED": PRUNED_COLOR, "FAIL": FAIL_COLOR}
    pruned = [t for t in trials if t.state == "PRUNED"]
    plot.caption = (f"val accuracy after every epoch, one line per trial; x marks where the pruner stopped a trial "
                    f"({len(pruned)} pruned); the chosen architectures are drawn thick.")
    fig = _figure()
    ax = fig.subplots()
    f = go.Figure()
    shown: set[str] = set()
    for t in trials:
        xs, ys = [c[0] for c in t.curve], [c[1] for c in t.curve]
        thick = t.number in data.finalised
        label = t.state.lower() if t.state not in shown else None
        shown.add(t.state)
        ax.plot(xs, ys, color=color.get(t.state, FAIL_COLOR), alpha=0.9 if thick else 0.45, lw=2.5 if thick else 1.0, label=label)
        f.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=color.get(t.state, FAIL_COLOR), width=4 if thick else 1.5),
                      opacity=0.9 if thick else 0.5, name=f"trial {t.number} ({t.state.lower()})", hovertext=_hover(data, t), hoverinfo="text+y")
    if pruned:
        px, py = [t.curve[-1][0] for t in pruned], [t.curve[-1][1] for t in pruned]
        ax.scatter(px, py, marker="x", s=50, color=PRUNED_COLOR, zorder=4, label="pruned here")
        f.add_scatter(x=px, y=py, mode="markers", marker=dict(symbol="x", size=11, color=PRUNED_COLOR), name="pruned here",
                      hovertext=[f"trial {t.number} pruned after epoch {t.curve[-1][0]}" for t in pruned], hoverinfo="text")
    ax.set(xlabel="epoch", ylabel="val accuracy", title=plot.title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    plot.png = _png(fig)
    plot.figure = _layout(f, plot.title, "epoch", "val accuracy")
    plot.figure.update_xaxes(tickformat="d", dtick=1)
    plot.figure.update_layout(showlegend=len(trials) <= 30)


def _importances(plot: Plot, data: SearchData, imp: Importances) -> None:
    import plotly.graph_objects as go

    if not imp.by_param:
        raise ValueError(imp.note or "no importances")
    colors = plugin_colors(data.plugins)
    plugin_of = {d.name: d.plugin for d in data.dims}
    items = sorted(imp.by_param.items(), key=lambda kv: kv[1])[-15:]
    names, vals = [k for k, _ in items], [v for _, v in items]
    cols = [colors.get(plugin_of.get(n, ""), "#7f7f7f") for n in names]
    per_plugin = ", ".join(f"{p} {v:.0%}" for p, v in imp.by_plugin.items())
    plot.caption = (f"share of the variance of {data.primary} explained by each parameter ({imp.method}); "
                    f"summed per plugin: {per_plugin}. Conditional parameters (present in only some trials) are not rated.")
    fig = _figure(7.5, max(2.6, 0.32 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names, vals, color=cols)
    ax.set(xlabel="importance", title=plot.title)
    ax.grid(axis="x", alpha=0.3)
    plot.png = _png(fig)
    f = go.Figure(go.Bar(x=vals, y=names, orientation="h", marker=dict(color=cols),
                         hovertext=[f"{n} ({plugin_of.get(n, '?')}): {v:.3f}" for n, v in zip(names, vals)], hoverinfo="text"))
    plot.figure = _layout(f, plot.title, "importance", "")
    plot.figure.update_layout(height=max(300, 28 * len(names) + 120))


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher, or lower if minimised)."""
    sign = 1.0 if maximize else -1.0
    front = []
    for i, (c, a) in enumerate(points):
        if not any((c2 <= c and sign * a2 >= sign * a) and (c2 < c or sign * a2 > sign * a) for j, (c2, a2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _pareto(plot: Plot, data: SearchData) -> None:
    import plotly.graph_objects as go

    done = [t for t in data.complete if data.value(t) is not None and data.value(t, data.cost) is not None]
    if not done:
        raise ValueError("no complete trial yet")
    pts = [(data.value(t, data.cost), data.value(t)) for t in done]
    front = pareto_front(pts, data.primary_maximize)
    chosen = [i for i, t in enumerate(done) if t.number in data.finalised]
    cost_label = COST_LABELS.get(data.cost, data.cost)
    plot.caption = (f"every complete trial by {cost_label} and {data.primary}; the line joins the Pareto-optimal trials "
                    "(none is both cheaper and better); stars mark the architectures the search retrained and registered"
                    + (", the largest the winner." if len(chosen) > 1 else "."))
    log_x = data.cost != "latency_ms" and min(p[0] for p in pts) > 0
    fig = _figure()
    ax = fig.subplots()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color="#9e9e9e", label="trial", zorder=2)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", color=COMPLETE_COLOR, ms=5, label="Pareto front", zorder=3)
    for rank, i in enumerate(sorted(chosen, key=lambda i: data.finalised.index(done[i].number))):
        ax.scatter([pts[i][0]], [pts[i][1]], marker="*", s=320 if rank == 0 else 140, color=CHOSEN_COLOR, zorder=4,
                   edgecolor="black", linewidth=0.5, label="chosen" if rank == 0 else None)
        ax.annotate(f"#{done[i].number}", pts[i], textcoords="offset points", xytext=(6, 6), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=cost_label, ylabel=data.primary, title=plot.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    plot.png = _png(fig)
    f = go.Figure()
    f.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="trial", marker=dict(color="#9e9e9e"),
                  hovertext=[_hover(data, t) for t in done], hoverinfo="text")
    f.add_scatter(x=[pts[i][0] for i in front], y=[pts[i][1] for i in front], mode="lines+markers", name="Pareto front",
                  line=dict(color=COMPLETE_COLOR), hovertext=[_hover(data, done[i]) for i in front], hoverinfo="text")
    f.add_scatter(x=[pts[i][0] for i in chosen], y=[pts[i][1] for i in chosen], mode="markers+text", name="chosen",
                  text=[f"#{done[i].number}" for i in chosen], textposition="top right",
                  marker=dict(symbol="star", size=16, color=CHOSEN_COLOR, line=dict(width=1, color="black")),
                  hovertext=[_hover(data, done[i]) for i in chosen], hoverinfo="text")
    plot.figure = _layout(f, plot.title, cost_label, data.primary)
    if log_x:
        plot.figure.update_xaxes(type="log")


def _parallel_axes(data: SearchData, importances: Importances) -> list[str]:
    names = list(importances.by_param)[:TOP_PARAMS]
    if names:
        return names
    done = data.complete
    common = [d.name for d in data.dims if done and all(d.name in t.params for t in done)]
    return common[:TOP_PARAMS]


def _parallel(plot: Plot, study: Any, data: SearchData, importances: Importances) -> None:
    import optuna

    done = [t for t in data.complete if data.value(t) is not None]
    params = _parallel_axes(data, importances)
    if len(done) < 2 or not params:
        raise ValueError("needs at least 2 complete trials sharing a parameter")
    values = {t.number: data.value(t) for t in done}
    plot.caption = (f"each line a complete trial, coloured by {data.primary}; axes: the {len(params)} parameters "
                    f"{'rated most important' if importances.by_param else 'every trial has'}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot.figure = optuna.visualization.plot_parallel_coordinate(
            study, params=params, target=lambda ft: values.get(ft.number, float("nan")), target_name=data.primary)
    plot.figure.update_layout(title=plot.title, template="plotly_white", height=460)
    plot.png = _parallel_png(plot.title, data, done, params)


def _parallel_png(title: str, data: SearchData, done: list, params: list[str]) -> bytes:
    """The same chart in matplotlib: each axis scaled to [0, 1], categorical values evenly spaced."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    axes_names = [data.primary, *params]
    ticks: dict[str, list[tuple[float, str]]] = {}
    pos: dict[str, dict[Any, float]] = {}
    for name in axes_names:
        vals = [data.value(t) if name == data.primary else t.params.get(name) for t in done]
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            lo, hi = min(present), max(present)
            span = (hi - lo) or 1.0
            pos[name] = {v: (v - lo) / span for v in present}
            ticks[name] = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]
        else:
            cats = sorted({str(v) for v in present})
            step = 1.0 / max(1, len(cats) - 1)
            pos[name] = {v: cats.index(str(v)) * step if len(cats) > 1 else 0.5 for v in present}
            ticks[name] = [(cats.index(c) * step if len(cats) > 1 else 0.5, c) for c in cats]
    fig = _figure(max(6.0, 1.2 * len(axes_names)), 4.2)
    ax = fig.subplots()
    scores = [data.value(t) for t in done]
    norm = Normalize(min(scores), max(scores) if max(scores) > min(scores) else min(scores) + 1e-9)
    cmap = colormaps["viridis"]
    for t, s in sorted(zip(done, scores), key=lambda p: p[1] if data.primary_maximize else -p[1]):
        ys = [pos[n].get(data.value(t) if n == data.primary else t.params.get(n), math.nan) for n in axes_names]
        ax.plot(range(len(axes_names)), ys, color=cmap(norm(s)), alpha=0.8, lw=1.2)
    for i, n in enumerate(axes_names):
        ax.axvline(i, color="black", lw=0.8)
        for y, label in ticks[n]:
            ax.text(i + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=25, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_names) - 0.5)
    ax.set_title(title)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=data.primary)
    return _png(fig)


def _credit(plot: Plot, data: SearchData, credit: Credit) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [p for p in credit.plugins if p.accuracy.estimate is not None]
    if not rows:
        raise ValueError(credit.note or "no plugin effect could be estimated")
    colors = plugin_colors(data.plugins)
    names = [p.plugin for p in rows]
    acc = [p.accuracy for p in rows]
    cost = [p.cost for p in rows]
    plot.caption = (f"estimated effect of each plugin on {credit.metric} (points) and on {credit.cost_label} (%), "
                    f"with {LEVEL}% bootstrap intervals. Estimator: {credit.estimator}.")
    fig = _figure(8.5, max(2.6, 0.45 * len(rows) + 1.4))
    a1, a2 = fig.subplots(1, 2, sharey=True)
    for ax, effects, label in ((a1, acc, f"{credit.metric} (points)"), (a2, cost, f"{credit.cost_label} (%)")):
        est = [e.estimate or 0.0 for e in effects]
        err = [[max(0.0, (e.estimate or 0) - (e.low if e.low is not None else e.estimate or 0)) for e in effects],
               [max(0.0, (e.high if e.high is not None else e.estimate or 0) - (e.estimate or 0)) for e in effects]]
        ax.barh(names, est, xerr=err, color=[colors[n] for n in names], capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(plot.title)
    plot.png = _png(fig)
    f = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=(f"{credit.metric} (points)", f"{credit.cost_label} (%)"))
    for col, effects in ((1, acc), (2, cost)):
        est = [e.estimate or 0.0 for e in effects]
        f.add_trace(go.Bar(
            x=est, y=names, orientation="h", marker=dict(color=[colors[n] for n in names]), showlegend=False,
            error_x=dict(type="data", symmetric=False,
                         array=[max(0.0, (e.high if e.high is not None else e.estimate or 0) - (e.estimate or 0)) for e in effects],
                         arrayminus=[max(0.0, (e.estimate or 0) - (e.low if e.low is not None else e.estimate or 0)) for e in effects]),
            hovertext=[f"{n}: {e.text()}" for n, e in zip(names, effects)], hoverinfo="text"), row=1, col=col)
    f.update_layout(title=plot.title, template="plotly_white", height=max(300, 50 * len(rows) + 150))
    plot.figure = f


def figures_html(plots: list[Plot], title: str) -> str:
    """All interactive figures in one page with plotly.js inlined once (about 4.7 MB): it opens offline,
    in MLflow's artifact viewer as well as from disk."""
    from html import escape

    parts = []
    first = True
    for p in plots:
        if p.figure is None:
            continue
        div = p.figure.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False})
        first = False
        parts.append(f"<section><h2>{escape(p.title)}</h2><p>{escape(p.caption)}</p>{div}</section>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}p{color:#444}</style></head>"
            f"<body><h1>{escape(title)}</h1>{''.join(parts)}</body></html>")
