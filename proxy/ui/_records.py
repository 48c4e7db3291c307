"""The record browser: search, one record with everything joined to it, and its replay.

Search runs on the store's indexed columns with `?` parameters and portable SQL; the two filters
that look inside JSON (a guard class in `failed_guards`) go through the store's dialect, so the same
text runs on SQLite and PostgreSQL. A record is shown as captured: the route's capture mode was
applied before it reached the store, so this page never shows more than the store keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.server._review_api import _scores, record_view  # noqa: PLC2701 - one way to show a record

__all__ = ["FILTERS", "OUTCOMES", "PAGE_SIZE", "Search", "attempts", "outcomes", "record_data", "search"]

PAGE_SIZE = 50
OUTCOMES = ("ok", "guard_failed", "guard_blocked", "upstream_error", "timeout", "connect_error", "malformed",
            "stream_cut", "upstream_too_large", "upstream_busy", "cancelled", "client_disconnected")
FEEDBACK = ("good", "bad")  # a downstream outcome judged by its metric's goal
# query parameter -> what it matches (request id matches an attempt id too)
FILTERS = ("request_id", "episode_id", "correlation_id", "route", "variant", "guard_class", "outcome", "metric",
           "feedback", "since", "until")
_COLUMNS = ("id", "request_id", "attempt", "attempt_reason", "served", "started_at", "route", "variant", "episode_id",
            "correlation_id", "model_served", "status", "outcome", "guard_failures", "latency_ms")


@dataclasses.dataclass(slots=True)
class Search:
    """The record search's filters as the form sends them (empty strings are no filter)."""

    request_id: str = ""
    episode_id: str = ""
    correlation_id: str = ""
    route: str = ""
    variant: str = ""
    guard_class: str = ""
    outcome: str = ""
    metric: str = ""
    feedback: str = ""
    since: float | None = None
    until: float | None = None
    offset: int = 0

    def active(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", None) and k != "offset"}


def _feedback_clause(metric: str, goal: str, bad: bool) -> tuple[str, list[Any]]:
    """Records whose latest outcome of `metric` (for their request, or for their episode) is bad
    (or good) by the metric's goal."""
    value = (0.0 if goal == "maximize" else 1.0) if bad else (1.0 if goal == "maximize" else 0.0)
    sql = """ AND EXISTS (SELECT 1 FROM outcomes o WHERE o.metric = ? AND o.value = ?
        AND ((o.level = 'inference' AND o.request_id = r.request_id)
             OR (o.level = 'episode' AND o.episode_id = r.episode_id))
        AND NOT EXISTS (SELECT 1 FROM outcomes n WHERE n.metric = o.metric AND n.level = o.level
            AND coalesce(n.request_id, '') = coalesce(o.request_id, '')
            AND coalesce(n.episode_id, '') = coalesce(o.episode_id, '')
            AND (n.received_at > o.received_at OR (n.received_at = o.received_at AND n.id > o.id))))"""
    return sql, [metric, value]


def _where(store: Any, s: Search, goals: Mapping[str, str]) -> tuple[str, list[Any]]:
    sql, args = "", []
    if s.request_id:
        sql += " AND (r.request_id = ? OR r.id = ?)"
        args += [s.request_id, s.request_id]
    for column in ("episode_id", "correlation_id", "route", "variant", "outcome"):
        value = getattr(s, column)
        if value:
            sql += f" AND r.{column} = ?"
            args.append(value)
    if s.guard_class:
        d = store.dialect
        sql += (f" AND r.guard_failures > 0 AND EXISTS (SELECT 1 FROM {d.json_elements('r.failed_guards')} j "
                f"WHERE {d.json_item('j.value', 0)} = ?)")
        args.append(s.guard_class)
    if s.metric and s.feedback in FEEDBACK:
        clause, extra = _feedback_clause(s.metric, goals.get(s.metric, "maximize"), s.feedback == "bad")
        sql += clause
        args += extra
    if s.since is not None:
        sql += " AND r.started_at >= ?"
        args.append(s.since)
    if s.until is not None:
        sql += " AND r.started_at < ?"
        args.append(s.until)
    return sql, args


async def search(store: Any, s: Search, goals: Mapping[str, str]) -> dict[str, Any]:
    """One page of matching records, newest first; `more` says whether another page exists."""
    where, args = _where(store, s, goals)
    rows = await store.fetch(f"SELECT {', '.join('r.' + c for c in _COLUMNS)} FROM records r WHERE 1 = 1{where} "
                             "ORDER BY r.started_at DESC, r.id DESC LIMIT ? OFFSET ?",
                             [*args, PAGE_SIZE + 1, s.offset])
    items = [dict(zip(_COLUMNS, row)) for row in rows[:PAGE_SIZE]]
    for item in items:
        item["served"] = bool(item["served"])
    return {"filters": s.active(), "offset": s.offset, "page_size": PAGE_SIZE, "more": len(rows) > PAGE_SIZE,
            "records": items}


async def _row(store: Any, record_id: str) -> dict[str, Any] | None:
    """The attempt `record_id`, or the served (else latest) attempt of request `record_id`."""
    rows = await store.fetch("SELECT data FROM records WHERE id = ?", [record_id])
    if not rows:
        rows = await store.fetch("SELECT data FROM records WHERE request_id = ? "
                                 "ORDER BY served DESC, attempt DESC LIMIT 1", [record_id])
    return orjson.loads(rows[0][0]) if rows else None


async def attempts(store: Any, request_id: str) -> list[dict[str, Any]]:
    """Every attempt of a request — primary, retries, fallbacks and shadows — in order."""
    rows = await store.fetch(f"SELECT {', '.join(_COLUMNS)} FROM records WHERE request_id = ? "
                             "ORDER BY attempt, started_at, id", [request_id])
    out = [dict(zip(_COLUMNS, row)) for row in rows]
    for item in out:
        item["served"] = bool(item["served"])
    return out


async def outcomes(store: Any, request_id: str, episode_id: str | None) -> list[dict[str, Any]]:
    """Downstream outcomes of the request and of its episode, newest first; `latest` marks the one
    per (level, metric) that reports count."""
    sql = ("SELECT id, metric, value, level, received_at, source, data FROM outcomes "
           "WHERE (level = 'inference' AND request_id = ?)")
    args: list[Any] = [request_id]
    if episode_id:
        sql += " OR (level = 'episode' AND episode_id = ?)"
        args.append(episode_id)
    rows = await store.fetch(sql + " ORDER BY received_at DESC, id DESC", args)
    seen: set[tuple[str, str]] = set()
    out = []
    for oid, metric, value, level, received_at, source, data in rows:
        note = (orjson.loads(data) or {}).get("note") if data else None
        out.append({"id": oid, "metric": metric, "value": value, "level": level, "received_at": received_at,
                    "source": source, "note": note, "latest": (level, metric) not in seen})
        seen.add((level, metric))
    return out


async def record_data(gateway: Any, record_id: str) -> dict[str, Any] | None:
    """The record as captured, its guard results, scores, outcomes and every attempt of its request."""
    row = await _row(gateway.store, record_id)
    if row is None:
        return None
    view = record_view(row)
    assert view is not None
    for key in ("correlation_id", "user_id", "caller", "policy_version", "system_fingerprint", "cost_usd", "ttft_ms",
                "upstream_status", "request_hash", "stream", "cache_hit", "response"):
        view[key] = row.get(key)
    return {
        "record": view,
        "scores": await _scores(gateway, row["id"]),
        "outcomes": await outcomes(gateway.store, row["request_id"], row.get("episode_id")),
        "attempts": await attempts(gateway.store, row["request_id"]),
        "replay": {"possible": row.get("capture") != "refs_only" and isinstance(row.get("request"), dict),
                   "variants": sorted(gateway.policy.models)},
    }
