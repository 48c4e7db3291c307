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
* Unit of analysis = unit of randomization (``_units``): requests are grouped by their sticky key
  (episode, user; a request without one is its own unit); comparisons of metrics (when units hold
  several outcomes), guard failures, errors, coverage and latency use per-unit sums and the
  cluster-robust ``ratio_estimate``; each arm's ``UnitSums`` are in the report (``unit_sums``).
* Periods: where the allocation changed in the window (policy version, canary stage, ``periods``
  given by the caller) the comparisons are stratified over the periods (``stratified_estimate``,
  plus the covariance of units active in several periods), never pooled; ``split_changes`` says when.
* SRM: chi-square of **assignment units** (distinct sticky keys; lone requests count one each) per
  period against the weights in force (split weights of the current policy version; a canary's
  stage), Bonferroni over the periods tested; warning at p < 0.001.
* Multiplicity: Holm over every candidate × metric comparison of the route (``holm_verdicts``).
* Coverage: a warning when the share of requests (or episodes) with an outcome differs between arms
  beyond noise (``coverage_check``: always-valid, at α = 0.01).
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
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.config import DEFAULT_STICKY_BY

from . import _queries as q
from ._estimates import always_valid, proportion_estimate, stratified_estimate
from ._stats import student_t_quantile, wilson_interval
from ._units import (
    SRM_ALPHA,
    FigureSums,
    Period,
    allocation_periods,
    estimate_over_periods,
    figures_json,
    srm_on_units,
    unit_figures,
    unit_label,
)
from ._verdict import (
    DEFAULT_COVERAGE_ALPHA,
    DEFAULT_MDE,
    _coverage,  # noqa: PLC2701 — the coverage message and test on a stratified estimate
    coverage_check,
    coverage_check_units,
    holm_verdicts,
    verdict,
    verdict_estimate,
    verdict_means,
)

__all__ = ["CHECK_FIGURES", "MEANINGS", "SRM_ALPHA", "build_report", "report_inputs"]

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
    """``metrics``, ``controls``, ``weights``, ``success_metrics``, ``sticky_by``, ``canaries`` and
    ``policy_version`` for ``build_report`` from a loaded policy."""
    if policy is None:
        return {}
    controls, weights, success, sticky, canaries = {}, {}, {}, {}, {}
    for name, route in policy.routes.items():
        controls[name] = route.control
        sticky[name] = tuple(route.sticky_by)
        if route.split is not None and len(route.split) > 1:
            weights[name] = dict(route.split)
        canary = getattr(route, "canary", None)
        metric = getattr(canary, "success_metric", None) if canary is not None else None
        if metric:
            success[name] = metric
        if canary is not None:
            canaries[name] = {"baseline": canary.baseline, "candidate": canary.candidate,
                              "stages": [float(x) for x in canary.stages]}
    return {"metrics": {k: _metric_def(v) for k, v in policy.metrics.items()}, "controls": controls,
            "weights": weights, "success_metrics": success, "sticky_by": sticky, "canaries": canaries,
            "policy_version": getattr(policy, "version", None)}


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


async def _allocation_queries(store: Any, timings: dict[str, float], route: str | None, since: float | None,
                              until: float | None) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Where the allocation may have changed: policy versions seen, canary decisions and stored stages
    (second read lane, while the first builds the snapshot)."""
    sql, params = q.policy_versions(store.dialect, route, since, until)
    versions = await _timed(timings, "policy_versions", store, sql, params, lane=1)
    sql, params = q.canary_changes(route, until)
    decisions = await _timed(timings, "canary_changes", store, sql, params, lane=1)
    states = await _timed(timings, "canary_state", store, "SELECT route, stage, updated_at FROM canary_state",
                          lane=1)
    return versions, decisions, states


def _route_periods(arm_rows: list[tuple], versions: list[tuple], decisions: list[tuple], states: list[tuple],
                   canaries: Mapping[str, Mapping[str, Any]], extra_cuts: Sequence[float]
                   ) -> dict[str, tuple[list[float], list[Period], list[dict[str, Any]]]]:
    """route -> (cuts, periods, allocation changes) — see ``_units.allocation_periods``."""
    span: dict[str, list[float]] = {}
    for row in arm_rows:
        lo, hi = span.setdefault(row[0], [row[12], row[13]])
        span[row[0]] = [min(lo, row[12]), max(hi, row[13])]
    by_route_v: dict[str, list[tuple]] = defaultdict(list)
    for rt, version, f0, f1, n in versions:
        by_route_v[rt].append((version, f0, f1, n))
    by_route_d: dict[str, list[tuple]] = defaultdict(list)
    for rt, at, frm, to, action in decisions:
        by_route_d[rt].append((at, frm, to, action))
    state = {rt: (float(stage), float(at)) for rt, stage, at in states}
    out = {}
    for rt, (first, last) in span.items():
        canary = canaries.get(rt)
        first_stage = float(canary["stages"][0]) if canary and canary.get("stages") else None
        out[rt] = allocation_periods(by_route_v.get(rt, []), by_route_d.get(rt, []) if canary else [],
                                     state.get(rt) if canary else None, first_stage, extra_cuts, first, last)
    return out


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _sums_json(sums: Any) -> dict[str, float]:
    return {"units": sums.units, "y": sums.y, "m": sums.m, "yy": sums.yy, "mm": sums.mm, "ym": sums.ym}


def _unit_section(rt: str, arms: dict[str, dict[str, Any]], ordered: list[str], figs: Mapping[str, FigureSums],
                  kinds: Mapping[str, Mapping[str, tuple[int, int]]], outcome_units: Mapping[tuple[str, str, str], int],
                  specs: Sequence[str]) -> dict[str, Any]:
    """Each arm's units (by kind) and its ``UnitSums`` over the window; the route's unit label."""
    route_kinds: dict[str, int] = defaultdict(int)
    for name in ordered:
        a = arms[name]
        by_kind = kinds.get(name, {})
        total = sum(n for n, _ in by_kind.values())
        with_lat = sum(n for _, n in by_kind.values())
        for k, (n, _) in by_kind.items():
            route_kinds[k] += n
        a["units"] = {"total": total, "with_latency": with_lat,
                      "by_kind": {q.UNIT_KINDS.get(k, k): n for k, (n, _) in sorted(by_kind.items())}}
        pooled: dict[str, Any] = {}
        for fig_name in q.UNIT_FIGURES:
            fig = figs.get(fig_name)
            if fig is not None:
                pooled[fig_name] = _sums_json(fig.pooled(name, with_lat if fig_name == "log_latency" else total))
        pooled["metrics"] = {}
        for fig_name, fig in figs.items():
            if fig_name.startswith("metric:") and any(arm == name for _, arm in fig.cells):
                metric = fig_name.split(":", 1)[1]
                pooled["metrics"][metric] = _sums_json(fig.pooled(name, outcome_units.get((rt, name, metric))))
        a["unit_sums"] = pooled
        for metric, m in a["metrics"].items():
            m["units"] = outcome_units.get((rt, name, metric), 0)
    main = max(route_kinds, key=lambda k: route_kinds[k]) if route_kinds else "q"
    return {"label": unit_label(specs, route_kinds), "sticky_by": list(specs),
            "kinds": {q.UNIT_KINDS.get(k, k): n for k, n in sorted(route_kinds.items())},
            "counted_in": {"e": "episodes", "u": "users", "b": "units", "q": "requests"}.get(main, "units")}


def _clustered(fig: FigureSums | None, arms: Sequence[str]) -> bool:
    """Whether a figure needs the unit-level analysis: some unit holds more than one outcome, or there
    are several periods, or units seen in two cells. Else every unit is one outcome and the classical
    per-outcome tests (Newcombe, z, Welch) are the same analysis."""
    if fig is None:
        return False
    cells = {k: v for k, v in fig.cells.items() if k[1] in arms}
    if len({p for p, _ in cells}) > 1:
        return True
    if any(a in arms and b in arms for _, a, _, b in fig.cross):
        return True
    return any(s.units != s.m for s in cells.values())


def _comparisons(rt: str, arms: dict[str, dict[str, Any]], control: str, ordered: list[str],
                 defs: Mapping[str, dict[str, Any]], sums: Mapping[tuple[str, str, str], list[float]],
                 figs: Mapping[str, FigureSums], mde: float | Mapping[str, float] | None,
                 alpha: float, units_word: str = "units") -> list[dict[str, Any]]:
    """Every candidate × metric verdict of the route, Holm-adjusted as one family. A clustered
    comparison counts units (``units_word``: "users", …), not outcomes, in its label and reason."""
    names = list(arms)
    used = [m for m in defs if any(sums.get((rt, x, m), (0,))[0] for x in names)]
    rows, verdicts = [], []
    for cand in ordered[1:]:
        for metric in used:
            d = defs[metric]
            mc, mx = arms[control]["metrics"][metric], arms[cand]["metrics"][metric]
            metric_mde = mde.get(metric) if isinstance(mde, Mapping) else None
            boolean = d["type"] == "boolean"
            if boolean:
                m_ = metric_mde if metric_mde is not None else (mde if isinstance(mde, (int, float)) else DEFAULT_MDE)
                cv, xv = mc["rate"], mx["rate"]
            else:
                base = abs(mc["mean"]) if mc["mean"] else 0.0
                m_ = metric_mde if metric_mde is not None else (FLOAT_MDE_FRACTION * base or 1e-9)
                cv, xv = mc["mean"], mx["mean"]
            fig = figs.get(f"metric:{metric}")
            clustered = _clustered(fig, (control, cand))
            if clustered and fig is not None:
                est, strata = estimate_over_periods(fig, control, cand, edge_safe=boolean,
                                                    units=(mc.get("units", 0), mx.get("units", 0)))
                v = verdict_estimate(est, goal=d["goal"], mde=m_, alpha=alpha,
                                     bounds=(-1.0, 1.0) if boolean else (-math.inf, math.inf))
                periods = sum(1 for e in strata if e.n_baseline and e.n_candidate)
            elif boolean:
                v = verdict(mc["successes"], mc["n"], mx["successes"], mx["n"], goal=d["goal"], mde=m_, alpha=alpha)
                periods = 1
            else:
                v = verdict_means(mc["mean"] or 0.0, mc["variance"] or 0.0, mc["n"], mx["mean"] or 0.0,
                                  mx["variance"] or 0.0, mx["n"], mde=m_, goal=d["goal"], alpha=alpha)
                periods = 1
            verdicts.append(v)
            rows.append((metric, d, cand, cv, xv, clustered, periods))
    out = []
    for (metric, d, cand, cv, xv, clustered, periods), raw, v in zip(rows, verdicts, holm_verdicts(verdicts)):
        label, reason = v.label, v.reason
        if clustered:
            label, reason = label.replace(" outcomes", f" {units_word}"), reason.replace(" outcomes", f" {units_word}")
        out.append({
            "metric": metric, "type": d["type"], "level": d["level"], "goal": d["goal"],
            "control": control, "candidate": cand, "control_value": cv, "candidate_value": xv,
            "diff": v.diff, "interval": _interval(v.interval), "p_value": v.p_value,
            "sequential_p": raw.sequential_p, "sequential_p_adjusted": v.sequential_p,
            "confidence_sequence": _interval(v.confidence_sequence),
            "n_control": v.n_control, "n_candidate": v.n_candidate, "mde": v.mde, "alpha": v.alpha,
            "needed_n": v.needed_n, "more_needed": v.more_needed,
            "needed_control": v.needed_control, "needed_candidate": v.needed_candidate,
            "more_control": v.more_control, "more_candidate": v.more_candidate,
            "comparisons": v.comparisons,
            "analysis": {"clustered": clustered, "periods": periods,
                         "counted_in": "units" if clustered else "outcomes",
                         "method": ("cluster-robust ratio per period, stratified" if clustered and periods > 1
                                    else "cluster-robust ratio (delta method over units)" if clustered
                                    else "independent outcomes")},
            "verdict": label, "code": v.code, "reason": reason, "meaning": MEANINGS[v.code],
        })
    return out


CHECK_FIGURES = {  # figure -> (what it is, goal): the request-level figures a canary's rules read
    "errors": ("requests that got no answer", "minimize"),
    "guard_failures": ("requests with a failed guard", "minimize"),
    "critical_failures": ("requests with a critical guard failure", "minimize"),
    "log_latency": ("mean log latency of served requests (ratio of geometric means)", "minimize"),
}


def _checks(arms: dict[str, dict[str, Any]], control: str, ordered: list[str], figs: Mapping[str, FigureSums],
            alpha: float) -> list[dict[str, Any]]:
    """candidate − control on the request-level figures, per unit and stratified: difference,
    always-valid p and confidence sequence (shown; the canary's rules decide on them)."""
    out = []
    for cand in ordered[1:]:
        for name, (what, goal) in CHECK_FIGURES.items():
            fig = figs.get(name)
            if fig is None:
                continue
            base = arms[control]["unit_sums"].get(name)
            other = arms[cand]["unit_sums"].get(name)
            if not base or not other or not base["m"] or not other["m"]:
                continue
            est, strata = estimate_over_periods(fig, control, cand, edge_safe=name != "log_latency",
                                                units=(int(base["units"]), int(other["units"])))
            res = always_valid(est, confidence=1.0 - alpha)
            row = {"figure": name, "what": what, "goal": goal, "control": control, "candidate": cand,
                   "control_value": base["y"] / base["m"], "candidate_value": other["y"] / other["m"],
                   "diff": est.diff, "sequential_p": res.p_value,
                   "confidence_sequence": _interval((res.low, res.high)),
                   "n_control": est.n_baseline, "n_candidate": est.n_candidate,
                   "periods": sum(1 for e in strata if e.n_baseline and e.n_candidate)}
            if name == "log_latency":
                row.update(control_value=math.exp(row["control_value"]),
                           candidate_value=math.exp(row["candidate_value"]),
                           ratio=math.exp(est.diff),
                           ratio_confidence_sequence=[_num(math.exp(res.low)) if math.isfinite(res.low) else 0.0,
                                                      _num(math.exp(res.high)) if math.isfinite(res.high) else None])
            out.append(row)
    return out


def _coverage_checks(control: str, ordered: list[str], figs: Mapping[str, FigureSums],
                     episodes: Mapping[tuple[int, str], tuple[int, int]]) -> list[dict[str, Any]]:
    """Does the share of requests (episodes) with an outcome differ between arms beyond noise? Requests
    per unit and stratified; episodes per period (each episode in the period it started in)."""
    out = []
    fig = figs.get("coverage")
    for cand in ordered[1:]:
        if fig is not None and any(s.y for (_, a), s in fig.cells.items() if a in (control, cand)):
            base, other = fig.pooled(control), fig.pooled(cand)
            if len(fig.periods()) > 1 or any(x in (control, cand) and y in (control, cand)
                                             for _, x, _, y in fig.cross):
                est, _ = estimate_over_periods(fig, control, cand)
                check = _coverage(est, base.y / base.m if base.m else None, other.y / other.m if other.m else None,
                                  "requests", DEFAULT_COVERAGE_ALPHA)
            else:
                check = coverage_check_units(base, other, subject="requests")
            out.append({"subject": "requests", "control": control, "candidate": cand, **_check_json(check)})
        cells = {k: v for k, v in episodes.items() if k[1] in (control, cand)}
        if any(c for _, c in cells.values()):
            per = sorted({p for p, _ in cells})
            tot = {a: [sum(cells.get((p, a), (0, 0))[i] for p in per) for i in (0, 1)] for a in (control, cand)}
            if len(per) > 1:
                strata = [proportion_estimate(cells.get((p, control), (0, 0))[1], cells.get((p, control), (0, 0))[0],
                                              cells.get((p, cand), (0, 0))[1], cells.get((p, cand), (0, 0))[0])
                          for p in per]
                est = stratified_estimate(strata)
                rc = tot[control][1] / tot[control][0] if tot[control][0] else None
                rx = tot[cand][1] / tot[cand][0] if tot[cand][0] else None
                check = _coverage(est, rc, rx, "episodes", DEFAULT_COVERAGE_ALPHA)
            else:
                check = coverage_check(tot[control][1], tot[control][0], tot[cand][1], tot[cand][0],
                                       subject="episodes")
            out.append({"subject": "episodes", "control": control, "candidate": cand, **_check_json(check)})
    return out


def _check_json(check: Any) -> dict[str, Any]:
    return {"rate_control": check.rate_control, "rate_candidate": check.rate_candidate, "diff": check.diff,
            "p_value": check.p_value, "confidence_sequence": _interval(check.confidence_sequence),
            "alpha": check.alpha, "warning": check.warning, "message": check.message}


def _period_weights(period: Period, weights: Mapping[str, float] | None, canary: Mapping[str, Any] | None,
                    policy_version: str | None, only: bool) -> tuple[dict[str, float] | None, str]:
    """The allocation in force in a period, and where it comes from; None when it is not known: a period
    of another policy version than the current one, when the window also holds others (the weights of
    a version are not stored; with a single period the current weights are assumed, as before)."""
    if canary is not None and period.canary_stage is not None:
        stage = float(period.canary_stage)
        return {canary["baseline"]: 100.0 - stage, canary["candidate"]: stage}, f"canary stage {stage:g}%"
    if weights:
        versions = [v for v in period.policy_versions if v is not None]
        if policy_version is None or all(v == policy_version for v in versions):
            return dict(weights), "split weights"
        if only:
            return dict(weights), ("split weights of the current policy (the records are of version(s) "
                                   f"{', '.join(map(str, versions))})")
        return None, f"weights of policy version(s) {', '.join(map(str, versions))} not known"
    return None, "no split"


def _srm_and_periods(rt: str, periods: list[Period], figs: Mapping[str, FigureSums],
                     weights: Mapping[str, float] | None, canary: Mapping[str, Any] | None,
                     policy_version: str | None, unit: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Per period: units and requests per arm, and the sample-ratio check on units against the weights
    in force. The route's ``srm`` is the period with the smallest p, at the threshold Bonferroni-divided
    by the number of periods tested (so the alarm rate stays at most the threshold)."""
    cells = figs.get("errors", FigureSums()).cells
    out, tests = [], []
    only = len({p for p, _ in cells}) <= 1
    for per in periods:
        arms_ = {arm: {"units": s.units, "requests": int(s.m)} for (p, arm), s in sorted(cells.items())
                 if p == per.index}
        w, source = _period_weights(per, weights, canary, policy_version, only)
        test = srm_on_units({a: v["units"] for a, v in arms_.items()}, w) if w and arms_ else None
        if test is not None:
            test.update(period=per.index, weights_from=source, unit=unit,
                        observed_requests={a: arms_.get(a, {}).get("requests", 0) for a in test["weights"]})
            tests.append(test)
        out.append({"index": per.index, "start": per.start, "end": per.end, "because": per.because,
                    "policy_versions": per.policy_versions, "canary_stage": per.canary_stage,
                    "weights": w, "weights_from": source, "arms": arms_, "srm": test})
    if not tests:
        return None, out
    threshold = SRM_ALPHA / len(tests)
    for t in tests:
        t["threshold"] = threshold
        t["warning"] = t["p"] < threshold
    worst = min(tests, key=lambda t: t["p"])
    return {**worst, "periods_tested": len(tests)}, out


async def build_report(store: Any, *, route: str | None = None, since: float | None = None,
                       until: float | None = None, metrics: Mapping[str, Any] | None = None,
                       controls: Mapping[str, str] | None = None,
                       weights: Mapping[str, Mapping[str, float]] | None = None,
                       mde: float | Mapping[str, float] | None = None,
                       success_metrics: Mapping[str, str] | None = None,
                       alpha: float = 0.05,
                       sticky_by: Mapping[str, Sequence[str]] | None = None,
                       canaries: Mapping[str, Mapping[str, Any]] | None = None,
                       policy_version: str | None = None,
                       periods: Sequence[float] | None = None) -> dict[str, Any]:
    """The report as a JSON-able dict (every figure). ``metrics``: name → {type, level, goal}
    (policy ``metrics:``; unknown metrics are inferred); ``controls``: route → control variant;
    ``weights``: route → {variant: split weight} (of the policy version ``policy_version``);
    ``mde``: absolute MDE for boolean metrics, or a mapping metric → MDE (in the metric's units);
    ``sticky_by``: route → its sticky entries (default ``DEFAULT_STICKY_BY``), which say what a unit
    is; ``canaries``: route → {baseline, candidate, stages} (a canary's stages are allocations);
    ``periods``: extra boundaries (epoch seconds) to stratify at, e.g. day starts.
    ``report_inputs(policy)`` gives all of these but ``mde`` and ``periods``."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    tag = f"{os.getpid()}_{time.time_ns()}"
    sticky = {rt: tuple(specs) for rt, specs in (sticky_by or {}).items()}
    default_sticky = tuple(DEFAULT_STICKY_BY)

    def unit(alias: str) -> tuple[str, list[Any]]:
        return q.unit_expression(alias, sticky, default_sticky)

    lane1 = asyncio.ensure_future(_outcome_queries(store, timings, route, since, until))
    alloc = asyncio.ensure_future(_allocation_queries(store, timings, route, since, until))
    unit_tables = False
    try:
        for sql, params in q.create_snapshot(store.dialect, tag, route, since, until, unit):
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
        version_rows, decision_rows, state_rows = await alloc
        route_periods = _route_periods(arm_rows, version_rows, decision_rows, state_rows, canaries or {},
                                       periods or ())
        cuts = {rt: v[0] for rt, v in route_periods.items() if v[0]}

        def period(alias: str) -> tuple[str, list[Any]]:
            return q.period_expression(alias, cuts)

        t1 = time.perf_counter()
        unit_tables = True
        for sql, params in [*q.create_units(store.dialect, tag, unit, period, route, since, until),
                            *q.unit_outcomes(store.dialect, tag, unit, period, route, since, until)]:
            await _run(store, sql, params)
        timings["unit_tables"] = time.perf_counter() - t1
        unit_rows = await _timed(timings, "unit_sums", store, q.unit_sums_query(tag))
        unit_cross_rows = await _timed(timings, "unit_cross", store, q.unit_cross_query(tag))
        outcome_unit_rows = await _timed(timings, "outcome_unit_sums", store, q.outcome_sums_query(tag))
        outcome_cross_rows = await _timed(timings, "outcome_unit_cross", store, q.outcome_cross_query(tag))
        unit_count_rows = await _timed(timings, "unit_counts", store, q.unit_counts_query(tag))
        outcome_count_rows = await _timed(timings, "outcome_unit_counts", store, q.outcome_unit_counts_query(tag))
        mixed_unit_rows = await _timed(timings, "mixed_units", store, q.mixed_units_query(tag))
        sql, params = q.episode_coverage_periods(tag, period)
        ep_period_rows = await _timed(timings, "episode_coverage_periods", store, sql, params)
        kind_rows, hourly_rows, cov_req_rows = await lane1
        inf_rows = _rebucket(hourly_rows, int(bucket // 3600))
        cov_rows = cov_req_rows + cov_rows
        timings["aggregates"] = time.perf_counter() - t
    finally:
        for task in (lane1, alloc):
            if not task.done() or task.cancelled():
                await asyncio.gather(task, return_exceptions=True)  # never leave a query running unowned
        drops = [*q.drop_snapshot(store.dialect, tag), *(q.drop_units(store.dialect, tag) if unit_tables else [])]
        for sql in drops:
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

    # ---- units of analysis: per-unit sums per (period, arm), unit counts
    figs = unit_figures(unit_rows, unit_cross_rows, outcome_unit_rows, outcome_cross_rows,
                        {m: d["level"] for m, d in defs.items()})
    unit_kinds: dict[str, dict[str, dict[str, tuple[int, int]]]] = defaultdict(dict)
    for rt, arm, kind, n_units, n_lat in unit_count_rows:
        unit_kinds[rt].setdefault(arm, {})[kind] = (int(n_units or 0), int(n_lat or 0))
    outcome_units: dict[tuple[str, str, str], int] = {}
    for rt, arm, metric, level, n_units in outcome_count_rows:
        if defs.get(metric, {}).get("level", level) == level:
            outcome_units[(rt, arm, metric)] = int(n_units or 0)
    mixed_units: dict[str, dict[int, int]] = defaultdict(dict)
    for rt, per, n in mixed_unit_rows:
        mixed_units[rt][int(per)] = int(n)
    ep_cov: dict[str, dict[tuple[int, str], tuple[int, int]]] = defaultdict(dict)
    for rt, per, arm, total, covered in ep_period_rows:
        ep_cov[rt][(int(per), arm)] = (int(total), int(covered))

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

        unit_info = _unit_section(rt, arms, ordered, figs.get(rt, {}), unit_kinds.get(rt, {}), outcome_units,
                                  sticky.get(rt, default_sticky))
        cuts_, periods_, changes = route_periods.get(rt, ([], [Period(0, None, None, "start of the window")], []))
        comparisons = _comparisons(rt, arms, control, ordered, defs, sums, figs.get(rt, {}), mde, alpha,
                                   unit_info["counted_in"])
        checks = _checks(arms, control, ordered, figs.get(rt, {}), alpha)
        coverage = _coverage_checks(control, ordered, figs.get(rt, {}), ep_cov.get(rt, {}))
        srm, period_json = _srm_and_periods(rt, periods_, figs.get(rt, {}), (weights or {}).get(rt),
                                            (canaries or {}).get(rt), policy_version, unit_info["label"])
        if changes:
            when = "; ".join(f"{c['change']} at {_iso(c['at'])}" for c in changes)
            used_periods = sum(1 for p in period_json if p["arms"])
            warnings.append(f"the allocation changed in the window ({when}): comparisons are stratified over "
                            f"{used_periods} period(s) of constant allocation, never pooled across them")
        if srm is not None and srm["warning"]:
            warnings.append(f"sample-ratio mismatch on assignment units ({unit_info['label']}): observed "
                            f"{srm['observed']} vs weights {srm['weights']} (chi-square p = {srm['p']:.2g} < "
                            f"{srm['threshold']:.2g}); the split is not behaving as configured — do not trust "
                            "comparisons")
        if mixed_units.get(rt):
            n_mixed = sum(mixed_units[rt].values())
            warnings.append(f"{n_mixed} sticky unit(s) had requests in more than one arm within one period "
                            "(a `when:` condition, or a sticky key the records do not show): counted in each arm")
        warnings += [c["message"] for c in coverage if c["warning"]]
        if mixed[rt]:
            warnings.append(f"{mixed[rt]} episode(s) saw more than one variant (policy changed mid-episode): "
                            f"excluded from episode-level figures ({mixed_outcomes[rt]} outcome(s) dropped)")
        timeline = [{"variant": arm, "metric": metric,
                     "points": [{"t": b * bucket, "n": int(p[0]), "sum": p[1]} for b, p in sorted(pts.items())]}
                    for (r_, arm, metric), pts in sorted(series.items()) if r_ == rt]
        out_routes.append({
            "route": rt, "control": control, "arms": [arms[x] for x in ordered],
            "unit": unit_info,
            "episodes_mixed": mixed[rt], "episodes_mixed_outcomes": mixed_outcomes[rt],
            "units_mixed": sum(mixed_units.get(rt, {}).values()),
            "srm": srm, "comparisons": comparisons, "checks": checks, "coverage_checks": coverage,
            "multiple_comparisons": "holm" if len(comparisons) > 1 else None,
            "periods": period_json, "split_changes": changes,
            "unit_sums": figures_json(figs.get(rt, {})),
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
            "unit of analysis = unit of randomization: requests with a sticky key are grouped by it, a request "
            "without one is its own unit; intervals and tests use cluster-robust (delta-method) variances "
            "and the sample-ratio check counts units",
            "where the allocation changed (policy version, canary stage) comparisons are stratified by period",
            "verdicts use the always-valid mSPRT p-value, Holm-adjusted over every candidate × metric "
            "comparison of the route",
            "percentiles are nearest-rank over served attempts",
        ],
        "timings": timings,
    }
