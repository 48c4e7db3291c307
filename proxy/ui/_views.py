"""The charts of each page, drawn from the same data its JSON endpoint returns."""

from __future__ import annotations

from typing import Any

from proxy.reports._render_text import fmt
from proxy.ui._charts import (
    SEVERITY_COLORS,
    Bar,
    Line,
    bars_over_time,
    color,
    failure_chart,
    latency_chart,
    lines_over_time,
    rate_chart,
)

__all__ = ["overview_chart", "route_charts"]


def overview_chart(route: dict[str, Any]) -> str:
    """Success rate per variant with its 95% interval (the report's bar chart)."""
    metric = route["success_metric"]
    arms = [{"variant": a["variant"], "metrics": {metric: a["success"]}} for a in route["arms"] if a["success"]]
    return rate_chart(arms, metric) if metric and arms else ""


def _span(data: dict[str, Any]) -> tuple[float, float] | None:
    """The first and last bucket of the page's window: every chart over time spans the same range."""
    bucket = data["window"]["bucket_seconds"]
    first = data["filters"]["since"] or data["window"]["first_request_at"]
    last = data["filters"]["until"] or data["window"]["last_request_at"]
    if first is None or last is None:
        return None
    return (first // bucket) * bucket, (min(last, data["generated_at"]) // bucket) * bucket


def _variant_colors(data: dict[str, Any]) -> dict[str, str]:
    """variant -> its colour, in the report's arm order (control first), as the bar charts colour them."""
    arms = (data["report"] or {}).get("arms", [])
    return {a["variant"]: color(i) for i, a in enumerate(arms)}


def _in_arm_order(series: list[dict[str, Any]], colors: dict[str, str]) -> list[dict[str, Any]]:
    order = list(colors)
    return sorted(series, key=lambda s: order.index(s["variant"]) if s["variant"] in order else len(order))


def _success_charts(data: dict[str, Any], colors: dict[str, str]) -> list[str]:
    series = data["series"]
    bucket = series["bucket_seconds"]
    out = []
    for metric in sorted({s["metric"] for s in series["success"]}):
        chosen = _in_arm_order([s for s in series["success"] if s["metric"] == metric], colors)
        boolean = all(s["boolean"] for s in chosen)
        lines = []
        for s in chosen:
            pts = [p for p in s["points"] if p["n"]]
            colour = colors.get(s["variant"], "")
            if boolean:
                lines.append(Line(s["variant"], [(p["t"], p["rate"]) for p in pts],
                                  band=[(p["t"], p["low"], p["high"]) for p in pts], color=colour))
            else:
                lines.append(Line(s["variant"], [(p["t"], p["mean"]) for p in pts], color=colour))
        title = (f"{metric}: success rate per {data['window']['bucket']} with 95% Wilson band" if boolean
                 else f"{metric}: mean per {data['window']['bucket']}")
        label = (lambda v: fmt(v, "pct")) if boolean else (lambda v: f"{v:.3g}")
        out.append(lines_over_time(title, lines, bucket, label, zero=boolean, span=_span(data)))
    return [c for c in out if c]


def _guard_charts(data: dict[str, Any]) -> list[str]:
    series = data["series"]
    out = []
    for s in series["guards"]:
        bars = [Bar(p["t"], [(sev, p["by_severity"].get(sev, 0)) for sev in ("critical", "major", "minor")
                             if p["by_severity"].get(sev)]
                    + [(sev, n) for sev, n in sorted(p["by_severity"].items()) if sev not in SEVERITY_COLORS])
                for p in s["points"]]
        out.append(bars_over_time(f"guard failures by severity per {data['window']['bucket']}: {s['variant']}",
                                  bars, series["bucket_seconds"], SEVERITY_COLORS, span=_span(data)))
    return [c for c in out if c]


def _latency_charts(data: dict[str, Any], colors: dict[str, str]) -> list[str]:
    series = data["series"]
    out = []
    for label in ("p50", "p95", "p99"):
        lines = [Line(s["variant"], [(p["t"], p[label]) for p in s["points"]], color=colors.get(s["variant"], ""))
                 for s in _in_arm_order(series["latency"], colors)]
        out.append(lines_over_time(f"latency {label} per {data['window']['bucket']} (ms, served attempts)", lines,
                                   series["bucket_seconds"], lambda v: f"{v:.0f} ms", zero=True, span=_span(data)))
    return [c for c in out if c]


def _cost_chart(data: dict[str, Any], colors: dict[str, str]) -> str:
    series = data["series"]
    lines = [Line(s["variant"], [(p["t"], p["per_success_usd"]) for p in s["points"]
                                 if p["per_success_usd"] is not None], color=colors.get(s["variant"], ""))
             for s in _in_arm_order(series["cost"], colors)]
    metric = series["success_metric"] or "success"
    return lines_over_time(f"cost per successful task ({metric}) per {data['window']['bucket']}", lines,
                           series["bucket_seconds"], lambda v: f"${v:.4g}", zero=True, span=_span(data))


def route_charts(data: dict[str, Any]) -> dict[str, list[str]]:
    """Named groups of SVG charts for the route page (empty lists where there is no data)."""
    report = data["report"]
    if report is None or data["series"] is None:
        return {"rates": [], "success": [], "guards": [], "latency": [], "cost": []}
    colors = _variant_colors(data)
    arms = report["arms"]
    boolean = [m for m, d in data["metrics"].items() if d["type"] == "boolean"
               and any(a["metrics"].get(m, {}).get("n") for a in arms)]
    return {
        "rates": [c for c in (rate_chart(arms, m) for m in sorted(boolean)) if c],
        "success": _success_charts(data, colors),
        "guards": [c for c in [failure_chart(arms), *_guard_charts(data)] if c],
        "latency": [c for c in [latency_chart(arms), *_latency_charts(data, colors)] if c],
        "cost": [c for c in [_cost_chart(data, colors)] if c],
    }
