"""The canary controller: every `evaluate_every_s`, for each canary route that is `running`, the run's figures
-> `decide` -> the decision and the new stage written to the store (which every serving process reads).
Only the process holding the store's lease decides, so replicas never take the same decision twice; the
others keep serving.

One evaluation (`evaluate`):

1. the route's run (`proxy.canary._state`): started when there is none; re-created at the first stage when
   the policy's canary now compares something else (`rule: policy_changed`);
2. the run's periods of constant allocation (its stage changes, cut by `stratum_hours`; `_strata.periods`);
3. the run's cells from the store (`_figures.run_data`: requests assigned since the run started, per
   period, arm and sticky unit) and the stratified, cluster-robust estimate per metric (`_strata.stratified`);
4. `decide`; a promote / rollback / promoted decision is written with its figures and the state it leads to.
   Holds are logged, not stored (one every interval would bury the log); `sluicegate canary status` shows the
   current evaluation, plan included.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from typing import Any

import structlog

from proxy.canary._decide import ArmFigures, CanaryFigures, Decision, Evidence, decide
from proxy.canary._figures import ArmTotals, RunData, run_data
from proxy.canary._state import (
    CanaryState,
    decision_rows,
    fingerprint,
    new_run,
    read_state,
    stage_changes,
    start_run,
)
from proxy.canary._strata import periods, stratified

__all__ = ["UNIT", "arm_figures", "canary_figures", "evaluate", "evidence", "run_controller"]

log = structlog.get_logger("sluicegate.canary")

LEASE = "canary-controller"
HOLDER = f"{socket.gethostname()}:{os.getpid()}"
UNIT = "sticky bucket (a request without a sticky key is its own unit)"


def arm_figures(arm: dict[str, Any], success_metric: str) -> ArmFigures:
    """One arm of a report (`build_report`) as decision figures — for showing; the controller reads the run."""
    metric = arm["metrics"].get(success_metric) or {}
    n = int(metric.get("n") or 0)
    rate = metric.get("rate")
    guards = arm["guards"]
    critical = sum(x["failures"] for x in guards["by_class_severity"] if x["severity"] == "critical")
    return ArmFigures(successes=round((rate or 0.0) * n), outcomes=n, requests=int(arm["requests"]),
                      guard_failures=int(guards["requests_failed"]), critical_failures=int(critical),
                      latency_p95_ms=arm["latency_ms"].get("p95"))


def _arm(totals: ArmTotals, stage_outcomes: int) -> ArmFigures:
    geomean = math.exp(totals.latency_log_sum / totals.latency_n) if totals.latency_n else None
    return ArmFigures(successes=min(totals.successes, totals.outcomes), outcomes=totals.outcomes,
                      requests=totals.requests, guard_failures=totals.guard_failures,
                      critical_failures=totals.critical_failures, stage_outcomes=stage_outcomes,
                      latency_geomean_ms=geomean)


def evidence(data: RunData) -> Evidence:
    """The stratified, cluster-robust estimate of each metric of the run."""
    success = stratified(data.success)
    return Evidence(success=success.estimate, guard_failure_rate=stratified(data.guard_failures).estimate,
                    critical_failure_rate=stratified(data.critical).estimate,
                    log_latency=stratified(data.log_latency).estimate, periods=success.periods, unit=UNIT)


def canary_figures(data: RunData, stage_started_at: float, now: float,
                   run: dict[str, Any] | None = None) -> CanaryFigures:
    """What `decide` reads, from the run's data: per-arm totals, outcomes in the current stage, the evidence."""
    stage_base, stage_cand = data.outcomes_since(stage_started_at)
    return CanaryFigures(_arm(data.totals[0], stage_base), _arm(data.totals[1], stage_cand), evidence(data),
                         stage_elapsed_s=max(now - stage_started_at, 0.0), run=run)


async def _current_run(store: Any, policy: Any, route: str, now: float, write: bool) -> CanaryState | None:
    """The route's state with its run: started when missing; re-created when the policy changed the canary."""
    canary = policy.routes[route].canary
    fp = fingerprint(policy, route)
    state = await read_state(store, route)
    if state is None or state.run is None:
        return await start_run(store, canary, route, fp, now=now) if write else state
    if state.run.fingerprint == fp or not write:
        return state
    first = float(canary.stages[0])
    run = new_run(fp, now)
    reason = (f"the policy's canary now compares something else (variants, model pins, stages or assignment "
              f"changed): new run {run.id} at the first stage {first:g}%")
    await store.write_records(decision_rows(route, action="restart", from_stage=state.stage, to_stage=first,
                                            status="running", rule="policy_changed", reason=reason, now=now,
                                            run=run))
    log.info("canary_run_restarted", route=route, run=run.id, previous=state.run.id, stage=first)
    return await read_state(store, route)


async def evaluate(store: Any, policy: Any, route_name: str, *, now: float | None = None,
                   write: bool = True) -> Decision | None:
    """Decide once for one canary route and store the decision when it changes the stage. ``write=False``:
    the decision the controller would take now, nothing written (``sluicegate canary status``)."""
    if getattr(store, "url", None) == "none://":
        return None  # recording off: no figures to decide on
    canary = policy.routes[route_name].canary
    now = time.time() if now is None else now
    state = await _current_run(store, policy, route_name, now, write)
    if state is None or state.run is None or state.status != "running":
        return None  # paused, promoted or rolled back: an operator moves it from here
    run = state.run
    level = policy.metrics[canary.success_metric].level if canary.success_metric in policy.metrics else "inference"
    cuts = periods(await stage_changes(store, state), now, stratum_hours=canary.stratum_hours)
    data = await run_data(store, route=route_name, baseline=canary.baseline, candidate=canary.candidate,
                          metric=canary.success_metric, level=level, periods=cuts)
    figures = canary_figures(data, run.stage_started_at, now, run={
        "id": run.id, "started_at": run.started_at, "stage_started_at": run.stage_started_at})
    decision = decide(canary, state.stage, figures)
    if not write or decision.action == "hold":  # holds are logged, not stored: one every interval would bury the log
        return decision
    latest = await read_state(store, route_name)
    if latest is None or (latest.run, latest.stage, latest.status) != (run, state.stage, "running"):
        log.info("canary_decision_superseded", route=route_name, action=decision.action, rule=decision.rule)
        return None  # an operator acted while we computed: their decision stands
    status = {"rollback": "rolled_back", "promoted": "promoted"}.get(decision.action, "running")
    await store.write_records(decision_rows(
        route_name, action=decision.action, from_stage=state.stage, to_stage=decision.to_stage, status=status,
        rule=decision.rule, reason=decision.reason, figures=decision.figures, now=now, run=run))
    log.info("canary_decision", route=route_name, action=decision.action, stage_from=state.stage,
             stage_to=decision.to_stage, rule=decision.rule, run=run.id)
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
