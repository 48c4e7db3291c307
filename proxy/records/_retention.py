"""Retention: `sluicegate prune --older-than 90d` deletes old rows in bounded batches.

Each batch is one short transaction (a few thousand rows), so the recorder's writes interleave with a
long prune instead of waiting behind it. The same SQL runs on SQLite and PostgreSQL. Canary state,
scoring cursors and leases are current values and are never pruned; expired output-cache entries go
whatever their age. On SQLite the newest record and outcome are always kept: SQLite may hand a
deleted largest rowid out again, and a `sluicegate worker` cursor must never see rowids go back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["PRUNED_TABLES", "prune"]

# table -> (its time column, its key)
PRUNED_TABLES = {
    "records": ("started_at", "id"),
    "outcomes": ("received_at", "id"),
    "outcome_conflicts": ("received_at", "id"),  # outcomes kept aside at write time (_conflicts.py)
    "scores": ("created_at", "id"),
    "reviews": ("entered_at", "id"),
    "canary_decisions": ("at", "id"),
}


def _batch_sql(store: Any, table: str, column: str, key: str) -> str:
    keep_newest = ""
    if store.dialect.name == "sqlite" and table in ("records", "outcomes"):
        keep_newest = f" AND rowid < (SELECT max(rowid) FROM {table})"
    return (f"DELETE FROM {table} WHERE {key} IN "
            f"(SELECT {key} FROM {table} WHERE {column} < ?{keep_newest} LIMIT ?)")


async def prune(store: Any, older_than_s: float, *, batch: int = 5000, now: float | None = None,
                progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Delete rows older than `older_than_s` seconds, `batch` rows per transaction. Returns the
    number deleted per table (`response_cache`: expired entries)."""
    if older_than_s <= 0 or batch <= 0:
        raise ValueError("older_than_s and batch must be > 0")
    now = time.time() if now is None else now
    cutoff = now - older_than_s
    deleted: dict[str, int] = {}
    for table, (column, key) in PRUNED_TABLES.items():
        deleted[table] = await _drain(store, table, _batch_sql(store, table, column, key), cutoff, batch, progress)
    expired = "DELETE FROM response_cache WHERE key IN (SELECT key FROM response_cache WHERE expires_at < ? LIMIT ?)"
    deleted["response_cache"] = await _drain(store, "response_cache", expired, now, batch, progress)
    return deleted


async def _drain(store: Any, table: str, sql: str, bound: float, batch: int,
                 progress: Callable[[str, int], None] | None) -> int:
    total = 0
    while True:
        n = await store.execute(sql, [bound, batch])
        total += n
        if progress is not None and n:
            progress(table, total)
        if n < batch:
            return total
