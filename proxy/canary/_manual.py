"""Manual canary actions (pause, resume, promote, roll back), planned from the stored state and written
like the controller's decisions: `decision_rows(…, rule="manual")`, the decision and the state it leads
to in one transaction. The CLI (`sluicegate canary …`) and the dashboard both go through here."""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.canary._decide import next_stage
from proxy.canary._state import decision_rows, read_stages, stage_of

__all__ = ["ACTIONS", "Plan", "apply_action", "plan_action"]

ACTIONS = ("pause", "resume", "promote", "rollback")


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """What an action would do (a confirmation shows it), then written as planned."""

    route: str
    action: str
    from_stage: float
    to_stage: float
    status_before: str
    status_after: str

    def sentence(self) -> str:
        return (f"{self.action} canary '{self.route}': candidate share {self.from_stage:g}% -> {self.to_stage:g}%, "
                f"status {self.status_before} -> {self.status_after}")


async def plan_action(store: Any, policy: Any, route: str, action: str) -> Plan:
    """The stage and status `action` leads to from the stored state."""
    canary = policy.routes[route].canary
    stored = (await read_stages(store)).get(route)
    stage, status = stage_of(canary, stored), stored[1] if stored else "running"
    if action == "promote":
        to = next_stage(canary.stages, stage)
        to_stage, new_status = (100.0, "promoted") if to is None or to >= 100 else (float(to), status)
    elif action == "rollback":
        to_stage, new_status = 0.0, "rolled_back"
    elif action in ("pause", "resume"):  # the stage stays; the controller stops or starts deciding
        to_stage, new_status = stage, "paused" if action == "pause" else "running"
    else:
        raise ValueError(f"unknown canary action '{action}'; one of: {', '.join(ACTIONS)}")
    return Plan(route, action, float(stage), float(to_stage), status, new_status)


async def apply_action(store: Any, plan: Plan, reason: str, actor: str) -> None:
    await store.write_records(decision_rows(
        plan.route, action=plan.action, from_stage=plan.from_stage, to_stage=plan.to_stage,
        status=plan.status_after, rule="manual", reason=reason, actor=actor))
