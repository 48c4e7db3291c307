"""Inline SVG charts: the HTML report's bar charts, plus the dashboard's charts over time.

The report's helpers (`proxy.reports._render_html`) draw the per-arm bars — success rate with its
Wilson interval, latency percentiles — and are reused as they are, given a viewBox so they shrink
with a narrow screen; guard failures per class are drawn here with room for long class names. The
charts over time are new here: lines with an interval band, and stacked bars. Every text put into
the SVG is escaped; colours go in presentation attributes (the pages' CSP allows no inline styles).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxy.reports._render_html import _COLORS, _latency_chart, _rate_chart  # noqa: PLC2701

__all__ = ["Bar", "Line", "bars_over_time", "color", "failure_chart", "latency_chart", "lines_over_time",
           "rate_chart"]

e = html.escape
SEVERITY_COLORS = {"critical": "#b42318", "major": "#ed7d31", "minor": "#ffc000"}
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 560, 220, 56, 120, 26, 34


def color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _responsive(svg: str) -> str:
    """Give a fixed-size SVG a viewBox, so CSS may scale it down to the screen's width."""
    match = re.match(r'<svg width="(\d+)" height="(\d+)"', svg)
    if not match:
        return svg
    w, h = match.groups()
    return svg.replace(match.group(0), f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart"', 1)


def rate_chart(arms: list[dict], metric: str) -> str:
    return _responsive(_rate_chart(arms, metric))


def latency_chart(arms: list[dict]) -> str:
    return _responsive(_latency_chart(arms))


def failure_chart(arms: list[dict]) -> str:
    """Guard failures per class and variant, as a share of the variant's requests (the report's chart,
    with the label column as wide as the longest label)."""
    classes = sorted({c for a in arms for c in a["guards"]["by_class"]})
    rows = [(f"{c} · {a['variant']}", a["guards"]["by_class"].get(c, 0) / a["requests"] if a["requests"] else 0.0,
             color(i)) for c in classes for i, a in enumerate(arms)]
    if not rows:
        return ""
    top = max(rate for _, rate, _ in rows) or 1.0
    left = 12 + int(6.4 * max(len(label) for label, _, _ in rows))
    w, h = left + 260, 34 + 22 * len(rows)
    body = ""
    for k, (label, rate, colour) in enumerate(rows):
        y = 26 + 22 * k
        bw = 190 * rate / top
        body += (f'<text x="6" y="{y + 12}" font-size="11">{e(label)}</text>'
                 f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="16" fill="{colour}"/>'
                 f'<text x="{left + bw + 4:.1f}" y="{y + 12}" font-size="11">{100 * rate:.2f}%</text>')
    return (f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart" role="img">'
            f'<title>guard failures per class (share of requests)</title>'
            f'<text x="6" y="14" font-size="12">guard failures per class (share of requests)</text>{body}</svg>')


@dataclass
class Line:
    """One series: (t, value) points, and optionally (t, low, high) for its interval band."""

    name: str
    points: list[tuple[float, float]]
    band: list[tuple[float, float, float]] = field(default_factory=list)
    dashed: bool = False
    color: str = ""


@dataclass
class Bar:
    """One stacked bar at time t: (segment name, value) from the bottom up."""

    t: float
    segments: list[tuple[str, float]]


def _time_label(t: float, bucket_s: float) -> str:
    return time.strftime("%m-%d %H:%M" if bucket_s < 86400 else "%Y-%m-%d", time.gmtime(t))


def _frame(title: str, body: str, legend: Sequence[tuple[str, str, bool]], t0: float, t1: float,
           vmin: float, vmax: float, bucket_s: float, y_label: Callable[[float], str]) -> str:
    x_axis = (f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" stroke="#999"/>'
              f'<text x="{_LEFT}" y="{_H - _BOTTOM + 16}" font-size="10">{e(_time_label(t0, bucket_s))}</text>'
              f'<text x="{_W - _RIGHT}" y="{_H - _BOTTOM + 16}" font-size="10" text-anchor="end">'
              f'{e(_time_label(t1, bucket_s))} UTC</text>')
    y_axis = (f'<text x="{_LEFT - 4}" y="{_TOP + 10}" font-size="10" text-anchor="end">{e(y_label(vmax))}</text>'
              f'<text x="{_LEFT - 4}" y="{_H - _BOTTOM}" font-size="10" text-anchor="end">{e(y_label(vmin))}</text>')
    keys = ""
    for i, (name, colour, dashed) in enumerate(legend):
        y = _TOP + 14 * i + 6
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        keys += (f'<line x1="{_W - _RIGHT + 10}" x2="{_W - _RIGHT + 26}" y1="{y}" y2="{y}" stroke="{colour}" '
                 f'stroke-width="3"{dash}/>'
                 f'<text x="{_W - _RIGHT + 30}" y="{y + 4}" font-size="11">{e(name)}</text>')
    return (f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" class="chart" role="img">'
            f'<title>{e(title)}</title><text x="6" y="14" font-size="12">{e(title)}</text>'
            f'{x_axis}{y_axis}{body}{keys}</svg>')


def lines_over_time(title: str, lines: Sequence[Line], bucket_s: float,
                    y_label: Callable[[float], str] = lambda v: f"{v:.3g}", zero: bool = False,
                    span: tuple[float, float] | None = None) -> str:
    """Lines (with interval bands) over time, across `span` (first and last bucket) when given, so the
    charts of one page line up; "" when there is nothing to draw."""
    lines = [line for line in lines if line.points]
    if not lines:
        return ""
    ts = [t for line in lines for t, _ in line.points] + list(span or ())
    values = [v for line in lines for _, v in line.points]
    values += [v for line in lines for _, lo, hi in line.band for v in (lo, hi)]
    t0, t1 = min(ts), max(ts)
    vmin, vmax = (0.0 if zero else min(values)), max(values)
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - (abs(vmin) * 0.1 or 0.5), vmax + (abs(vmax) * 0.1 or 0.5)
        vmin = max(vmin, 0.0) if zero else vmin
    x = lambda t: _LEFT + (_W - _LEFT - _RIGHT) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)  # noqa: E731
    y = lambda v: _H - _BOTTOM - (_H - _TOP - _BOTTOM) * (v - vmin) / (vmax - vmin)  # noqa: E731
    body = ""
    for i, line in enumerate(lines):
        colour = line.color or color(i)
        if line.band:
            upper = " ".join(f"{x(t):.1f},{y(hi):.1f}" for t, _, hi in line.band)
            lower = " ".join(f"{x(t):.1f},{y(lo):.1f}" for t, lo, _ in reversed(line.band))
            body += f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.18" stroke="none"/>'
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in line.points)
        dash = ' stroke-dasharray="4 3"' if line.dashed else ""
        body += f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{path}"/>'
        for t, v in line.points if len(line.points) <= 60 else ():
            body += f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>'
    legend = [(line.name, line.color or color(i), line.dashed) for i, line in enumerate(lines)]
    return _frame(title, body, legend, t0, t1, vmin, vmax, bucket_s, y_label)


def bars_over_time(title: str, bars: Sequence[Bar], bucket_s: float, colors: dict[str, str],
                   span: tuple[float, float] | None = None) -> str:
    """Stacked bars per time bucket (segments coloured by name, legend in the order of `colors`), across
    `span` when given; "" when every bar is empty."""
    bars = [b for b in bars if any(v for _, v in b.segments)]
    if not bars:
        return ""
    ts = [b.t for b in bars] + list(span or ())
    t0, t1 = min(ts), max(ts)
    top = max(sum(v for _, v in b.segments) for b in bars)
    slots = max(1, round((t1 - t0) / bucket_s) + 1)
    width = (_W - _LEFT - _RIGHT) / slots
    body = ""
    for b in bars:
        left = _LEFT + width * round((b.t - t0) / bucket_s)
        base = _H - _BOTTOM
        for name, value in b.segments:
            h = (_H - _TOP - _BOTTOM) * value / top
            base -= h
            body += (f'<rect x="{left + 1:.1f}" y="{base:.1f}" width="{max(width - 2, 1):.1f}" height="{h:.1f}" '
                     f'fill="{colors.get(name, "#888")}"><title>{e(name)}: {value:g}</title></rect>')
    seen = {name for b in bars for name, _ in b.segments}
    names = [n for n in colors if n in seen] + sorted(seen - set(colors))
    return _frame(title, body, [(n, colors.get(n, "#888"), False) for n in names], t0, t1 + bucket_s,
                  0, top, bucket_s, lambda v: f"{v:g}")
