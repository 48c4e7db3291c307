"""A route's figures over time, per arm and time bucket, for the route page's charts.

The report engine gives totals per arm and the outcome timeline; the charts also need guard
failures, latency percentiles and cost per bucket. These queries count exactly what the engine
counts — every non-shadow attempt (attempt >= 1) in the arm of its request's attempt 1, at attempt
1's start (intention-to-treat), latency of served attempts, cache hits out of latency and cost (their
report columns are NULL) — so the buckets of a series add up to the report's totals. Buckets are
the report's own (`window.bucket_seconds`). Portable SQL only: the store may be PostgreSQL.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from proxy.reports import wilson_interval
from proxy.reports._queries import window

__all__ = ["MAX_LATENCY_ROWS", "route_series"]

MAX_LATENCY_ROWS = 500_000  # latencies read for the percentile chart; past it the chart says it is partial

_ATTEMPTS = """FROM records x JOIN records a ON a.request_id = x.request_id AND a.attempt = 1
WHERE x.attempt >= 1{cond}{w}"""


def _nearest_rank(values: list[float], p: int) -> float:
    """The value at rank ceil(p·n/100) of the sorted values (the engine's percentile)."""
    return values[max(1, math.ceil(len(values) * p / 100)) - 1]


async def _guards(store: Any, route: str, since: float | None, until: float | None,
                  bucket: float) -> list[dict[str, Any]]:
    d = store.dialect
    w, args = window("a", route, since, until)
    sql = f"""WITH g AS (SELECT a.variant AS arm, a.started_at AS started_at, x.failed_guards AS failed_guards
        {_ATTEMPTS.format(cond=" AND x.guard_failures > 0", w=w)})
    SELECT g.arm, {d.bucket("g.started_at / ?")}, {d.json_item("j.value", 0)}, {d.json_item("j.value", 1)}, count(*)
    FROM g, {d.json_elements("g.failed_guards")} j GROUP BY 1, 2, 3, 4"""
    rows = await store.fetch(sql, [*args, bucket])
    points: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for arm, b, cls, severity, n in rows:
        p = points[arm].setdefault(int(b), {"t": int(b) * bucket, "failures": 0, "by_class": {}, "by_severity": {}})
        p["failures"] += n
        p["by_class"][cls] = p["by_class"].get(cls, 0) + n
        p["by_severity"][severity] = p["by_severity"].get(severity, 0) + n
    return [{"variant": arm, "points": [pts[b] for b in sorted(pts)]} for arm, pts in sorted(points.items())]


async def _latency(store: Any, route: str, since: float | None, until: float | None,
                   bucket: float) -> tuple[list[dict[str, Any]], bool]:
    d = store.dialect
    w, args = window("a", route, since, until)
    sql = (f"SELECT a.variant, {d.bucket('a.started_at / ?')}, x.latency_ms "
           + _ATTEMPTS.format(cond=" AND x.served = 1 AND x.latency_ms IS NOT NULL", w=w) + " LIMIT ?")
    rows = await store.fetch(sql, [bucket, *args, MAX_LATENCY_ROWS + 1])
    partial = len(rows) > MAX_LATENCY_ROWS
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for arm, b, latency in rows[:MAX_LATENCY_ROWS]:
        values[arm][int(b)].append(float(latency))
    out = []
    for arm, buckets in sorted(values.items()):
        pts = []
        for b in sorted(buckets):
            v = sorted(buckets[b])
            pts.append({"t": b * bucket, "n": len(v), "p50": _nearest_rank(v, 50), "p95": _nearest_rank(v, 95),
                        "p99": _nearest_rank(v, 99)})
        out.append({"variant": arm, "points": pts})
    return out, partial


async def _cost(store: Any, route: str, since: float | None, until: float | None, bucket: float,
                success: dict[str, dict[int, tuple[int, float]]]) -> list[dict[str, Any]]:
    d = store.dialect
    w, args = window("a", route, since, until)
    sql = (f"SELECT a.variant, {d.bucket('a.started_at / ?')}, sum(CASE WHEN x.attempt = 1 THEN 1 ELSE 0 END), "
           f"sum(x.cost_usd), count(x.cost_usd) " + _ATTEMPTS.format(cond="", w=w) + " GROUP BY 1, 2")
    rows = await store.fetch(sql, [bucket, *args])
    points: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for arm, b, requests, cost, cost_n in sorted(rows, key=lambda r: (r[0], r[1])):
        per_request = cost / requests if cost_n and requests else None
        n, s = success.get(arm, {}).get(int(b), (0, 0.0))
        rate = s / n if n else None
        points[arm].append({"t": int(b) * bucket, "requests": requests, "cost_usd": cost if cost_n else None,
                            "per_request_usd": per_request, "success_rate": rate,
                            "per_success_usd": per_request / rate if per_request is not None and rate else None})
    return [{"variant": arm, "points": pts} for arm, pts in sorted(points.items())]


def _success(route_report: dict[str, Any], metrics: dict[str, Any], bucket: float) -> list[dict[str, Any]]:
    """Each metric's value per bucket from the report's timeline; boolean ones with a Wilson band."""
    out = []
    for series in route_report["timeline"]:
        boolean = metrics.get(series["metric"], {}).get("type") == "boolean"
        pts = []
        for p in series["points"]:
            n, s = p["n"], p["sum"]
            point: dict[str, Any] = {"t": p["t"], "n": n}
            if boolean:
                successes = int(round(s))
                low, high = wilson_interval(successes, n) if n else (None, None)
                point.update(successes=successes, rate=successes / n if n else None, low=low, high=high)
            else:
                point.update(mean=s / n if n else None)
            pts.append(point)
        out.append({"variant": series["variant"], "metric": series["metric"], "boolean": boolean, "points": pts})
    return out


async def route_series(store: Any, route_report: dict[str, Any], metrics: dict[str, Any], bucket: float, *,
                       route: str, since: float | None, until: float | None) -> dict[str, Any]:
    """{"bucket_seconds", "success", "guards", "latency", "latency_partial", "cost"} for one route."""
    success = _success(route_report, metrics, bucket)
    metric = next((a["cost"]["success_metric"] for a in route_report["arms"]), None)
    by_bucket: dict[str, dict[int, tuple[int, float]]] = defaultdict(dict)
    for series in route_report["timeline"]:
        if series["metric"] == metric:
            for p in series["points"]:
                by_bucket[series["variant"]][int(p["t"] // bucket)] = (p["n"], p["sum"])
    latency, partial = await _latency(store, route, since, until, bucket)
    return {
        "bucket_seconds": bucket,
        "success_metric": metric,
        "success": success,
        "guards": await _guards(store, route, since, until, bucket),
        "latency": latency,
        "latency_partial": partial,
        "cost": await _cost(store, route, since, until, bucket, by_bucket),
    }
