"""Manual canary actions (pause, resume, promote, roll back, restart), planned from the stored state and written
like the controller's decisions: `decision_rows(…, rule="manual")`, the decision and the state it leads to in
one transaction. The CLI (`sluicegate canary …`) and the dashboard both go through here.

Runs (`proxy.canary._state`): pause, promote and rollback stay in the current run (a promotion starts a new
period of it); resuming a paused canary continues its run (the allocation never changed). Resuming a canary
that was rolled back or promoted, and `restart`, start a **new run at the first stage**: its decisions read
only requests assigned from then on, never the earlier run's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from proxy.canary._decide import next_stage
from proxy.canary._state import Run, decision_rows, fingerprint, new_run, read_state, stage_of

__all__ = ["ACTIONS", "Plan", "apply_action", "plan_action"]

ACTIONS = ("pause", "resume", "promote", "rollback", "restart")
_ENDED = ("rolled_back", "promoted")


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What an action would do (a confirmation shows it), then written as planned."""

    route: str
    action: str
    from_stage: float
    to_stage: float
    status_before: str
    status_after: str
    run: Run | None = None  # the run the decision belongs to (a new one when it starts one)
    new_run: bool = False

    def sentence(self) -> str:
        run = " (a new canary run: earlier traffic no longer counts)" if self.new_run else ""
        return (f"{self.action} canary '{self.route}': candidate share {self.from_stage:g}% -> {self.to_stage:g}%, "
                f"status {self.status_before} -> {self.status_after}{run}")


async def plan_action(store: Any, policy: Any, route: str, action: str) -> Plan:
    """The stage, status and run `action` leads to from the stored state."""
    if action not in ACTIONS:
        raise ValueError(f"unknown canary action '{action}'; one of: {', '.join(ACTIONS)}")
    canary = policy.routes[route].canary
    state = await read_state(store, route)
    stage, status = stage_of(canary, state), state.status if state else "running"
    run = state.run if state else None
    first = float(canary.stages[0])
    fresh = action == "restart" or (action == "resume" and status in _ENDED) or run is None
    if action == "promote":
        to = next_stage(canary.stages, stage)
        to_stage, new_status = (100.0, "promoted") if to is None or to >= 100 else (float(to), status)
    elif action == "rollback":
        to_stage, new_status = 0.0, "rolled_back"
    elif action == "restart" or (action == "resume" and status in _ENDED):
        to_stage, new_status = first, "running"
    else:  # pause / resume a paused or running canary: the stage stays; the controller stops or decides again
        to_stage, new_status = stage, "paused" if action == "pause" else "running"
    if fresh:
        run = new_run(fingerprint(policy, route), time.time())
    return Plan(route, action, float(stage), float(to_stage), status, new_status, run, fresh)


async def apply_action(store: Any, plan: Plan, reason: str, actor: str) -> None:
    now = plan.run.started_at if plan.new_run and plan.run is not None else None
    await store.write_records(decision_rows(
        plan.route, action=plan.action, from_stage=plan.from_stage, to_stage=plan.to_stage,
        status=plan.status_after, rule="manual", reason=reason, actor=actor, now=now, run=plan.run))
