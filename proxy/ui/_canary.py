"""The canary page: stage, status, decision log with its figures, and the manual actions.

A manual action is written exactly as `sluicegate canary promote|rollback|pause|resume` writes it:
`decision_rows(…, rule="manual")` — the decision and the state it leads to, in one transaction of
the store's write path — so the controller, every serving process and the CLI's `status` see it
the same way. The actor is "ui" (the dashboard knows the admin key's holder no better than that).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.canary._controller import arm_figures
from proxy.canary._manual import ACTIONS, Plan, plan_action
from proxy.canary._manual import apply_action as apply_manual
from proxy.canary._state import canary_status

__all__ = ["ACTIONS", "ACTOR", "Plan", "apply_action", "canary_data", "plan_action"]

ACTOR = "ui"
MAX_REASON_CHARS = 2000
_SIDES = ("baseline", "candidate")


async def apply_action(store: Any, plan: Plan, reason: str) -> None:
    await apply_manual(store, plan, reason, ACTOR)


def _figure_table(figures: dict[str, Any] | None) -> dict[str, Any]:
    """A decision's figures split into per-arm rows (baseline_x / candidate_x) and the rest."""
    if not figures:
        return {"arms": [], "other": []}
    names: list[str] = []
    for key in figures:
        for side in _SIDES:
            if key.startswith(side + "_") and key[len(side) + 1:] not in names:
                names.append(key[len(side) + 1:])
    arms = [{"figure": n, **{side: figures.get(f"{side}_{n}") for side in _SIDES}} for n in names]
    other = [{"figure": k, "value": _plan_text(v) if k == "plan" else v} for k, v in figures.items()
             if not k.startswith(_SIDES)]
    return {"arms": arms, "other": other}


def _plan_text(plan: Any) -> str:
    """The decision's per-stage plan in one line: stage: baseline / candidate outcomes still needed (hours)."""
    if not isinstance(plan, list):
        return str(plan)
    return "; ".join(f"{row['stage']:g}%: {row['baseline_outcomes_needed']} / {row['candidate_outcomes_needed']}"
                     + (f" ({row['hours']:.1f} h)" if row.get("hours") is not None else "") for row in plan)


async def canary_data(gateway: Any, route: str, report_route: dict[str, Any] | None) -> dict[str, Any] | None:
    """The page's figures; None when `route` is no canary route of the policy."""
    config = gateway.policy.routes.get(route)
    if config is None or config.canary is None:
        return None
    status, = await canary_status(gateway.store, gateway.policy, route, limit=200)
    canary = config.canary
    arms = {a["variant"]: a for a in (report_route or {}).get("arms", [])}
    current = {side: (dataclasses.asdict(arm_figures(arms[name], canary.success_metric)) if name in arms else None)
               for side, name in (("baseline", canary.baseline), ("candidate", canary.candidate))}
    return {
        **status,
        "min_samples": canary.min_samples,
        "non_inferiority_margin": canary.non_inferiority_margin,
        "evaluate_every_s": canary.evaluate_every_s,
        "current_figures": current,
        "decisions": [{**d, "table": _figure_table(d["figures"])} for d in status["decisions"]],
    }
