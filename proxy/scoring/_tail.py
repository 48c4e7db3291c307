"""`sluicegate worker`: scoring in a process of its own, reading what the gateway recorded.

The gateway (started with `--scoring external`) does nothing for scoring on the request path: the
worker reads served records from the store after its cursor, makes the same deterministic sampling
decision the gateway would (a pure function of the request id), scores the sampled ones as stored
(capture applied), and writes the scores, review entries and its new cursor in ONE transaction.
A worker killed mid-batch has written nothing of that batch: the next start scores it again. A
batch scored twice replaces its scores (one row per record and scorer): nothing is lost, nothing
is counted twice. One worker per store and name; the Redis queue (scale-out issue) shares work.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import orjson
import structlog

from proxy.scoring._worker import _LATE_SQL, Scoring, negative_feedback, row_input

__all__ = ["StoreWorker"]

log = structlog.get_logger("sluicegate.worker")


class StoreWorker:
    def __init__(self, make_scoring: Any, store: Any, *, name: str = "default", batch_size: int = 200,
                 metrics: Any = None) -> None:
        """`make_scoring(sink)` builds the `Scoring` whose scores go to `sink` (collected per batch);
        `metrics` (the policy's) tell which later outcomes are negative feedback."""
        self._store = store
        self._metrics = metrics or {}
        self._name = name
        self._batch_size = batch_size
        self._pending: list[dict[str, Any]] = []
        self.scoring: Scoring = make_scoring(self._pending.append)
        self.batches = 0
        self.records_seen = 0

    async def cursor(self, suffix: str = "") -> int:
        rows = await self._store.fetch("SELECT value FROM scoring_cursors WHERE id = ?", [self._name + suffix])
        return int(rows[0][0]) if rows else 0

    async def _late_batch(self) -> tuple[int, dict[str, Any] | None]:
        """Negative feedback that arrived after the outcomes cursor: a second sampling decision."""
        after = await self.cursor(":outcomes")
        rows, cursor_at = await self._store.tail("outcomes", "metric, value, request_id", "level = 'inference'",
                                                 after, self._batch_size)
        if cursor_at == after:
            return 0, None
        for metric, value, request_id in rows:
            feedback = negative_feedback(SimpleNamespace(metric=metric, value=value, request_id=request_id),
                                         self._metrics.get(metric))
            if not feedback:
                continue
            found = await self._store.fetch(_LATE_SQL, [request_id])
            if not found:
                continue  # an outcome for a request this store never recorded
            row = orjson.loads(found[0][0])
            record = SimpleNamespace(**row)
            decision = self.scoring.decide_late(record, feedback)
            if decision is not None:
                await self.scoring.score_item(record, row_input(row, decision.weight))
        cursor = {"row": "cursor", "id": self._name + ":outcomes", "value": cursor_at, "updated_at": time.time()}
        return len(rows), cursor

    async def run_once(self) -> int:
        """Score the next batch of recorded answers; returns how many records were read."""
        after = await self.cursor()
        rows, cursor_at = await self._store.tail("records", "data", "served = 1", after, self._batch_size)
        self._pending.clear()
        if cursor_at == after:
            late, cursor = await self._late_batch()
            if cursor is not None:
                await self._store.write_records([*self._pending, cursor])
                self._pending.clear()
            return late
        for (data,) in rows:
            row = orjson.loads(data)
            record = SimpleNamespace(**row)
            decision = self.scoring.decide(record)
            if decision is not None and decision.sampled:
                await self.scoring.score_item(record, row_input(row, decision.weight))
        cursor = {"row": "cursor", "id": self._name, "value": cursor_at, "updated_at": time.time()}
        await self._store.write_records([*self._pending, cursor])  # scores and cursor: one transaction
        self._pending.clear()
        self.batches += 1
        self.records_seen += len(rows)
        return len(rows)

    async def run(self, *, idle_s: float = 1.0, once: bool = False) -> None:
        while True:
            got = await self.run_once()
            if got:
                log.info("worker.batch", records=got, **{k: v for k, v in self.scoring.stats().items()
                                                        if k in ("sampled", "scored", "to_review", "errors")})
            elif once:
                return
            else:
                await asyncio.sleep(idle_s)
