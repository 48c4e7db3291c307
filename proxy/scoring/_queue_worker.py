"""`sluicegate worker --queue redis://…`: scoring jobs claimed from a durable queue.

The gateway samples and offers; any number of these workers share the jobs through the queue's
consumer group. Per batch: claim, score (each job's record loaded from the store by id), write the
batch's scores and review entries in ONE store transaction, then ack. A worker killed mid-batch has
written and acked nothing of it; another worker takes the jobs over after the visibility timeout.
A job scored twice replaces its scores (one row per record and scorer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from proxy.scoring._worker import Scoring

__all__ = ["QueueWorker"]

log = structlog.get_logger("sluicegate.worker")


class QueueWorker:
    def __init__(self, make_scoring: Callable[[Callable[[Any], None], Callable[[], Awaitable[None]]], Scoring],
                 store: Any) -> None:
        """`make_scoring(sink, flush)` builds the `Scoring` (with the durable queue and `store`) whose
        scores go to `sink`; `flush` writes what the sink collected, and Scoring calls it before acking."""
        self._store = store
        self._rows: list[dict[str, Any]] = []
        self.scoring: Scoring = make_scoring(self._rows.append, self._write)
        self.batches = 0

    async def _write(self) -> None:
        rows, self._rows[:] = list(self._rows), []  # written or not: a failed batch is not acked, so rescored
        if rows:
            await self._store.write_records(rows)

    async def run_once(self, wait_s: float = 1.0) -> int:
        """Claim, score, write and ack one batch; returns how many jobs were acked."""
        self._rows.clear()
        done = await self.scoring.run_once(wait_s=wait_s)
        if done:
            self.batches += 1
        return done

    async def run(self, *, once: bool = False, wait_s: float = 1.0) -> None:
        """Forever, or (`once`) until a claim finds nothing within `wait_s`."""
        while True:
            try:
                got = await self.run_once(wait_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the store is down: not acked, delivered again
                log.error("worker.batch_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(1.0)
                continue
            if got:
                log.info("worker.batch", jobs=got, **{k: v for k, v in self.scoring.stats().items()
                                                      if k in ("scored", "to_review", "errors")})
            elif once:
                return
