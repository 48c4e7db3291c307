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

from proxy.scoring._worker import Scoring, row_input

__all__ = ["StoreWorker"]

log = structlog.get_logger("sluicegate.worker")


class StoreWorker:
    def __init__(self, make_scoring: Any, store: Any, *, name: str = "default", batch_size: int = 200) -> None:
        """`make_scoring(sink)` builds the `Scoring` whose scores go to `sink` (collected per batch)."""
        self._store = store
        self._name = name
        self._batch_size = batch_size
        self._pending: list[dict[str, Any]] = []
        self.scoring: Scoring = make_scoring(self._pending.append)
        self.batches = 0
        self.records_seen = 0

    async def cursor(self) -> int:
        rows = await self._store.fetch("SELECT value FROM scoring_cursors WHERE id = ?", [self._name])
        return int(rows[0][0]) if rows else 0

    async def run_once(self) -> int:
        """Score the next batch of recorded answers; returns how many records were read."""
        after = await self.cursor()
        rows = await self._store.fetch(
            "SELECT rowid, data FROM records WHERE rowid > ? AND served = 1 ORDER BY rowid LIMIT ?",
            [after, self._batch_size])
        if not rows:
            return 0
        self._pending.clear()
        for _, data in rows:
            row = orjson.loads(data)
            record = SimpleNamespace(**row)
            decision = self.scoring.decide(record)
            if decision is not None and decision.sampled:
                await self.scoring.score_item(record, row_input(row, decision.weight))
        cursor = {"row": "cursor", "id": self._name, "value": rows[-1][0], "updated_at": time.time()}
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
