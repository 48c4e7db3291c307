"""A canary's state — its run, stage and status — and its decision log, kept in the store so every serving
process routes the same share (each reads the stages every few seconds) and the history survives restarts.

Writes are rows of the store's ordinary write path (`{"row": "canary_state" | "canary_decision"}`): one
transaction holds a decision and the state it leads to.

Runs
----
A canary is an experiment with a start. A **run** has an id, a start time and a *fingerprint* of what it
compares (the two variants' pinned models and how requests are assigned to them: salt, sticky keys, `when:`
entries, stages). The controller's decisions read only requests assigned since its run started, so neither
the route's history from before the canary nor an earlier run can leak into them. A new run starts:

* when a canary route has no state yet, or only a state from before runs were recorded (schema < 10) — at
  the stage it serves, status unchanged; serving processes do this when they start (`start_runs`), so a run
  exists before the first request is routed;
* when the policy's canary compares something else than the stored run (a reload that re-creates it: another
  candidate, another model pin, other stages or assignment) — at the first stage, running, decided by the
  controller (`rule: policy_changed`);
* when an operator restarts it (`restart`), or resumes one that was rolled back or promoted — at the first
  stage (`proxy.canary._manual`).

Each decision row carries its run's id; the run's stage changes (its periods of constant allocation) are
read back from them (`stage_changes`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import orjson

from proxy.records import new_id

__all__ = ["STATUSES", "CanaryState", "Run", "canary_status", "decision_rows", "fingerprint", "history",
           "new_run", "read_stages", "read_state", "stage_changes", "stage_of", "start_run", "start_runs"]

STATUSES = ("running", "paused", "promoted", "rolled_back")

_STATE_COLUMNS = "route, stage, status, updated_at, reason, run_id, run_started_at, stage_started_at, fingerprint"


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One canary experiment: decisions read only requests assigned at or after ``started_at``."""

    id: str
    started_at: float
    fingerprint: str | None
    stage_started_at: float  # when the current stage was set (within the run)


@dataclasses.dataclass(frozen=True, slots=True)
class CanaryState:
    route: str
    stage: float
    status: str
    updated_at: float
    reason: str | None
    run: Run | None  # None: a state written before runs were recorded


def new_run(fingerprint_: str | None, now: float | None = None) -> Run:
    at = time.time() if now is None else now
    return Run(new_id("run_"), at, fingerprint_, at)


def fingerprint(policy: Any, route: str) -> str:
    """What a canary run compares: the two variants' pinned models and how requests reach them. A reload
    that changes any of it re-creates the canary (a new run at the first stage)."""
    config = policy.routes[route]
    canary = config.canary
    models = {name: {"provider": policy.models[name].provider, "model": policy.models[name].model,
                     "params": policy.models[name].params} for name in (canary.baseline, canary.candidate)}
    what = {"baseline": canary.baseline, "candidate": canary.candidate, "models": models,
            "stages": [float(s) for s in canary.stages], "salt": config.salt or route,
            "sticky_by": list(config.sticky_by), "when": [w.model_dump(mode="json") for w in config.when]}
    return hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _state(row: tuple[Any, ...]) -> CanaryState:
    route, stage, status, updated_at, reason, run_id, run_started, stage_started, fp = row
    run = None if run_id is None else Run(run_id, float(run_started), fp,
                                          float(stage_started if stage_started is not None else run_started))
    return CanaryState(route, float(stage), status, float(updated_at), reason, run)


async def read_stages(store: Any) -> dict[str, tuple[float, str]]:
    """route -> (stage percent, status) for every canary with a stored state."""
    rows = await store.fetch("SELECT route, stage, status FROM canary_state")
    return {route: (float(stage), status) for route, stage, status in rows}


async def read_state(store: Any, route: str) -> CanaryState | None:
    rows = await store.fetch(f"SELECT {_STATE_COLUMNS} FROM canary_state WHERE route = ?", [route])
    return _state(rows[0]) if rows else None


def stage_of(canary: Any, stored: tuple[float, str] | CanaryState | None) -> float:
    """The share the candidate gets now: the stored stage, else the first stage."""
    if isinstance(stored, CanaryState):
        return stored.stage
    return stored[0] if stored is not None else float(canary.stages[0])


def decision_rows(route: str, *, action: str, from_stage: float, to_stage: float, status: str, rule: str,
                  reason: str, figures: dict[str, Any] | None = None, actor: str = "controller",
                  now: float | None = None, run: Run | None = None) -> list[dict[str, Any]]:
    """The decision and the state it leads to, to be written together. ``run``: the run the decision belongs
    to (a new one when the decision starts it); a stage change restarts the run's stage clock."""
    at = time.time() if now is None else now
    state = {"row": "canary_state", "route": route, "stage": to_stage, "status": status, "updated_at": at,
             "reason": reason}
    if run is not None:
        stage_started = at if to_stage != from_stage else run.stage_started_at
        state.update(run_id=run.id, run_started_at=run.started_at, stage_started_at=stage_started,
                     fingerprint=run.fingerprint)
    return [
        {"row": "canary_decision", "id": new_id("cd_"), "route": route, "at": at, "action": action,
         "from_stage": from_stage, "to_stage": to_stage, "rule": rule, "reason": reason, "figures": figures,
         "actor": actor, "run_id": run.id if run is not None else None},
        state,
    ]


async def start_run(store: Any, canary: Any, route: str, fingerprint_: str, *, now: float | None = None) -> CanaryState:
    """The route's state with a run: a run starts (at the stage served now) when it has none. Compare-and-set
    on the row, so every serving process may call it and only the first one's run counts."""
    at = time.time() if now is None else now
    run_id = new_id("run_")
    first = float(canary.stages[0])
    await store.execute(  # ON CONFLICT DO NOTHING: SQLite >= 3.24 and PostgreSQL alike
        f"INSERT INTO canary_state ({_STATE_COLUMNS}) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (route) DO NOTHING",
        [route, first, at, "canary run started", run_id, at, at, fingerprint_])
    await store.execute(
        "UPDATE canary_state SET run_id = ?, run_started_at = ?, stage_started_at = ?, fingerprint = ? "
        "WHERE route = ? AND run_id IS NULL", [run_id, at, at, fingerprint_, route])
    state = await read_state(store, route)
    if state is None or state.run is None:
        raise RuntimeError(f"canary '{route}': its run was not stored ({store!r})")
    return state


async def start_runs(store: Any, policy: Any, now: float | None = None) -> None:
    """A run for every canary route of the policy that has none (serving processes, at start)."""
    for name, route in policy.routes.items():
        if route.canary is not None:
            await start_run(store, route.canary, name, fingerprint(policy, name), now=now)


async def stage_changes(store: Any, state: CanaryState) -> list[tuple[float, float]]:
    """(time, stage) for the run's start and every later stage change within it, oldest first: the periods of
    constant allocation the decisions compare within."""
    run = state.run
    if run is None:
        return []
    rows = await store.fetch("SELECT at, from_stage, to_stage FROM canary_decisions WHERE run_id = ? "
                             "ORDER BY at, id", [run.id])
    starting = [r for r in rows if float(r[0]) <= run.started_at]
    later = [r for r in rows if float(r[0]) > run.started_at]
    if starting:
        initial = float(starting[-1][2])  # the decision that started the run set its stage
    elif later:
        initial = float(later[0][1])
    else:
        initial = state.stage
    changes = [(run.started_at, initial)]
    for at, from_stage, to_stage in later:
        if float(to_stage) != changes[-1][1]:
            changes.append((float(at), float(to_stage)))
    return changes


async def history(store: Any, route: str, limit: int = 50) -> list[dict[str, Any]]:
    """The route's decisions, newest first, each with the figures it was taken on and its run."""
    rows = await store.fetch(
        "SELECT at, action, from_stage, to_stage, rule, reason, actor, figures, run_id FROM canary_decisions "
        "WHERE route = ? ORDER BY at DESC, id DESC LIMIT ?", [route, limit])
    keys = ("at", "action", "from_stage", "to_stage", "rule", "reason", "actor")
    return [{**dict(zip(keys, row)), "figures": orjson.loads(row[7]) if row[7] else None, "run_id": row[8]}
            for row in rows]


async def canary_status(store: Any, policy: Any, route: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Every canary route of the policy (or the one named): its stage, status, run and decision log."""
    rows = await store.fetch(f"SELECT {_STATE_COLUMNS} FROM canary_state")
    stored = {r[0]: _state(r) for r in rows}
    out = []
    for name, config in sorted(policy.routes.items()):
        canary = config.canary
        if canary is None or (route is not None and name != route):
            continue
        state = stored.get(name)
        run = state.run if state is not None else None
        out.append({
            "route": name, "baseline": canary.baseline, "candidate": canary.candidate,
            "stages": [float(x) for x in canary.stages], "success_metric": canary.success_metric,
            "stage": state.stage if state else float(canary.stages[0]),
            "status": state.status if state else "running",
            "since": state.updated_at if state else None, "reason": state.reason if state else None,
            "run": None if run is None else {"id": run.id, "started_at": run.started_at,
                                             "stage_started_at": run.stage_started_at},
            "decisions": await history(store, name, limit),
        })
    return out
