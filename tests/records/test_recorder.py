"""The recorder: never blocks, never loses a record silently, replays what it spilled."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.records import Record, Recorder, SQLiteStore, open_store
from tests.records._wait import wait_until

SECRET_MARK = "Zebulon-Quartzfeather"  # in every record's prompt: must never reach a log line


def rec(i: int, **kw: Any) -> Record:
    base: dict[str, Any] = dict(
        id=f"rec-{i:06d}", request_id=f"req-{i:06d}", attempt=1, attempt_reason="primary",
        endpoint="chat.completions", route="support-bot", variant="prod", provider="openai",
        model_requested="gpt-4o-2024-08-06", started_at=1_700_000_000.0 + i / 1000,
        request={"messages": [{"role": "user", "content": f"{SECRET_MARK} asks question {i}"}]})
    base.update(kw)
    return Record(**base)


class LogSpy:
    """A structlog-like logger that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str) -> Callable[..., None]:
        def log(event: str, **kw: Any) -> None:
            self.calls.append((level, event, kw))
        return log

    def __getattr__(self, level: str) -> Callable[..., None]:
        return self._log(level)

    def events(self, event: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [c for c in self.calls if c[1] == event]


@pytest.fixture
async def store(tmp_path: Path):
    s = open_store(f"sqlite:///{tmp_path}/records.db?busy_timeout_ms=50")
    await s.open()
    yield s
    await s.close()



def distinct_ids(path: str) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*), count(DISTINCT id) FROM records").fetchone()
    finally:
        conn.close()


def spill_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


# --- the happy path -----------------------------------------------------------------------------


async def test_10k_submits_all_end_up_in_the_store(store: SQLiteStore, tmp_path: Path) -> None:
    assert not inspect.iscoroutinefunction(Recorder.submit)
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl")
    await r.start()
    for i in range(10_000):
        assert r.submit(rec(i)) is None
    await r.flush()
    st = r.stats()
    assert st["submitted"] == 10_000 and st["written"] == 10_000
    assert st["spilled"] == 0 and st["dropped"] == 0 and st["buffered"] == 0 and st["store_healthy"]
    assert st["last_write_at"] is not None
    assert await store.count_records() == 10_000
    assert distinct_ids(store.path) == (10_000, 10_000)
    rows = await store.query_records(request_id="req-000042")
    assert rows[0]["request"]["messages"][0]["content"] == f"{SECRET_MARK} asks question 42"
    await r.stop()
    assert not (tmp_path / "spill.jsonl").exists()


async def test_dicts_are_accepted_too(store: SQLiteStore, tmp_path: Path) -> None:
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl")
    await r.start()
    r.submit(rec(1).to_dict())
    r.submit(rec(2))
    await r.flush()
    assert [row["id"] for row in await store.query_records()] == ["rec-000001", "rec-000002"]
    await r.stop()


# --- the event loop stays responsive ------------------------------------------------------------


class SlowStore:
    """Wraps a store; every write first sleeps `delay` seconds in a worker thread (or, with
    `block_loop`, on the event loop itself: the control case that proves the probe detects blocking)."""

    def __init__(self, inner: SQLiteStore, delay: float, block_loop: bool = False) -> None:
        self.inner, self.delay, self.block_loop = inner, delay, block_loop
        self.url = inner.url
        self.slow_writes = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._released = threading.Event()

    async def write_records(self, rows: Sequence[Any]) -> int:
        self.slow_writes += 1
        if self.block_loop:
            time.sleep(self.delay)
        else:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._released.wait, self.delay)
        return await self.inner.write_records(rows)

    async def ping(self) -> None:
        await self.inner.ping()

    def release(self) -> None:
        """End any sleep in progress (test cleanup)."""
        self._released.set()
        self._pool.shutdown(wait=True)


async def max_loop_gap(work: Callable[[], Awaitable[None]]) -> float:
    """Run `work` while a coroutine ticks every 5 ms; return the longest gap between ticks."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    try:
        await work()
    finally:
        stop.set()
        await task
    return max(gaps)


@pytest.mark.parametrize("block_loop", [False, True], ids=["store-thread", "control-blocking"])
async def test_event_loop_stays_responsive_while_the_store_is_slow(
        store: SQLiteStore, tmp_path: Path, block_loop: bool) -> None:
    delay = 0.6  # long enough that a blocked loop (>= delay) stands far from scheduling noise (< delay/3)
    slow = SlowStore(store, delay, block_loop=block_loop)
    r = Recorder(slow, spill_path=tmp_path / "spill.jsonl", batch_size=200)  # type: ignore[arg-type]
    await r.start()

    async def work() -> None:
        for i in range(600):
            r.submit(rec(i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        await r.flush()

    gap = await max_loop_gap(work)
    assert slow.slow_writes >= 3
    assert await store.count_records() == 600
    await r.stop()
    slow.release()
    if block_loop:
        assert gap >= delay * 0.9  # the probe does see a blocked loop
    else:
        assert gap < delay / 3, f"event loop stalled {gap * 1000:.0f} ms while the store slept {delay * 1000:.0f} ms"


# --- a real SQLite fault ------------------------------------------------------------------------


async def test_locked_database_spills_then_replays_exactly_once(store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    log = LogSpy()
    r = Recorder(store, spill_path=spill, batch_size=100, retry_interval=0.05, write_timeout=2.0, logger=log)
    await r.start()
    for i in range(50):  # some go in before the fault
        r.submit(rec(i))
    await r.flush()
    assert r.stats()["written"] == 50

    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    n = 1000
    try:
        for i in range(50, 50 + n):
            r.submit(rec(i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        await r.flush()
        await asyncio.sleep(0.3)  # several failed pings
        st = r.stats()
        assert st["store_healthy"] is False
        assert st["spilled"] == n and st["spill_pending"] == n and st["written"] == 50
        assert st["dropped"] == 0
        assert "locked" in st["last_error"]
        assert len(spill_lines(spill)) == n
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    await wait_until(lambda: r.stats()["store_healthy"] and r.stats()["spill_pending"] == 0)
    st = r.stats()
    assert st["replayed"] == st["spilled"] == n
    assert distinct_ids(store.path) == (50 + n, 50 + n)
    assert not spill.exists() and not (tmp_path / "spill.jsonl.replaying").exists()
    # one warning per change of state, not one per failed ping; counts only, no row contents
    assert len(log.events("records.store_unhealthy")) == 1
    assert len(log.events("records.store_recovered")) == 1
    assert log.events("records.store_unhealthy")[0][0] == "warning"
    assert SECRET_MARK not in repr(log.calls)
    await r.stop()


async def test_write_timeout_counts_as_a_fault(store: SQLiteStore, tmp_path: Path) -> None:
    slow = SlowStore(store, 0.5)
    r = Recorder(slow, spill_path=tmp_path / "spill.jsonl", write_timeout=0.1,  # type: ignore[arg-type]
                 retry_interval=0.05)
    await r.start()
    for i in range(20):
        r.submit(rec(i))
    await r.flush()
    st = r.stats()
    assert st["store_healthy"] is False and st["spilled"] == 20 and "longer than 0.1 s" in st["last_error"]
    slow.delay = 0.0
    await wait_until(lambda: r.stats()["spill_pending"] == 0 and r.stats()["store_healthy"])
    # the timed-out write may have landed as well: the replay stores nothing twice
    assert distinct_ids(store.path) == (20, 20)
    await r.stop()
    slow.release()


# --- bounds, stop, previous runs ----------------------------------------------------------------


async def test_buffer_overflow_spills_instead_of_dropping(store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    r = Recorder(store, spill_path=spill, buffer_size=100)
    for i in range(250):  # writer not started: the buffer fills up
        r.submit(rec(i))
    st = r.stats()
    assert st["buffered"] == 100 and st["spilled"] == 150 and st["dropped"] == 0
    assert [orjson.loads(line)["id"] for line in spill_lines(spill)] == [f"rec-{i:06d}" for i in range(100, 250)]
    await r.start()
    await wait_until(lambda: r.stats()["spill_pending"] == 0 and r.stats()["buffered"] == 0)
    assert distinct_ids(store.path) == (250, 250)
    assert r.stats()["written"] == 100 and r.stats()["replayed"] == 150
    await r.stop()


async def test_stop_flushes_everything(store: SQLiteStore, tmp_path: Path) -> None:
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl", batch_size=5000, flush_interval=30.0)
    await r.start()
    await asyncio.sleep(0.01)  # the writer is asleep for 30 s
    for i in range(1000):
        r.submit(rec(i))
    await r.stop()
    assert await store.count_records() == 1000
    assert r.stats()["written"] == 1000
    # after stop, records are not lost either: they go to the spill file for the next run
    r.submit(rec(5000))
    assert r.stats()["spilled"] == 1
    assert [orjson.loads(x)["id"] for x in spill_lines(tmp_path / "spill.jsonl")] == ["rec-005000"]


async def test_stop_with_the_store_down_spills_the_rest(store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r = Recorder(store, spill_path=spill, flush_interval=30.0, write_timeout=1.0)
        await r.start()
        await asyncio.sleep(0.01)
        for i in range(300):
            r.submit(rec(i))
        await r.stop(timeout=2.0)
        st = r.stats()
        assert st["written"] == 0 and st["spilled"] == 300 and st["dropped"] == 0
        assert len(spill_lines(spill)) == 300
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # the next run replays it
    r2 = Recorder(store, spill_path=spill)
    await r2.start()
    await wait_until(lambda: r2.stats()["spill_pending"] == 0)
    assert distinct_ids(store.path) == (300, 300)
    await r2.stop()


async def test_stop_timeout_while_the_store_hangs(store: SQLiteStore, tmp_path: Path) -> None:
    slow = SlowStore(store, 2.0)
    spill = tmp_path / "spill.jsonl"
    r = Recorder(slow, spill_path=spill, write_timeout=10.0)  # type: ignore[arg-type]
    await r.start()
    for i in range(100):
        r.submit(rec(i))
    await asyncio.sleep(0.15)  # the writer is inside a slow write
    t0 = time.perf_counter()
    await r.stop(timeout=0.2)
    assert time.perf_counter() - t0 < 1.5
    assert r.stats()["spilled"] == 100 and len(spill_lines(spill)) == 100
    slow.release()


async def test_spill_left_by_a_previous_run_is_replayed_and_a_torn_line_skipped(
        store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    lines = [orjson.dumps(rec(i)) for i in range(1200)]
    # a crash mid-write left half a line at the end
    spill.write_bytes(b"\n".join(lines) + b"\n" + orjson.dumps(rec(9999))[:40])
    log = LogSpy()
    r = Recorder(store, spill_path=spill, batch_size=500, logger=log)
    await r.start()
    assert r.stats()["spill_pending"] == 1201
    # the count reaches 0 when the last batch is stored; the replay file is deleted just after
    await wait_until(lambda: r.stats()["spill_pending"] == 0
                     and not (tmp_path / "spill.jsonl.replaying").exists())
    st = r.stats()
    assert st["replayed"] == 1200 and st["spill_corrupt"] == 1 and st["dropped"] == 0
    assert distinct_ids(store.path) == (1200, 1200)
    assert not spill.exists() and not (tmp_path / "spill.jsonl.replaying").exists()
    assert log.events("records.spill_corrupt_lines")[0][2]["count"] == 1
    await r.stop()


async def test_new_spills_after_a_torn_line_are_not_glued_to_it(store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.write_bytes(orjson.dumps(rec(1)) + b"\n" + orjson.dumps(rec(2))[:30])
    r = Recorder(store, spill_path=spill, buffer_size=1)
    r.submit(rec(3))  # buffered
    r.submit(rec(4))  # overflow: appended to the spill file
    await r.start()
    await wait_until(lambda: r.stats()["spill_pending"] == 0 and r.stats()["buffered"] == 0)
    assert [row["id"] for row in await store.query_records()] == ["rec-000001", "rec-000003", "rec-000004"]
    assert r.stats()["spill_corrupt"] == 1
    await r.stop()


async def test_a_replay_cut_short_and_repeated_stores_nothing_twice(store: SQLiteStore, tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    await store.write_records([rec(i) for i in range(0, 300)])  # the first part of an earlier replay
    (tmp_path / "spill.jsonl.replaying").write_bytes(b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(500)))
    spill.write_bytes(b"".join(orjson.dumps(rec(i)) + b"\n" for i in range(500, 600)))
    r = Recorder(store, spill_path=spill)
    await r.start()
    await wait_until(lambda: r.stats()["spill_pending"] == 0)
    assert distinct_ids(store.path) == (600, 600)
    assert r.stats()["replayed"] == 600
    assert not spill.exists() and not (tmp_path / "spill.jsonl.replaying").exists()
    await r.stop()


# --- what cannot be kept is counted and logged ----------------------------------------------------


async def test_spill_disk_failure_is_counted_as_dropped(store: SQLiteStore, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    log = LogSpy()
    r = Recorder(store, spill_path=not_a_dir / "spill.jsonl", buffer_size=1, logger=log)
    for i in range(3):
        r.submit(rec(i))
    st = r.stats()
    assert st["buffered"] == 1 and st["spilled"] == 0 and st["dropped"] == 2
    errors = log.events("records.dropped")
    assert [e[0] for e in errors] == ["error", "error"] and errors[-1][2]["dropped_total"] == 2
    assert SECRET_MARK not in repr(log.calls)
    await r.start()
    await r.stop()
    assert await store.count_records() == 1


async def test_an_unencodable_record_is_dropped_alone(store: SQLiteStore, tmp_path: Path) -> None:
    log = LogSpy()
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl", logger=log)
    await r.start()
    r.submit(rec(1))
    r.submit(rec(2, params={"oops": {1, 2}}))  # a set: not JSON
    r.submit(rec(3))
    await r.flush()
    st = r.stats()
    assert st["written"] == 2 and st["dropped"] == 1 and st["store_healthy"] is True
    assert [row["id"] for row in await store.query_records()] == ["rec-000001", "rec-000003"]
    assert len(log.events("records.dropped")) == 1
    await r.stop()


class FlakyStore:
    """Fails a random share of writes and pings, like a store under lock contention."""

    def __init__(self, inner: SQLiteStore, rate: float, seed: int) -> None:
        import random

        self.inner, self.rate, self.rng = inner, rate, random.Random(seed)
        self.url = inner.url
        self.failures = 0

    def _maybe_fail(self) -> None:
        if self.rng.random() < self.rate:
            self.failures += 1
            raise sqlite3.OperationalError("database is locked")

    async def write_records(self, rows: Sequence[Any]) -> int:
        self._maybe_fail()
        n = await self.inner.write_records(rows)
        self._maybe_fail()  # after the commit: the caller sees a failure although the rows landed
        return n

    async def ping(self) -> None:
        self._maybe_fail()
        await self.inner.ping()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_nothing_is_lost_under_random_faults_and_overflow(store: SQLiteStore, tmp_path: Path, seed: int) -> None:
    flaky = FlakyStore(store, 0.3, seed)
    spill = tmp_path / "spill.jsonl"
    r = Recorder(flaky, spill_path=spill, buffer_size=40, batch_size=25,  # type: ignore[arg-type]
                 flush_interval=0.005, retry_interval=0.01)
    await r.start()
    n = 3000
    for i in range(n):
        r.submit(rec(i))
        if i % 20 == 0:
            await asyncio.sleep(0.001)
    await r.flush()
    flaky.rate = 0.0
    await wait_until(lambda: r.stats()["store_healthy"] and r.stats()["spill_pending"] == 0
                     and r.stats()["buffered"] == 0)
    st = r.stats()
    assert flaky.failures > 10 and st["spilled"] > 0  # the faults and the overflow did happen
    assert st["dropped"] == 0 and st["spill_corrupt"] == 0
    assert st["written"] + st["spilled"] == n
    assert distinct_ids(store.path) == (n, n)
    await r.stop()
    assert not spill.exists() and not (tmp_path / "spill.jsonl.replaying").exists()
