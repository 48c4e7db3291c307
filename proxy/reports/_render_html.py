"""The report as ONE self-contained HTML page: inline CSS, inline SVG charts, no network."""

from __future__ import annotations

import html
import time
from typing import Any

from ._render_text import canary_lines, check_lines, fmt, scores_lines, shadow_lines, srm_lines

__all__ = ["render_html"]

_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
.warn{color:#a00;font-weight:bold}.verdict{font-weight:bold}svg{margin:.5em 1em .5em 0;border:1px solid #eee}
h2{margin-top:2em}.muted{color:#777}"""
_COLORS = ["#4472c4", "#ed7d31", "#70ad47", "#a5a5a5", "#ffc000", "#5b9bd5"]
e = html.escape


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg width="{width}" height="{height}" role="img">'
            f'<title>{e(title)}</title><text x="6" y="14" font-size="12">{e(title)}</text>{body}</svg>')


def _rate_chart(arms: list[dict], metric: str) -> str:
    rows = [(a["variant"], a["metrics"][metric]) for a in arms if a["metrics"].get(metric, {}).get("n")]
    if not rows:
        return ""
    w, h, left = 420, 30 + 28 * len(rows), 110
    body = ""
    for i, (name, m) in enumerate(rows):
        y = 28 + 28 * i
        rate, (lo, hi) = m["rate"], m["interval"]
        x = lambda v: left + (w - left - 20) * v  # noqa: E731
        body += (f'<text x="6" y="{y + 12}" font-size="12">{e(name)}</text>'
                 f'<rect x="{left}" y="{y}" width="{x(rate) - left:.1f}" height="16" fill="{_COLORS[i % 6]}"/>'
                 f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y + 8}" y2="{y + 8}" stroke="#000" stroke-width="2"/>'
                 f'<line x1="{x(lo):.1f}" x2="{x(lo):.1f}" y1="{y + 3}" y2="{y + 13}" stroke="#000"/>'
                 f'<line x1="{x(hi):.1f}" x2="{x(hi):.1f}" y1="{y + 3}" y2="{y + 13}" stroke="#000"/>'
                 f'<text x="{x(hi) + 4:.1f}" y="{y + 12}" font-size="11">{100 * rate:.1f}%</text>')
    return _svg(w, h, body, f"{metric}: success rate with 95% Wilson interval")


def _timeline_chart(route: dict, metric: str, bucket: str) -> str:
    series = [s for s in route["timeline"] if s["metric"] == metric]
    pts = [p for s in series for p in s["points"]]
    if not pts:
        return ""
    t0, t1 = min(p["t"] for p in pts), max(p["t"] for p in pts)
    values = [p["sum"] / p["n"] for p in pts if p["n"]]
    vmin, vmax = min(values), max(values)
    if vmax == vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    w, h = 520, 200
    x = lambda t: 40 + (w - 60) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)  # noqa: E731
    y = lambda v: h - 25 - (h - 55) * (v - vmin) / (vmax - vmin)  # noqa: E731
    body = f'<text x="4" y="{y(vmax) + 4:.0f}" font-size="10">{vmax:.3g}</text>' \
           f'<text x="4" y="{y(vmin) + 4:.0f}" font-size="10">{vmin:.3g}</text>'
    names = [s["variant"] for s in series]
    for i, s in enumerate(series):
        line = " ".join(f"{x(p['t']):.1f},{y(p['sum'] / p['n']):.1f}" for p in s["points"] if p["n"])
        color = _COLORS[names.index(s["variant"]) % 6]
        body += f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{line}"/>'
        body += f'<text x="{w - 110}" y="{30 + 14 * i}" font-size="11" fill="{color}">{e(s["variant"])}</text>'
    return _svg(w, h, body, f"{metric} per {bucket}")


def _latency_chart(arms: list[dict]) -> str:
    vals = [a["latency_ms"].get(k) for a in arms for k in ("p50", "p95", "p99")]
    top = max((v for v in vals if v is not None), default=0)
    if not top:
        return ""
    w, h = 420, 40 + 22 * 3 * len(arms)
    body, y = "", 26
    for i, a in enumerate(arms):
        for k in ("p50", "p95", "p99"):
            v = a["latency_ms"].get(k)
            if v is None:
                continue
            bw = (w - 190) * v / top
            body += (f'<text x="6" y="{y + 12}" font-size="11">{e(a["variant"])} {k}</text>'
                     f'<rect x="120" y="{y}" width="{bw:.1f}" height="16" fill="{_COLORS[i % 6]}"/>'
                     f'<text x="{124 + bw:.1f}" y="{y + 12}" font-size="11">{v:.0f} ms</text>')
            y += 22
    return _svg(w, h, body, "latency p50 / p95 / p99 (served attempts)")


def _failure_chart(arms: list[dict]) -> str:
    classes = sorted({c for a in arms for c in a["guards"]["by_class"]})
    if not classes:
        return ""
    top = max(a["guards"]["by_class"].get(c, 0) / a["requests"] for a in arms for c in classes if a["requests"])
    w, h = 420, 40 + 22 * len(classes) * len(arms)
    body, y = "", 26
    for c in classes:
        for i, a in enumerate(arms):
            rate = a["guards"]["by_class"].get(c, 0) / a["requests"] if a["requests"] else 0
            bw = (w - 200) * rate / top if top else 0
            body += (f'<text x="6" y="{y + 12}" font-size="11">{e(c)} · {e(a["variant"])}</text>'
                     f'<rect x="150" y="{y}" width="{bw:.1f}" height="16" fill="{_COLORS[i % 6]}"/>'
                     f'<text x="{154 + bw:.1f}" y="{y + 12}" font-size="11">{100 * rate:.2f}%</text>')
            y += 22
    return _svg(w, h, body, "guard failures per class (share of requests)")


def _periods_table(r: dict[str, Any]) -> str:
    """When the allocation changed: the periods the comparisons are stratified over."""
    periods = [p for p in r.get("periods") or [] if p["arms"]]
    if not r.get("split_changes") or not periods:
        return ""
    rows = [_row(["period", "from", "why", "weights", "units / requests per arm", "sample-ratio p"], "th")]
    for p in periods:
        start = "start" if p["start"] is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p["start"]))
        weights = "unknown" if not p["weights"] else " / ".join(f"{k} {v:g}" for k, v in p["weights"].items())
        arms = ", ".join(f"{k} {v['units']} / {v['requests']}" for k, v in p["arms"].items())
        rows.append(_row([p["index"], start, p["because"], weights, arms,
                          fmt(p["srm"]["p"]) if p["srm"] else "—"]))
    return ("<h3>Allocation changes</h3><p>Comparisons are stratified over these periods of constant "
            "allocation, never pooled across them.</p><table>" + "".join(rows) + "</table>")


def _row(cells: list[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{e(str(c))}</{tag}>" for c in cells) + "</tr>"


def render_html(report: dict[str, Any]) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sluicegate report</title>"
             f"<style>{_CSS}</style></head><body><h1>Sluicegate report</h1>"
             f"<p class='muted'>generated {e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(report['generated_at'])))}"
             f"; buckets per {e(report['window']['bucket'])}</p>"]
    if not report["routes"]:
        parts.append("<p>No records in the window.</p>")
    for r in report["routes"]:
        arms = r["arms"]
        parts.append(f"<h2>route {e(r['route'])}</h2><p>control: <b>{e(r['control'])}</b></p>")
        if r.get("unit"):
            parts.append(f"<p>unit of analysis: <b>{e(r['unit']['label'])}</b> — every interval, test and the "
                         "sample-ratio check counts these units</p>")
        for w in r["warnings"]:
            parts.append(f"<p class='warn'>⚠ {e(w)}</p>")
        parts.append(_periods_table(r))
        parts.append("<table>" + _row(["variant", "requests", "units", "episodes", "outcomes", "coverage", "guard fail",
                                       "errors", "fallbacks", "retries", "p50 ms", "p95 ms", "p99 ms", "ttft p50",
                                       "ttft p95", "prompt tok/req", "compl. tok/req", "cost/req", "cost/success",
                                       "drift"], "th"))
        for a in arms:
            cov = a["coverage"]["requests"]["pct"]
            parts.append(_row([a["variant"] + (" (control)" if a["is_control"] else ""), a["requests"],
                               a.get("units", {}).get("total", "—"), a["episodes"],
                               a["outcomes_received"], "—" if cov is None else f"{cov:.1f}%",
                               fmt(a["guards"]["rate"], "pct"), fmt(a["error_rate"], "pct"), a["fallbacks"],
                               a["retries"], fmt(a["latency_ms"]["p50"], "ms"), fmt(a["latency_ms"]["p95"], "ms"),
                               fmt(a["latency_ms"]["p99"], "ms"), fmt(a["ttft_ms"]["p50"], "ms"),
                               fmt(a["ttft_ms"]["p95"], "ms"), fmt(a["tokens"]["prompt_per_request"]),
                               fmt(a["tokens"]["completion_per_request"]), fmt(a["cost"]["per_request_usd"], "usd"),
                               fmt(a["cost"]["per_success_usd"], "usd"), "yes" if a["drift"]["drifted"] else "no"]))
        parts.append("</table>")
        metrics = sorted({m for a in arms for m, v in a["metrics"].items() if v["n"]})
        if metrics:
            parts.append("<h3>Outcomes</h3><table>" + _row(["variant", "metric", "n", "value", "95% interval"], "th"))
            for a in arms:
                for m in metrics:
                    v = a["metrics"][m]
                    kind = "pct" if "rate" in v else ""
                    parts.append(_row([a["variant"], m, v["n"], fmt(v.get("rate", v.get("mean")), kind),
                                       f"[{fmt(v['interval'][0], kind)}, {fmt(v['interval'][1], kind)}]"]))
            parts.append("</table>")
        if r["comparisons"]:
            parts.append("<h3>Verdicts</h3><table>" + _row(
                ["comparison", "metric", "diff", "95% CI", "p (fixed)", "always-valid p", "adjusted p",
                 "confidence sequence", "analysis", "verdict", "what it means"], "th"))
            for c in r["comparisons"]:
                parts.append(_row([f"{c['candidate']} vs {c['control']}", c["metric"], f"{c['diff']:+.4g}",
                                   f"[{fmt(c['interval'][0])}, {fmt(c['interval'][1])}]", fmt(c["p_value"]),
                                   fmt(c["sequential_p"]), fmt(c["sequential_p_adjusted"]),
                                   f"[{fmt(c['confidence_sequence'][0])}, {fmt(c['confidence_sequence'][1])}]",
                                   c.get("analysis", {}).get("method", ""),
                                   c["verdict"], f"{c['meaning']} ({c['reason']})"]))
            parts.append("</table>")
            if r["multiple_comparisons"]:
                parts.append(f"<p>Verdicts use always-valid p-values Holm-adjusted over this route's "
                             f"{len(r['comparisons'])} candidate × metric comparisons.</p>")
        lines = check_lines(r.get("checks") or [])
        if lines:
            parts.append("<h3>Per-unit figures</h3><pre>" + e("\n".join(lines)) + "</pre>")
        for line in srm_lines(r):
            parts.append(f"<p class='{'warn' if r['srm']['warning'] else ''}'>{e(line)}</p>")
        parts.append("<div>")
        for m in metrics:
            if all("rate" in a["metrics"][m] for a in arms):
                parts.append(_rate_chart(arms, m))
            parts.append(_timeline_chart(r, m, report["window"]["bucket"]))
        parts.append(_latency_chart(arms))
        parts.append(_failure_chart(arms))
        parts.append("</div>")
        for a in arms:
            if a["drift"]["drifted"]:
                parts.append(f"<p class='warn'>Drift in {e(a['variant'])}: " + "; ".join(
                    f"{e(str(p['model_served']))} / {e(str(p['system_fingerprint']))} from "
                    f"{e(time.strftime('%Y-%m-%d %H:%M', time.gmtime(p['first_seen'])))}"
                    for p in a["drift"]["pairs"]) + "</p>")
    for title, lines in (("Scores", scores_lines(report.get("scores"))),
                         ("Shadow vs primary", shadow_lines(report.get("shadows") or [])),
                         ("Canaries", canary_lines(report.get("canary") or []))):
        if lines:  # the same tables as the terminal report
            parts.append(f"<h2>{title}</h2><pre>{e(chr(10).join(lines))}</pre>")
    parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in report["notes"]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
