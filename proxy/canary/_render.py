"""`sluicegate canary status`: after the stored state and decision log, what the controller would decide now,
on which run, and the plan — per stage, the outcomes each arm still needs and the time that should take."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.canary._controller import evaluate
from proxy.canary._decide import Decision

__all__ = ["decision_lines", "evaluation_lines"]


def _hours(x: float | None) -> str:
    return "unknown (no outcomes in this stage yet)" if x is None else f"{x:.1f} h"


def decision_lines(decision: Decision) -> list[str]:
    f = decision.figures
    out = []
    if f.get("run_id"):
        started = datetime.fromtimestamp(f["run_started_at"]).isoformat(timespec="seconds")
        out.append(f"  run {f['run_id']} since {started}: {f['periods']} period(s) of constant allocation; "
                   f"unit of analysis: {f['unit']}")
    out.append(f"  now: {decision.action} [{decision.rule}] {decision.reason}")
    plan = f.get("plan") or []
    if plan:
        out.append("  plan (outcomes each arm still needs; time at the current rate of outcomes):")
        for row in plan:
            out.append(f"    {row['stage']:g}%: baseline {row['baseline_outcomes_needed']}, candidate "
                       f"{row['candidate_outcomes_needed']}; {_hours(row['hours'])}"
                       + (f", done in {row['hours_from_now']:.1f} h from now" if row["hours_from_now"] else ""))
    return out


async def evaluation_lines(store: Any, policy: Any, route: str) -> list[str]:
    """The current evaluation (nothing written), as lines under the canary's status."""
    decision = await evaluate(store, policy, route, write=False)
    if decision is None:
        return ["  now: nothing to evaluate (no run yet, or the canary is paused, promoted or rolled back)"]
    return decision_lines(decision)
