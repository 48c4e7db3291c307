"""The overview's and the route page's figures: the report engine's JSON, regrouped for people.

Nothing is computed twice: every figure comes from `build_report` + `policy_sections` (what
`GET /v1/reports` returns), except the charts over time (`_series`), whose buckets add up to the
same totals. What the pages add is arrangement — which metric is a route's success measure, each
arm's share of traffic next to the share it was configured to get, and the alerts gathered in one
list (sample-ratio mismatch, drift, judge budget, untrusted and same-family judges).
"""

from __future__ import annotations

from typing import Any

from proxy.reports import build_report, policy_sections, report_inputs
from proxy.ui._series import route_series

__all__ = ["full_report", "overview_data", "route_data"]


async def full_report(gateway: Any, route: str | None = None, since: float | None = None,
                      until: float | None = None) -> dict[str, Any]:
    """Exactly what `GET /v1/reports[/{route}]` returns for the same filters."""
    report = await build_report(gateway.store, route=route, since=since, until=until,
                                **report_inputs(gateway.policy))
    report.update(await policy_sections(gateway.store, gateway.policy, route=route, since=since, until=until))
    return report


def _configured_shares(config: Any, canary: dict[str, Any] | None) -> dict[str, float]:
    """variant -> percent of traffic the policy (and a canary's current stage) sends it."""
    if config is None:
        return {}
    if config.split is not None:
        return {k: float(v) for k, v in config.split.items()}
    if config.canary is not None:
        stage = float(canary["stage"]) if canary else float(config.canary.stages[0])
        return {config.canary.baseline: 100.0 - stage, config.canary.candidate: stage}
    return {config.model: 100.0}


def _untrusted(scores: dict[str, Any], route: str) -> list[str]:
    alerts: dict[str, str] = {}
    for scorers in (scores.get("routes") or {}).get(route, {}).values():
        for name, fig in scorers.items():
            if fig.get("kind") == "llm_judge" and not fig.get("trusted"):
                alerts.setdefault(name, f"judge '{name}' is UNTRUSTED ({fig.get('trust')}): its pass rates are shown, "
                                        "never used for a verdict")
    return [alerts[k] for k in sorted(alerts)]


def _route_alerts(r: dict[str, Any] | None, scores: dict[str, Any], route: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if r is not None:
        if r["srm"] and r["srm"]["warning"]:
            out.append({"kind": "srm", "message": next(w for w in r["warnings"] if w.startswith("sample-ratio"))})
        for a in r["arms"]:
            if a["drift"]["drifted"]:
                pairs = "; ".join(f"{p['model_served']} / {p['system_fingerprint']}" for p in a["drift"]["pairs"])
                out.append({"kind": "drift", "message": f"served-model drift in '{a['variant']}': {pairs}"})
        if r["episodes_mixed"]:
            out.append({"kind": "mixed_episodes", "message": next(w for w in r["warnings"] if "episode(s)" in w)})
    out += [{"kind": "untrusted_judge", "message": m} for m in _untrusted(scores, route)]
    for warning in scores.get("warnings") or []:
        if f"route '{route}'" in warning:
            out.append({"kind": "judge_family", "message": warning})
    return out


def _global_alerts(scores: dict[str, Any], routes: list[str]) -> list[dict[str, str]]:
    """The judge budget, and judge warnings that name no route (those about a route are shown with it)."""
    out = []
    for warning in scores.get("warnings") or []:
        if warning.startswith("judge budget"):
            out.append({"kind": "judge_budget", "message": warning})
        elif not any(f"route '{r}'" in warning for r in routes):
            out.append({"kind": "judge_family", "message": warning})
    return out


def _arm_row(a: dict[str, Any], total: int, configured: dict[str, float], metric: str | None) -> dict[str, Any]:
    m = a["metrics"].get(metric) if metric else None
    return {"variant": a["variant"], "is_control": a["is_control"], "requests": a["requests"],
            "share": a["requests"] / total if total else None,
            "configured_share": configured[a["variant"]] / 100 if a["variant"] in configured else None,
            "success": ({"n": m["n"], "successes": m["successes"], "rate": m["rate"], "interval": m["interval"]}
                        if m is not None and "rate" in m else None),
            "guard_rate": a["guards"]["rate"], "error_rate": a["error_rate"],
            "latency_p95_ms": a["latency_ms"]["p95"], "cost_per_success_usd": a["cost"]["per_success_usd"]}


def _route_summary(name: str, config: Any, r: dict[str, Any] | None, canary: dict[str, Any] | None,
                   scores: dict[str, Any]) -> dict[str, Any]:
    configured = _configured_shares(config, canary)
    metric = None
    if config is not None and config.canary is not None:
        metric = config.canary.success_metric
    elif r is not None and r["arms"]:
        metric = r["arms"][0]["cost"]["success_metric"]
    total = sum(a["requests"] for a in r["arms"]) if r else 0
    return {
        "route": name,
        "kind": config.kind if config is not None else "not_in_policy",
        "control": r["control"] if r else (config.control if config is not None else None),
        "variants": list(config.variants) if config is not None else [a["variant"] for a in (r or {}).get("arms", [])],
        "split": dict(config.split) if config is not None and config.split is not None else None,
        "canary": ({"stage": canary["stage"], "status": canary["status"], "baseline": canary["baseline"],
                    "candidate": canary["candidate"]} if canary else None),
        "shadow": ({"model": config.shadow.model, "rate": config.shadow.rate}
                   if config is not None and config.shadow is not None else None),
        "requests": total,
        "success_metric": metric,
        "arms": [_arm_row(a, total, configured, metric) for a in (r["arms"] if r else [])],
        "verdicts": [{k: c[k] for k in ("metric", "control", "candidate", "control_value", "candidate_value", "diff",
                                        "sequential_p_adjusted", "verdict", "code")}
                     for c in (r["comparisons"] if r else [])],
        "alerts": _route_alerts(r, scores, name),
    }


async def overview_data(gateway: Any) -> dict[str, Any]:
    """Every route of the policy (and any with records but no longer in it), one summary each."""
    report = await full_report(gateway)
    by_route = {r["route"]: r for r in report["routes"]}
    canaries = {c["route"]: c for c in report["canary"]}
    policy = gateway.policy
    names = sorted(set(policy.routes) | set(by_route))
    return {
        "generated_at": report["generated_at"],
        "window": report["window"],
        "routes": [_route_summary(n, policy.routes.get(n), by_route.get(n), canaries.get(n), report["scores"])
                   for n in names],
        "alerts": _global_alerts(report["scores"], names),
        "judge_budget": report["scores"].get("judge_budget"),
    }


async def route_data(gateway: Any, route: str, since: float | None, until: float | None) -> dict[str, Any] | None:
    """Everything the engine computes for one route, plus its series over time; None: unknown route."""
    report = await full_report(gateway, route, since, until)
    r = next((x for x in report["routes"] if x["route"] == route), None)
    config = gateway.policy.routes.get(route)
    if r is None and config is None:
        return None
    canary = next((c for c in report["canary"] if c["route"] == route), None)
    bucket = report["window"]["bucket_seconds"]
    return {
        "route": route,
        "generated_at": report["generated_at"],
        "filters": report["filters"],
        "window": report["window"],
        "metrics": report["metrics"],
        "summary": _route_summary(route, config, r, canary, report["scores"]),
        "report": r,
        "scores": (report["scores"].get("routes") or {}).get(route, {}),
        "score_warnings": report["scores"].get("warnings") or [],
        "judge_budget": report["scores"].get("judge_budget"),
        "shadows": report["shadows"],
        "canary": canary,
        "series": (await route_series(gateway.store, r, report["metrics"], bucket, route=route, since=since,
                                      until=until) if r is not None else None),
        "notes": report["notes"],
    }
