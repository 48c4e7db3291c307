"""A canary's current stage and its decision log, kept in the store so every serving process
routes the same share (each reads the stages every few seconds) and the history survives restarts.

Writes are rows of the store's ordinary write path (`{"row": "canary_state" | "canary_decision"}`):
one transaction holds a decision and the state it leads to.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.records import new_id

__all__ = ["STATUSES", "canary_status", "decision_rows", "history", "read_stages", "stage_of", "stage_started_at"]

STATUSES = ("running", "paused", "promoted", "rolled_back")


async def read_stages(store: Any) -> dict[str, tuple[float, str]]:
    """route -> (stage percent, status) for every canary with a stored state."""
    rows = await store.fetch("SELECT route, stage, status FROM canary_state")
    return {route: (float(stage), status) for route, stage, status in rows}


async def stage_started_at(store: Any, route: str) -> float | None:
    """When the current stage was set (the last decision); None before the first one."""
    rows = await store.fetch("SELECT updated_at FROM canary_state WHERE route = ?", [route])
    return float(rows[0][0]) if rows else None


def stage_of(canary: Any, stored: tuple[float, str] | None) -> float:
    """The share the candidate gets now: the stored stage, else the first stage."""
    return stored[0] if stored is not None else float(canary.stages[0])


def decision_rows(route: str, *, action: str, from_stage: float, to_stage: float, status: str, rule: str,
                  reason: str, figures: dict[str, Any] | None = None, actor: str = "controller",
                  now: float | None = None) -> list[dict[str, Any]]:
    """The decision and the state it leads to, to be written together."""
    at = time.time() if now is None else now
    return [
        {"row": "canary_decision", "id": new_id("cd_"), "route": route, "at": at, "action": action,
         "from_stage": from_stage, "to_stage": to_stage, "rule": rule, "reason": reason, "figures": figures,
         "actor": actor},
        {"row": "canary_state", "route": route, "stage": to_stage, "status": status, "updated_at": at,
         "reason": reason},
    ]


async def history(store: Any, route: str, limit: int = 50) -> list[dict[str, Any]]:
    """The route's decisions, newest first, each with the figures it was taken on."""
    rows = await store.fetch(
        "SELECT at, action, from_stage, to_stage, rule, reason, actor, figures FROM canary_decisions "
        "WHERE route = ? ORDER BY at DESC LIMIT ?", [route, limit])
    keys = ("at", "action", "from_stage", "to_stage", "rule", "reason", "actor")
    return [{**dict(zip(keys, row)), "figures": orjson.loads(row[7]) if row[7] else None} for row in rows]


async def canary_status(store: Any, policy: Any, route: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Every canary route of the policy (or the one named): its stage, status and decision log."""
    rows = await store.fetch("SELECT route, stage, status, updated_at, reason FROM canary_state")
    stored = {r[0]: r for r in rows}
    out = []
    for name, config in sorted(policy.routes.items()):
        canary = config.canary
        if canary is None or (route is not None and name != route):
            continue
        row = stored.get(name)
        out.append({
            "route": name, "baseline": canary.baseline, "candidate": canary.candidate,
            "stages": [float(x) for x in canary.stages], "success_metric": canary.success_metric,
            "stage": float(row[1]) if row else float(canary.stages[0]),
            "status": row[2] if row else "running",
            "since": row[3] if row else None, "reason": row[4] if row else None,
            "decisions": await history(store, name, limit),
        })
    return out
