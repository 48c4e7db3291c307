"""Outcomes refused at write time: their idempotency scope already holds a different outcome.

An outcome sent with an idempotency key has an id derived from (caller, request or episode, metric,
key) and a `digest` of its content (`proxy.feedback`). The feedback API answers a reused key with
different content with a 409, from what it remembers and what the store holds. What it cannot see
then — an outcome still in the spill file of an earlier run, another replica's write in flight, a
store that was down when it was asked — meets the outcomes table's primary key at write time. There
the first outcome stored stays, and the later one is never dropped silently: it is kept in
`outcome_conflicts` (id `<outcome id>:<its digest>`, the whole outcome in `data`; reports never read
it), counted (`store.outcome_conflicts`, `sluicegate_feedback_conflicts_total` in /metrics) and
logged (`feedback.conflict_at_write`). The same content again is an idempotent repeat, not a conflict.

Each keyed outcome is written with its own statements (insert; if the id was taken, the conflict
insert), so two conflicting outcomes in one batch, or a concurrent writer on PostgreSQL (its insert
waits for the other transaction, and the conflict check then reads the committed row), are caught too.
Outcomes without a key have random ids and take the batched path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog

__all__ = ["PG_CONFLICT_SQL", "SQLITE_CONFLICT_SQL", "conflict_params", "is_keyed_outcome", "log_conflicts"]

_log = structlog.get_logger("sluicegate.feedback")

# ?1..?5: the conflict row; ?6 the outcome id, ?7 its digest (a stored row with another digest is a conflict)
SQLITE_CONFLICT_SQL = (
    "INSERT OR IGNORE INTO outcome_conflicts (id, outcome_id, received_at, detected_at, data) "
    "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM outcomes WHERE id = ? AND digest IS NOT ?)")
PG_CONFLICT_SQL = (
    "INSERT INTO outcome_conflicts (id, outcome_id, received_at, detected_at, data) "
    "SELECT $1::text, $2::text, $3::float8, $4::float8, $5::jsonb "
    "WHERE EXISTS (SELECT 1 FROM outcomes WHERE id = $6 AND digest IS DISTINCT FROM $7) ON CONFLICT DO NOTHING")


def is_keyed_outcome(kind: str, row: Mapping[str, Any]) -> bool:
    """An outcome written under an idempotency key (it has a content digest)."""
    return kind == "outcome" and row.get("digest") is not None


def conflict_params(row: Mapping[str, Any]) -> list[Any]:
    """The parameters of `*_CONFLICT_SQL` for one keyed outcome row."""
    outcome_id, digest = row["id"], row["digest"]
    return [f"{outcome_id}:{digest}", outcome_id, row.get("received_at"), time.time(),
            orjson.dumps(dict(row)).decode(), outcome_id, digest]


def log_conflicts(store_url: str, rows: list[Mapping[str, Any]], total: int) -> None:
    """One warning per outcome kept aside; names ids, metric and subject, never the content."""
    for row in rows:
        _log.warning("feedback.conflict_at_write", store=store_url, outcome_id=row["id"], metric=row.get("metric"),
                     request_id=row.get("request_id"), episode_id=row.get("episode_id"), caller=row.get("caller"),
                     conflicts_total=total)
