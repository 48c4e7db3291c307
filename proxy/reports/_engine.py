"""The report engine: per route and variant (arm), every figure of DESIGN.md "Reports", as JSON.

Semantics (see also the README section "Reports"):

* A request is one ``request_id``; its **arm** is the variant of its attempt-1 record
  (intention-to-treat: a fallback or retry to another model stays in the arm that was assigned).
  Shadow attempts are not counted. Time window and route filter apply to attempt 1's
  ``started_at`` / ``route``.
* Inference-level outcomes join on ``request_id``; episode-level ones on ``episode_id``, whose
  arm is the variant of its requests' attempt-1 records. An episode whose requests saw more than
  one variant (the policy changed mid-episode) is **excluded** and counted in ``episodes_mixed``.
  For each (subject, metric) only the latest outcome (max received_at, then max id) counts.
* Boolean metric: success rate with Wilson 95% interval; candidate − control with Newcombe
  interval, pooled z-test p, mSPRT always-valid p and confidence sequence, and ``verdict``.
  Float metric: mean with a 95% t interval, Welch difference, ``verdict_means``.
  MDE: ``mde`` (absolute) for booleans, default 0.02; floats default to 5% of |control mean|.
  Several metrics on a route → the always-valid p-values of each comparison are Holm-adjusted
  across the metrics and the verdict is decided on the adjusted p (``multiple_comparisons``).
* SRM: with configured split weights, chi-square of attempt-1 counts vs weights; warning at p < 0.001.
* Percentiles are nearest-rank (the value at rank ⌈p·n⌉ of the sorted served attempts), exact.
* Tokens and cost sum every (non-shadow) attempt of the arm's requests (fallbacks cost money
  too); per request = total / requests; per successful task = per request / success rate of the
  route's success metric.
* Guard failures: requests of the arm with at least one failed guard on any attempt; counts of
  failures by taxonomy class and severity.
* Drift: distinct (model_served, system_fingerprint) pairs answered by each variant's model.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from . import _queries as q
from ._stats import chi_square_srm, holm, student_t_quantile, wilson_interval
from ._verdict import DEFAULT_MDE, DEFAULT_MIN_N, _decide, verdict, verdict_means  # noqa: PLC2701

__all__ = ["MEANINGS", "SRM_ALPHA", "build_report", "report_inputs"]

SRM_ALPHA = 0.001
FLOAT_MDE_FRACTION = 0.05
HOURLY_MAX_SPAN = 3 * 86400

MEANINGS = {
    "better": "the candidate beats the control on this metric; the always-valid test holds however often "
              "the report is looked at",
    "worse": "the candidate is worse than the control on this metric",
    "no_difference": "enough outcomes to detect a difference of the MDE with 80% power, and none was found",
    "inconclusive": "not enough evidence either way yet; keep collecting outcomes",
}


def _metric_def(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {"type": value["type"], "level": value["level"], "goal": value.get("goal", "maximize")}
    return {"type": value.type, "level": value.level, "goal": value.goal}


def report_inputs(policy: Any) -> dict[str, Any]:
    """``metrics``, ``controls`` and ``weights`` for ``build_report`` from a loaded policy."""
    if policy is None:
        return {}
    controls, weights, success = {}, {}, {}
    for name, route in policy.routes.items():
        controls[name] = route.control
        if route.split is not None and len(route.split) > 1:
            weights[name] = dict(route.split)
        canary = getattr(route, "canary", None)
        metric = getattr(canary, "success_metric", None) if canary is not None else None
        if metric:
            success[name] = metric
    return {"metrics": {k: _metric_def(v) for k, v in policy.metrics.items()}, "controls": controls,
            "weights": weights, "success_metrics": success}


def _num(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x


def _interval(pair: tuple[float, float]) -> list[float | None]:
    return [_num(pair[0]), _num(pair[1])]


def _mean_interval(mean: float, var: float, n: int) -> list[float | None]:
    if n < 2:
        return [None, None]
    half = student_t_quantile(0.975, n - 1) * math.sqrt(var / n)
    return [mean - half, mean + half]


def _var(n: int, s: float, ss: float) -> float:
    return max((ss - s * s / n) / (n - 1), 0.0) if n >= 2 else 0.0


def _add(a: Any, b: Any) -> Any:
    """SQL sum() of two partial sums: NULL when both are NULL."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _merge_arms(first_rows: list[tuple], late_rows: list[tuple], ep_any_rows: list[tuple]) -> list[tuple]:
    """Per (route, arm): requests, episodes (any), attempts, served, fallbacks, retries, prompt,
    completion, cost, cost_n, first, last, n latency, n ttft — attempt 1 plus later attempts."""
    late = {(r[0], r[1]): r[2:] for r in late_rows}
    eps: dict[tuple[str, str], int] = defaultdict(int)
    for rt, arm, n in ep_any_rows:
        eps[(rt, arm)] += n
    out = []
    for rt, arm, requests, served, pt, ct, cost, cost_n, t0, t1, n_lat, n_ttft in first_rows:
        l_att, l_served, l_fb, l_rt, l_pt, l_ct, l_cost, l_cost_n, l_lat, l_ttft = late.get(
            (rt, arm), (0, 0, 0, 0, None, None, None, 0, 0, 0))
        out.append((rt, arm, requests, eps.get((rt, arm), 0), requests + l_att, _add(served, l_served),
                    l_fb or 0, l_rt or 0, _add(pt, l_pt), _add(ct, l_ct), _add(cost, l_cost),
                    cost_n + l_cost_n, t0, t1, n_lat + l_lat, n_ttft + l_ttft))
    return out


async def _run(store: Any, sql: str, params: list[Any] | tuple = ()) -> list[tuple]:
    return await store.fetch(sql, list(params))


async def _timed(timings: dict[str, float], label: str, store: Any, sql: str,
                 params: list[Any] | tuple = (), lane: int = 0) -> list[tuple]:
    t = time.perf_counter()
    rows = await store.fetch(sql, list(params), lane=lane) if lane else await store.fetch(sql, list(params))
    timings[label] = time.perf_counter() - t
    return rows


async def _outcome_queries(store: Any, timings: dict[str, float], route: str | None, since: float | None,
                           until: float | None) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The queries that need no temp table, on the second read lane, while the first builds the
    snapshot: metric kinds, hourly inference outcomes (re-bucketed to days later if need be) and
    request coverage."""
    kinds = await _timed(timings, "metric_kinds", store, q.metric_kinds(), lane=1)
    sql, params = q.inference_outcomes(store.dialect, route, since, until, 3600.0)
    hourly = await _timed(timings, "inference_outcomes", store, sql, params, lane=1)
    sql, params = q.coverage_requests(route, since, until)
    coverage = await _timed(timings, "coverage_requests", store, sql, params, lane=1)
    return kinds, hourly, coverage


def _rebucket(rows: list[tuple], factor: int) -> list[tuple]:
    """Hourly outcome sums (route, arm, metric, hour, n, sum, sumsq, nonbinary) -> `factor`-hour buckets.
    Exact: epoch hours nest in epoch days."""
    if factor == 1:
        return rows
    merged: dict[tuple, list[float]] = {}
    for rt, arm, metric, hour, *sums in rows:
        acc = merged.setdefault((rt, arm, metric, int(hour) // factor), [0, 0, 0, 0])
        for i, v in enumerate(sums):
            acc[i] += v or 0
    return [(*key, *sums) for key, sums in merged.items()]


async def build_report(store: Any, *, route: str | None = None, since: float | None = None,
                       until: float | None = None, metrics: Mapping[str, Any] | None = None,
                       controls: Mapping[str, str] | None = None,
                       weights: Mapping[str, Mapping[str, float]] | None = None,
                       mde: float | Mapping[str, float] | None = None,
                       success_metrics: Mapping[str, str] | None = None,
                       alpha: float = 0.05) -> dict[str, Any]:
    """The report as a JSON-able dict (every figure). ``metrics``: name → {type, level, goal}
    (policy ``metrics:``; unknown metrics are inferred); ``controls``: route → control variant;
    ``weights``: route → {variant: split weight}; ``mde``: absolute MDE for boolean metrics, or
    a mapping metric → MDE (in the metric's units)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    tag = f"{os.getpid()}_{time.time_ns()}"
    lane1 = asyncio.ensure_future(_outcome_queries(store, timings, route, since, until))
    try:
        for sql, params in q.create_snapshot(store.dialect, tag, route, since, until):
            await _run(store, sql, params)
        timings["snapshot"] = time.perf_counter() - started
        t = time.perf_counter()
        sql, params = q.arms_first(route, since, until)
        first_rows = await _timed(timings, 'arms', store, sql, params)
        late_rows = await _timed(timings, 'arms_late', store, q.arms_late(tag))
        ep_rows = await _timed(timings, 'episodes', store, q.episodes(tag))
        sql, params = q.episodes_mixed_arms(tag, route, since, until)
        mixed_rows = await _timed(timings, 'episodes_mixed', store, sql, params)
        arm_rows = _merge_arms(first_rows, late_rows, [r for r in ep_rows if r[1] is not None] + mixed_rows)
        first = min((r[12] for r in arm_rows), default=None)
        last = max((r[13] for r in arm_rows), default=None)
        lo = since if since is not None else first
        hi = until if until is not None else last
        span = (hi - lo) if lo is not None and hi is not None else 0.0
        bucket = 3600.0 if span <= HOURLY_MAX_SPAN else 86400.0
        t1 = time.perf_counter()
        pct: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in arm_rows:
            for column, count, labels in (("lat", row[14], ("p50", "p95", "p99")), ("ttft", row[15], ("p50", "p95"))):
                entry = pct[(row[0], row[1], column)] = {"n": count, **dict.fromkeys(labels)}
                for label in labels:
                    if count:
                        rank = (count * q.PERCENTILES[label] + 99) // 100  # nearest rank, 1-based
                        # walk the sorted values from the nearer end: same value, fewer index steps
                        descending = rank > (count + 1) // 2
                        offset = count - rank if descending else rank - 1
                        sql, window_args = q.value_at(tag, column, route, since, until, descending)
                        got = await _run(store, sql, [row[0], row[1], *window_args, row[0], row[1], offset])
                        entry[label] = got[0][0] if got else None
        timings["percentiles"] = time.perf_counter() - t1
        sql, params = q.guard_classes(store.dialect, tag, route, since, until)
        guard_rows = await _timed(timings, 'guards', store, sql, params)
        sql, params = q.guard_requests(tag, route, since, until)
        guard_req_rows = await _timed(timings, 'guard_requests', store, sql, params)
        sql, params = q.drift(tag, route, since, until)
        drift_rows = await _timed(timings, 'drift', store, sql, params)
        sql, params = q.episode_outcomes(store.dialect, tag, bucket)
        epo_rows = await _timed(timings, 'episode_outcomes', store, sql, params)
        cov_rows = await _timed(timings, 'coverage_episodes', store, q.coverage_episodes(tag))
        kind_rows, hourly_rows, cov_req_rows = await lane1
        inf_rows = _rebucket(hourly_rows, int(bucket // 3600))
        cov_rows = cov_req_rows + cov_rows
        timings["aggregates"] = time.perf_counter() - t
    finally:
        if not lane1.done() or lane1.cancelled():
            await asyncio.gather(lane1, return_exceptions=True)  # never leave a query running unowned
        for sql in q.drop_snapshot(store.dialect, tag):
            try:
                await _run(store, sql)
            except Exception:  # noqa: BLE001 — the store may be closing; temp tables die with it
                pass
        release = getattr(store, "release_memory", None)  # SQLite: the report lanes' caches
        if release is not None:
            try:
                await release()
            except Exception:  # noqa: BLE001 — a closing store
                pass

    # ---- metric definitions
    defs: dict[str, dict[str, Any]] = {}
    for name, value in (metrics or {}).items():
        defs[name] = {**_metric_def(value), "source": "policy"}
    seen: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen_level: dict[str, str] = {}
    for name, level, n, nonbin in kind_rows:
        seen[name][0] += n
        seen[name][1] += nonbin or 0
        seen_level.setdefault(name, level)
    for name, (n, nonbin) in sorted(seen.items()):
        if name not in defs:
            defs[name] = {"type": "float" if nonbin else "boolean", "level": seen_level[name],
                          "goal": "maximize", "source": "inferred"}

    # ---- per-arm skeleton
    routes: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (rt, arm, requests, episodes, attempts, served, fallbacks, retries, pt, ct, cost, cost_n,
         t0, t1, _, _) in arm_rows:
        served = served or 0
        routes[rt][arm] = {
            "variant": arm, "requests": requests, "episodes": 0, "episodes_any": episodes,
            "attempts": attempts, "served": served, "errors": requests - served,
            "error_rate": (requests - served) / requests if requests else None,
            "fallbacks": fallbacks or 0, "retries": retries or 0,
            "first_request_at": t0, "last_request_at": t1,
            "tokens": {"prompt": pt or 0, "completion": ct or 0,
                       "prompt_per_request": (pt or 0) / requests if requests else None,
                       "completion_per_request": (ct or 0) / requests if requests else None},
            "cost": {"total_usd": cost if cost_n else None, "attempts_with_cost": cost_n,
                     "per_request_usd": cost / requests if cost_n and requests else None,
                     "per_success_usd": None, "success_metric": None},
            "latency_ms": pct[(rt, arm, "lat")],
            "ttft_ms": pct[(rt, arm, "ttft")],
            "guards": {"requests_failed": 0, "rate": 0.0 if requests else None, "failures": 0,
                       "by_class": {}, "by_severity": {}, "by_class_severity": []},
            "outcomes_received": 0,
            "coverage": {"requests": {"with_outcome": 0, "total": requests, "pct": 0.0 if requests else None},
                         "episodes": {"with_outcome": 0, "total": 0, "pct": None}},
            "drift": {"drifted": False, "pairs": [], "changes": []},
            "metrics": {},
        }
    for rt, arm, cls, sev, n, _ in guard_rows:
        g = routes[rt][arm]["guards"]
        g["failures"] += n
        g["by_class"][cls] = g["by_class"].get(cls, 0) + n
        g["by_severity"][sev] = g["by_severity"].get(sev, 0) + n
        g["by_class_severity"].append({"class": cls, "severity": sev, "failures": n})
    for rt, arm, n in guard_req_rows:
        a = routes[rt][arm]
        a["guards"]["requests_failed"] = n
        a["guards"]["rate"] = n / a["requests"] if a["requests"] else None
    for rt, variant, model, fp, f0, f1, n in drift_rows:
        if variant in routes[rt]:
            routes[rt][variant]["drift"]["pairs"].append(
                {"model_served": model, "system_fingerprint": fp, "first_seen": f0, "last_seen": f1, "attempts": n})
    mixed: dict[str, int] = defaultdict(int)
    for rt, arm, n in ep_rows:
        if arm is None:
            mixed[rt] += n
        elif arm in routes[rt]:
            routes[rt][arm]["episodes"] = n
            routes[rt][arm]["coverage"]["episodes"] = {"with_outcome": 0, "total": n, "pct": 0.0 if n else None}
    for rt, arm, kind, received, subjects in cov_rows:
        a = routes[rt].get(arm)
        if a is None:
            continue
        a["outcomes_received"] += received
        cov = a["coverage"][kind]
        cov["with_outcome"] = subjects
        cov["pct"] = 100.0 * subjects / cov["total"] if cov["total"] else None

    # ---- outcome sums per (route, arm, metric) and per bucket
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    series: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(dict)
    mixed_outcomes: dict[str, int] = defaultdict(int)
    tagged = [("inference", r) for r in inf_rows] + [("episode", r) for r in epo_rows]
    for row_level, (rt, arm, metric, b, n, s, ss, _) in tagged:
        if arm is None:
            mixed_outcomes[rt] += n
            continue
        if defs.get(metric, {}).get("level", row_level) != row_level:
            continue  # stored at another level than the policy declares
        acc = sums[(rt, arm, metric)]
        acc[0] += n
        acc[1] += s
        acc[2] += ss
        point = series[(rt, arm, metric)].setdefault(int(b), [0, 0.0])
        point[0] += n
        point[1] += s

    # ---- assemble routes
    out_routes = []
    for rt in sorted(routes):
        arms = routes[rt]
        names = sorted(arms)
        control = (controls or {}).get(rt)
        if control not in arms:
            control = names[0]
        ordered = [control, *[n for n in names if n != control]]
        warnings: list[str] = []
        for name in ordered:
            a = arms[name]
            a["is_control"] = name == control
            pairs = a["drift"]["pairs"]
            if len(pairs) > 1:
                a["drift"]["drifted"] = True
                a["drift"]["changes"] = [
                    {"at": p["first_seen"], "to": {"model_served": p["model_served"],
                                                   "system_fingerprint": p["system_fingerprint"]}}
                    for p in pairs[1:]]
                warnings.append(f"served-model drift in '{name}': {len(pairs)} (model, fingerprint) pairs")
            for metric, d in defs.items():
                n, s, ss = sums.get((rt, name, metric), (0, 0.0, 0.0))
                n = int(n)
                if d["type"] == "boolean":
                    succ = int(round(s))
                    a["metrics"][metric] = {"n": n, "successes": succ, "rate": succ / n if n else None,
                                            "interval": list(wilson_interval(succ, n))}
                else:
                    mean = s / n if n else None
                    var = _var(n, s, ss)
                    a["metrics"][metric] = {"n": n, "mean": mean, "variance": var if n >= 2 else None,
                                            "interval": _mean_interval(mean, var, n) if n else [None, None]}
        # success metric for cost per successful task
        succ_metric = (success_metrics or {}).get(rt)
        if succ_metric not in defs:
            candidates = [m for m, d in defs.items() if d["type"] == "boolean" and d["goal"] == "maximize"
                          and any(sums.get((rt, x, m), (0,))[0] for x in names)]
            candidates.sort(key=lambda m: (defs[m]["level"] != "inference", m))
            succ_metric = candidates[0] if candidates else None
        for name in ordered:
            c = arms[name]["cost"]
            c["success_metric"] = succ_metric
            rate = arms[name]["metrics"].get(succ_metric, {}).get("rate") if succ_metric else None
            if c["per_request_usd"] is not None and rate:
                c["per_success_usd"] = c["per_request_usd"] / rate

        # comparisons
        comparisons = []
        used = [m for m in defs if any(sums.get((rt, x, m), (0,))[0] for x in names)]
        for cand in ordered[1:]:
            group = []
            for metric in used:
                d = defs[metric]
                mc, mx = arms[control]["metrics"][metric], arms[cand]["metrics"][metric]
                metric_mde = mde.get(metric) if isinstance(mde, Mapping) else None
                if d["type"] == "boolean":
                    m_ = metric_mde if metric_mde is not None else (
                        mde if isinstance(mde, (int, float)) else DEFAULT_MDE)
                    v = verdict(mc["successes"], mc["n"], mx["successes"], mx["n"], goal=d["goal"], mde=m_,
                                alpha=alpha)
                    cv, xv = mc["rate"], mx["rate"]
                else:
                    base = abs(mc["mean"]) if mc["mean"] else 0.0
                    m_ = metric_mde if metric_mde is not None else (FLOAT_MDE_FRACTION * base or 1e-9)
                    v = verdict_means(mc["mean"] or 0.0, mc["variance"] or 0.0, mc["n"], mx["mean"] or 0.0,
                                      mx["variance"] or 0.0, mx["n"], mde=m_, goal=d["goal"], alpha=alpha)
                    cv, xv = mc["mean"], mx["mean"]
                group.append((metric, d, v, cv, xv))
            adjusted = holm([g[2].sequential_p for g in group]) if len(group) > 1 else [g[2].sequential_p for g in group]
            for (metric, d, v, cv, xv), p_adj in zip(group, adjusted):
                raw_p = v.sequential_p
                if len(group) > 1:
                    v = _decide(goal=v.goal, diff=v.diff, interval=v.interval, p_value=v.p_value, seq_p=p_adj,
                                cs=v.confidence_sequence, n1=v.n_control, n2=v.n_candidate, needed=v.needed_n,
                                mde=v.mde, alpha=v.alpha, min_n=DEFAULT_MIN_N)
                comparisons.append({
                    "metric": metric, "type": d["type"], "level": d["level"], "goal": d["goal"],
                    "control": control, "candidate": cand, "control_value": cv, "candidate_value": xv,
                    "diff": v.diff, "interval": _interval(v.interval), "p_value": v.p_value,
                    "sequential_p": raw_p,
                    "sequential_p_adjusted": p_adj, "confidence_sequence": _interval(v.confidence_sequence),
                    "n_control": v.n_control, "n_candidate": v.n_candidate, "mde": v.mde, "alpha": v.alpha,
                    "needed_n": v.needed_n, "more_needed": v.more_needed,
                    "verdict": v.label, "code": v.code, "reason": v.reason, "meaning": MEANINGS[v.code],
                })

        # SRM
        srm = None
        w = (weights or {}).get(rt)
        if w:
            variants = [x for x in w if w[x] > 0]
            if len(variants) >= 2:
                observed = [arms[x]["requests"] if x in arms else 0 for x in variants]
                chi2, p = chi_square_srm(observed, [w[x] for x in variants])
                srm = {"weights": {x: w[x] for x in variants}, "observed": dict(zip(variants, observed)),
                       "chi2": chi2, "p": p, "threshold": SRM_ALPHA, "warning": p < SRM_ALPHA}
                if p < SRM_ALPHA:
                    warnings.append(f"sample-ratio mismatch: observed {observed} vs weights "
                                    f"{[w[x] for x in variants]} (chi-square p = {p:.2g} < {SRM_ALPHA}); "
                                    "the split is not behaving as configured — do not trust comparisons")
        if mixed[rt]:
            warnings.append(f"{mixed[rt]} episode(s) saw more than one variant (policy changed mid-episode): "
                            f"excluded from episode-level figures ({mixed_outcomes[rt]} outcome(s) dropped)")
        timeline = [{"variant": arm, "metric": metric,
                     "points": [{"t": b * bucket, "n": int(p[0]), "sum": p[1]} for b, p in sorted(pts.items())]}
                    for (r_, arm, metric), pts in sorted(series.items()) if r_ == rt]
        out_routes.append({
            "route": rt, "control": control, "arms": [arms[x] for x in ordered],
            "episodes_mixed": mixed[rt], "episodes_mixed_outcomes": mixed_outcomes[rt],
            "srm": srm, "comparisons": comparisons,
            "multiple_comparisons": "holm" if len(used) > 1 else None,
            "timeline": timeline, "warnings": warnings,
        })
    timings["total"] = time.perf_counter() - started
    return {
        "generated_at": time.time(),
        "filters": {"route": route, "since": since, "until": until},
        "window": {"first_request_at": first, "last_request_at": last, "bucket_seconds": bucket,
                   "bucket": "hour" if bucket == 3600.0 else "day"},
        "metrics": defs,
        "alpha": alpha,
        "multiple_comparisons": "holm",
        "routes": out_routes,
        "notes": [
            "arm = variant of each request's attempt 1 (intention-to-treat); shadow attempts not counted",
            "episodes that saw more than one variant are excluded from episode-level figures (episodes_mixed)",
            "latest outcome per (subject, metric) counts; corrections override",
            "verdicts use the always-valid mSPRT p-value; with several metrics it is Holm-adjusted across "
            "the route's metrics per comparison",
            "percentiles are nearest-rank over served attempts",
        ],
        "timings": timings,
    }
