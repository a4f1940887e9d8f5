"""The report as one self-contained HTML file: it opens offline, from a mail attachment or a USB stick.

Nothing is fetched: PNGs are inlined as base64, the diagram as inline SVG, plotly.js is inlined
once (the first interactive figure carries it, the others reuse it). Each interactive figure
has its PNG in ``<noscript>``, so the page still shows every plot where scripts are blocked.
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from searchcore.report import links
from searchcore.report.assemble import Parts
from searchcore.report.collect import COST_LABELS
from searchcore.report.credit import LEVEL

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px;background:white}
h1{margin:8px 0 2px}h1 code{font-size:inherit;background:none}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:36px}
.meta{color:#57606a;margin:2px 0 14px}
.cards{display:flex;flex-wrap:wrap;gap:12px;padding:0;list-style:none}
.cards li{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:170px}
.cards b{display:block;font-size:12px;color:#57606a;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
.cards span{font-size:22px;font-weight:600}
.headline{font-size:17px;background:#dafbe1;border-left:5px solid #2da44e;padding:10px 14px;border-radius:4px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border-bottom:1px solid #d8dee4;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.winner td{background:#fff8c5}
code{font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:4px;word-break:break-all}
.small{font-size:12px;color:#57606a}
figure{margin:14px 0}#credit img{max-width:760px}svg{max-width:100%;height:auto}#diagram svg{max-width:900px}img{max-width:100%}
.note{color:#9a6700}
pre{background:#f6f8fa;padding:8px 12px;border-radius:6px;overflow-x:auto}
"""


def _png(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _num(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _inline_svg(svg: str) -> str:
    """matplotlib writes an XML prolog and a DOCTYPE; inside HTML only the ``<svg>`` element belongs."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else ""


def page(parts: Parts, ui_port: int = 5000, dashboard_port: int = 8080) -> str:
    """The whole report."""
    d, c = parts.data, parts.credit
    body = [_header(parts), _glance(parts), _open_live(parts, ui_port, dashboard_port), _credit(parts),
            _architecture(parts), _gradcam(parts), _plots(parts), _top(parts), _notes(parts)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>searchcore report: {escape(d.name)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}"
            f"<p class='small'>Credit estimator: {escape(c.estimator)}.</p>"
            "<p class='small'>Made by <code>searchcore report</code>; this file is self-contained and works offline.</p>"
            "</main></body></html>")


def _header(parts: Parts) -> str:
    d = parts.data
    counts: dict[str, int] = {}
    for t in d.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    objs = ", ".join(f"{o} ({dr[:3]})" for o, dr in zip(d.objectives, d.directions))
    return (f"<h1>Search <code>{escape(d.name)}</code></h1>"
            f"<p class='meta'>{len(d.trials)} trials: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
            f"{counts.get('FAIL', 0)} failed &middot; objectives {escape(objs)} &middot; plugins {escape(', '.join(d.plugins) or '-')}"
            f" &middot; report made {escape(parts.generated)}</p>")


def _glance(parts: Parts) -> str:
    d = parts.data
    w = d.winner
    cards = []
    if w is not None:
        cards.append(("best " + d.primary, f"{_num(d.value(w))}", f"trial {w.number}"))
        test = d.test_accuracy.get(w.number)
        if test is not None:
            base = d.baseline_test_accuracy
            extra = f"baseline {base:.4f} ({100 * (test - base):+.1f} points)" if base is not None else "no baseline trained"
            cards.append(("test accuracy", f"{test:.4f}", extra))
        if "params" in w.metrics:
            cards.append(("parameters", f"{int(w.metrics['params']):,}", ""))
        if d.cost != "params" and d.cost in w.metrics:
            cards.append((COST_LABELS.get(d.cost, d.cost), _num(w.metrics[d.cost]), ""))
    items = "".join(f"<li><b>{escape(k)}</b><span>{escape(v)}</span><div class='small'>{escape(x)}</div></li>" for k, v, x in cards)
    measured = measured_headline(parts.ablation)
    measured_html = f"<p class='headline' id='measured-headline'>{escape(measured)}</p>" if measured else ""
    estimated = ("Estimated from the trials: " if measured else "") + parts.credit.headline
    return (f"<section id='glance'><h2>At a glance</h2><ul class='cards'>{items}</ul>{measured_html}"
            f"<p class='headline' id='headline'>{escape(estimated)}</p></section>")


def measured_headline(ablation: dict | None) -> str:
    """The ablation's strongest result in one sentence: measured beats estimated, so it comes first."""
    rows = (ablation or {}).get("rows") or []
    if not rows:
        return ""
    r = max(rows, key=lambda r: r["test_diff_mean"])
    n = len(r.get("test_diffs", [])) or len((ablation or {}).get("seeds", []))
    return (f"Measured: {r['label']} is worth {r['test_diff_mean']:+.1f} ± {r['test_diff_sd']:.1f} points of test accuracy "
            f"(switched off and retrained, {n} seeds) for {r['params_pct']:+.1f}% parameters")


def _open_live(parts: Parts, ui_port: int, dashboard_port: int) -> str:
    d = parts.data
    rows = []
    if d.tracking_uri:
        base = links.base_url("127.0.0.1", ui_port)
        url = links.experiment_url(base, d.experiment_id) if d.experiment_id else f"{base}/#/experiments"
        rows.append(f"<li><b>MLflow</b> (runs, metrics, models, these plots as artifacts of the parent run): run "
                    f"<code>{escape(links.ui_command(d.tracking_uri, ui_port))}</code> then open "
                    f"<a id='mlflow-link' href='{escape(url)}'>{escape(url)}</a> &mdash; the model-training view of this search.</li>")
    if d.storage_url:
        base = links.base_url("127.0.0.1", dashboard_port)
        url = links.dashboard_url(base, d.study_id)
        rows.append(f"<li><b>optuna-dashboard</b> (the study itself, live while the search runs): run "
                    f"<code>{escape(links.dashboard_command(d.storage_url, dashboard_port))}</code> then open "
                    f"<a id='dashboard-link' href='{escape(url)}'>{escape(url)}</a>.</li>")
    if not rows:
        return ""
    return f"<section id='live'><h2>Open it live</h2><ul>{''.join(rows)}</ul></section>"


def _credit(parts: Parts) -> str:
    c = parts.credit
    exact = {e.plugin: e for e in c.exact}
    head = ("<tr><th>plugin</th><th>trials with / without</th><th>mean " + escape(c.metric) + " with / without</th>"
            f"<th>estimated effect on {escape(c.metric)} (points, {LEVEL}% interval)</th>"
            f"<th>estimated effect on {escape(c.cost_label)}</th><th>in the winner: its exact cost</th></tr>")
    rows = []
    for p in c.plugins:
        e = exact.get(p.plugin)
        cost = f"{e.params_pct:+.1f}% params, {e.macs_pct:+.1f}% MACs" if e else ("used" if p.in_winner else "-")
        raw = f"{_num(p.raw_on, 3)} / {_num(p.raw_off, 3)}"
        cls = " class='winner'" if p.in_winner else ""
        rows.append(f"<tr{cls}><td>{escape(p.plugin)}</td><td class='num'>{p.on} / {p.off}</td><td class='num'>{raw}</td>"
                    f"<td class='num'>{escape(p.accuracy.text(' pts'))}</td><td class='num'>{escape(p.cost.text('%', 0))}</td>"
                    f"<td>{escape(cost)}</td></tr>")
    choice_rows = []
    for ch in sorted(c.choices, key=lambda ch: -(ch.accuracy.estimate if ch.accuracy.estimate is not None else -1e9)):
        cls = " class='winner'" if ch.in_winner else ""
        choice_rows.append(f"<tr{cls}><td>{escape(ch.label)}</td><td>{escape(ch.plugin)}</td><td><code>{escape(ch.dim)}={escape(json.dumps(ch.value))}</code></td>"
                           f"<td class='num'>{ch.trials}</td><td class='num'>{escape(ch.accuracy.text(' pts'))}</td>"
                           f"<td class='num'>{escape(ch.cost.text('%', 0))}</td></tr>")
    note = f"<p class='note'>{escape(c.note)}</p>" if c.note else ""
    credit_plot = next((p for p in parts.plots if p.key == "credit" and p.png), None)
    return ("<section id='credit'><h2>What helped, and what it cost</h2>"
            f"<p>From the {c.trials} complete trials already run. <b>Estimator</b>: {escape(c.estimator)}. "
            "Rows shaded yellow are used by the winner; its exact cost without each plugin is built and counted. "
            "<code>searchcore ablate</code> measures the accuracy effects for real (retraining without each improvement).</p>"
            f"{note}<table id='credit-table'>{head}{''.join(rows)}</table>"
            f"{_png(credit_plot.png, 'per-plugin credit') if credit_plot else ''}"
            f"<details><summary>Per choice ({len(c.choices)})</summary><table id='choice-table'><tr><th>choice</th><th>plugin</th>"
            f"<th>dimension</th><th>trials</th><th>effect on {escape(c.metric)}</th><th>effect on {escape(c.cost_label)}</th></tr>"
            f"{''.join(choice_rows)}</table></details>{_ablation(parts)}</section>")


def _ablation(parts: Parts) -> str:
    a = parts.ablation
    if not a:
        return ("<p class='small'>No ablation yet: <code>searchcore ablate " + escape(parts.data.name) +
                "</code> retrains the winner without each improvement and this report shows the result.</p>")
    rows = []
    for r in a.get("rows", []):
        rows.append(f"<tr><td>{escape(r['label'])}</td>"
                    f"<td class='num'>{r['val_diff_mean']:+.2f} &plusmn; {r['val_diff_sd']:.2f}</td>"
                    f"<td class='num'>{r['test_diff_mean']:+.2f} &plusmn; {r['test_diff_sd']:.2f}</td>"
                    f"<td class='num'>[{r['test_diff_min']:+.2f}, {r['test_diff_max']:+.2f}]</td>"
                    f"<td class='num'>{_pct(r.get('params_pct'))}</td><td class='num'>{_pct(r.get('macs_pct'))}</td></tr>")
    full = a.get("full", {})
    return (f"<h3>Ablation of trial {a.get('trial')} (measured)</h3>"
            f"<p>Each improvement switched off in turn, retrained {a.get('epochs')} epochs with seeds {escape(str(a.get('seeds')))}, "
            f"the same for the full winner (test accuracy {full.get('test_mean', 0):.4f}). Differences are full minus ablated, "
            "in points, mean &plusmn; standard deviation over the seeds (paired), with the range; costs are what the improvement adds.</p>"
            "<table id='ablation-table'><tr><th>switched off</th><th>val accuracy gain</th><th>test accuracy gain</th><th>range (test)</th>"
            f"<th>params added</th><th>MACs added</th></tr>{''.join(rows)}</table>")


def _architecture(parts: Parts) -> str:
    d = parts.data
    w = d.winner
    if w is None:
        return ""
    svg = _inline_svg(parts.diagram_svg) if parts.diagram_svg else "<p class='note'>diagram not drawn (see notes)</p>"
    return (f"<section id='architecture'><h2>Best architecture (trial {w.number})</h2><figure id='diagram'>{svg}</figure>"
            f"<p class='small'>One-line spec: <code>{escape(w.spec or '')}</code></p></section>")


def _gradcam(parts: Parts) -> str:
    if not parts.gradcam_png:
        return ""
    return ("<section id='gradcam'><h2>What the best model looks at</h2>"
            f"<p>Grad-CAM saliency of the predicted class on validation images, explained at the {escape(parts.gradcam_layer)}: "
            "red is where the evidence for the prediction lies.</p>"
            f"<figure>{_png(parts.gradcam_png, 'Grad-CAM')}</figure></section>")


def _plots(parts: Parts) -> str:
    out = []
    first = True
    for p in parts.plots:
        if p.key == "credit":
            continue
        if p.figure is not None:
            div = p.figure.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False, "responsive": True})
            first = False
            inner = f"{div}<noscript>{_png(p.png, p.title)}</noscript>"
        elif p.png:
            inner = _png(p.png, p.title)
        else:
            inner = f"<p class='note'>not drawn: {escape(p.error)}</p>"
        out.append(f"<figure class='plot' id='plot-{escape(p.key)}'><h3>{escape(p.title)}</h3><p class='small'>{escape(p.caption)}</p>{inner}</figure>")
    return f"<section id='plots'><h2>The search</h2>{''.join(out)}</section>"


def _top(parts: Parts) -> str:
    d = parts.data
    rows = []
    for r in parts.top:
        vals = ", ".join(f"{k}={_num(v)}" for k, v in r.values.items())
        cls = " class='winner'" if d.winner is not None and r.trial == d.winner.number else ""
        params = f"{int(r.metrics['params']):,}" if "params" in r.metrics else "-"
        test = f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-"
        spec = r.spec if len(r.spec) <= 220 else r.spec[:217] + "..."
        rows.append(f"<tr{cls}><td class='num'>{r.rank}</td><td class='num'>{r.trial}</td><td>{escape(vals)}</td>"
                    f"<td class='num'>{params}</td><td class='num'>{test}</td><td>{escape('; '.join(r.choices) or 'backbone only')}</td>"
                    f"<td><code title='{escape(r.spec)}'>{escape(spec)}</code></td></tr>")
    return (f"<section id='top'><h2>Top {len(parts.top)}</h2><table id='top-table'><tr><th>#</th><th>trial</th><th>objectives</th>"
            "<th>params</th><th>test acc.</th><th>improvements on</th><th>architecture</th></tr>"
            f"{''.join(rows)}</table></section>")


def _notes(parts: Parts) -> str:
    if not parts.notes:
        return ""
    return "<section id='notes'><h2>Notes</h2><ul>" + "".join(f"<li class='note'>{escape(n)}</li>" for n in parts.notes) + "</ul></section>"


def write(parts: Parts, path: Any, **kw: Any) -> None:
    from pathlib import Path

    Path(path).write_text(page(parts, **kw), encoding="utf-8")
