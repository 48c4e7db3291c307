"""The in-process scoring queue: bounded offers, claims, acks, re-delivery and dead letters."""

from __future__ import annotations

import pytest

from proxy.scoring import MemoryQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_offer_claim_ack() -> None:
    q = MemoryQueue(10)
    assert q.offer("a", 1) and q.offer("b", 2)
    got = await q.claim(5, visibility_s=30, wait_s=0)
    assert [(d.id, d.payload, d.delivery) for d in got] == [("a", 1, 1), ("b", 2, 1)]
    await q.ack(["a", "b"])
    assert len(q) == 0
    assert q.stats()["acked"] == 2


async def test_a_full_queue_refuses_and_counts_never_blocks() -> None:
    q = MemoryQueue(2)
    assert q.offer("a", None) and q.offer("b", None)
    assert not q.offer("c", None)
    assert q.stats()["dropped"] == 1 and q.stats()["offered"] == 3


async def test_unacked_jobs_come_back_after_the_visibility_timeout() -> None:
    clock = Clock()
    q = MemoryQueue(10, clock=clock)
    q.offer("a", "job")
    first = await q.claim(1, visibility_s=60, wait_s=0)
    assert [d.delivery for d in first] == [1]
    assert await q.claim(1, visibility_s=60, wait_s=0) == []  # still invisible
    clock.now += 61  # the worker died without acking
    again = await q.claim(1, visibility_s=60, wait_s=0)
    assert [(d.id, d.delivery) for d in again] == [("a", 2)]
    assert q.stats()["redelivered"] == 1


async def test_after_max_deliveries_a_job_goes_to_the_dead_letters_counted() -> None:
    clock = Clock()
    q = MemoryQueue(10, max_deliveries=2, clock=clock)
    q.offer("a", "job")
    for _ in range(2):
        assert await q.claim(1, visibility_s=1, wait_s=0)
        clock.now += 2
    assert await q.claim(1, visibility_s=1, wait_s=0) == []
    assert q.stats()["dead"] == 1 and list(q.dead_letters) == [("a", "job")]


async def test_claim_waits_for_an_offer() -> None:
    import asyncio

    q = MemoryQueue(10)
    asyncio.get_running_loop().call_later(0.05, q.offer, "late", None)
    got = await q.claim(1, visibility_s=10, wait_s=2)
    assert [d.id for d in got] == ["late"]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryQueue(0)
