"""The canary controller: every `evaluate_every_s`, for each canary route that is `running`, the
report's figures per arm -> `decide` -> the decision and the new stage written to the store
(which every serving process reads). Only the process holding the store's lease decides, so
replicas never take the same decision twice; the others keep serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from typing import Any

import structlog

from proxy.canary._decide import ArmFigures, CanaryFigures, Decision, decide
from proxy.canary._state import decision_rows, read_stages, stage_of, stage_started_at

__all__ = ["arm_figures", "evaluate", "run_controller"]

log = structlog.get_logger("sluicegate.canary")

LEASE = "canary-controller"
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def arm_figures(arm: dict[str, Any], success_metric: str) -> ArmFigures:
    """One arm of the report as the decision's figures (cumulative since the canary started)."""
    metric = arm["metrics"].get(success_metric) or {}
    n = int(metric.get("n") or 0)
    rate = metric.get("rate")
    guards = arm["guards"]
    critical = sum(x["failures"] for x in guards["by_class_severity"] if x["severity"] == "critical")
    return ArmFigures(successes=round((rate or 0.0) * n), outcomes=n, requests=int(arm["requests"]),
                      guard_failures=int(guards["requests_failed"]), critical_failures=int(critical),
                      latency_p95_ms=arm["latency_ms"].get("p95"))


async def _arms(store: Any, policy: Any, route: str, since: float | None = None) -> dict[str, dict[str, Any]]:
    from proxy.reports import build_report, report_inputs

    report = await build_report(store, route=route, since=since, **report_inputs(policy))
    return {a["variant"]: a for r in report["routes"] for a in r["arms"]}


def _with_stage_outcomes(figures: ArmFigures, arm_at_stage: dict[str, Any] | None, metric: str) -> ArmFigures:
    n = int(((arm_at_stage or {}).get("metrics", {}).get(metric) or {}).get("n") or 0)
    return dataclasses.replace(figures, stage_outcomes=min(figures.outcomes, n))


async def evaluate(store: Any, policy: Any, route_name: str) -> Decision | None:
    """Decide once for one canary route and store the decision when it changes the stage."""
    canary = policy.routes[route_name].canary
    stored = (await read_stages(store)).get(route_name)
    if stored is not None and stored[1] != "running":
        return None  # paused, promoted or rolled back: an operator moves it from here
    stage = stage_of(canary, stored)
    arms = await _arms(store, policy, route_name)
    if canary.baseline not in arms or canary.candidate not in arms:
        return None
    base = arm_figures(arms[canary.baseline], canary.success_metric)
    cand = arm_figures(arms[canary.candidate], canary.success_metric)
    started = await stage_started_at(store, route_name)
    if started is not None and min(base.outcomes, cand.outcomes) >= canary.min_samples:
        # min_samples counts outcomes of requests served at THIS stage: a ramp step must see its own traffic
        # (the tests stay on the cumulative figures, which keeps their always-valid guarantee)
        at_stage = await _arms(store, policy, route_name, since=started)
        base = _with_stage_outcomes(base, at_stage.get(canary.baseline), canary.success_metric)
        cand = _with_stage_outcomes(cand, at_stage.get(canary.candidate), canary.success_metric)
    decision = decide(canary, stage, CanaryFigures(baseline=base, candidate=cand))
    if decision.action != "hold":  # holds are logged, not stored: one every interval would bury the log
        status = {"rollback": "rolled_back", "promoted": "promoted"}.get(decision.action, "running")
        await store.write_records(decision_rows(
            route_name, action=decision.action, from_stage=stage, to_stage=decision.to_stage, status=status,
            rule=decision.rule, reason=decision.reason, figures=decision.figures))
        log.info("canary_decision", route=route_name, action=decision.action, stage_from=stage,
                 stage_to=decision.to_stage, rule=decision.rule)
    return decision


async def run_controller(get_gateway: Any) -> None:
    """Forever: with the lease, evaluate every canary route when it is due."""
    due: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    while True:
        gateway = get_gateway()
        policy = gateway.policy
        routes = {n: r.canary for n, r in policy.routes.items() if r.canary is not None}
        try:
            if routes and await gateway.store.try_lease(LEASE, HOLDER, ttl_s=3 * min(
                    c.evaluate_every_s for c in routes.values())):
                for name, canary in routes.items():
                    if loop.time() >= due.get(name, 0.0):
                        due[name] = loop.time() + canary.evaluate_every_s
                        await evaluate(gateway.store, policy, name)
        except Exception as exc:  # noqa: BLE001 - the controller must never take serving down
            log.warning("canary_controller_error", error=f"{type(exc).__name__}: {exc}"[:300])
        await asyncio.sleep(1.0)
