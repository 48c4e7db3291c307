"""The scoring queue: the narrow interface every queue implements, and the in-process one.

Delivery is at least once: a claimed job that is not acked within its visibility timeout is
delivered again (a worker died mid-batch); after `max_deliveries` it goes to the dead letters,
counted, never silently dropped. Score writes are idempotent (record id + scorer), so a job scored
twice is stored once.

`offer` is what the request path calls: synchronous, O(1), never waits. Past the bound the job is
refused and counted (`dropped`), and the gateway logs it — sampling must never slow a request. The
Redis Streams queue (scale-out issue) implements the same four methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["Delivery", "MemoryQueue", "ScoringQueue"]


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    id: str  # the job's id: the scored record's id
    payload: Any
    delivery: int  # 1 on the first delivery, 2 on the first re-delivery, ...


class ScoringQueue(Protocol):
    def offer(self, job_id: str, payload: Any) -> bool:
        """Enqueue without waiting; False when the queue is full (the job is counted as dropped)."""
        ...

    async def claim(self, max_items: int, *, visibility_s: float, wait_s: float = 1.0) -> list[Delivery]:
        """Up to `max_items` jobs, waiting up to `wait_s` for the first. Unacked jobs come back
        after `visibility_s`."""
        ...

    async def ack(self, ids: Iterable[str]) -> None:
        """The jobs are done (their scores are written)."""
        ...

    def stats(self) -> dict[str, Any]: ...


@dataclasses.dataclass(slots=True)
class _InFlight:
    payload: Any
    delivery: int
    deadline: float


class MemoryQueue:
    """A bounded in-process queue (the embedded default: the server scores in a background task)."""

    def __init__(self, maxsize: int = 10_000, *, max_deliveries: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1 or max_deliveries < 1:
            raise ValueError("maxsize and max_deliveries must be >= 1")
        self._maxsize = maxsize
        self._max_deliveries = max_deliveries
        self._clock = clock
        self._ready: deque[tuple[str, Any, int]] = deque()
        self._inflight: dict[str, _InFlight] = {}
        self._event = asyncio.Event()
        self._counts = {"offered": 0, "dropped": 0, "delivered": 0, "redelivered": 0, "acked": 0, "dead": 0}
        self.dead_letters: deque[tuple[str, Any]] = deque(maxlen=1000)

    def __len__(self) -> int:
        return len(self._ready) + len(self._inflight)

    def offer(self, job_id: str, payload: Any) -> bool:
        self._counts["offered"] += 1
        if len(self) >= self._maxsize:
            self._counts["dropped"] += 1
            return False
        self._ready.append((job_id, payload, 0))
        self._event.set()
        return True

    def _requeue_expired(self) -> None:
        now = self._clock()
        expired = [job_id for job_id, item in self._inflight.items() if item.deadline <= now]
        for job_id in expired:
            item = self._inflight.pop(job_id)
            if item.delivery >= self._max_deliveries:
                self._counts["dead"] += 1
                self.dead_letters.append((job_id, item.payload))
                continue
            self._counts["redelivered"] += 1
            self._ready.append((job_id, item.payload, item.delivery))

    async def claim(self, max_items: int, *, visibility_s: float, wait_s: float = 1.0) -> list[Delivery]:
        self._requeue_expired()
        if not self._ready and wait_s > 0:
            self._event.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._event.wait()
            except TimeoutError:
                pass
            self._requeue_expired()
        out: list[Delivery] = []
        deadline = self._clock() + visibility_s
        while self._ready and len(out) < max_items:
            job_id, payload, delivered = self._ready.popleft()
            if job_id in self._inflight:
                continue  # offered twice while the first is being scored: one delivery is enough
            self._inflight[job_id] = _InFlight(payload, delivered + 1, deadline)
            self._counts["delivered"] += 1
            out.append(Delivery(job_id, payload, delivered + 1))
        return out

    async def ack(self, ids: Iterable[str]) -> None:
        for job_id in ids:
            if self._inflight.pop(job_id, None) is not None:
                self._counts["acked"] += 1

    def stats(self) -> dict[str, Any]:
        return {**self._counts, "ready": len(self._ready), "in_flight": len(self._inflight),
                "maxsize": self._maxsize}
