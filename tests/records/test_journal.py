"""The journal (`serve --journal`): a record is on disk before `submit` returns, sealed (capture
mode applied), replayed once after a crash, deleted once stored, kept while records were dropped.

A real process killed with SIGKILL is in tests/e2e/test_kill9_journal.py; here the recorder runs
in-process and a crash is what it leaves on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.records import Record, Recorder, SQLiteStore
from proxy.records._seal import encode_row
from tests.records._wait import wait_until

EMAIL = "zebulon.quartzfeather@example.org"  # redacted capture: must never reach the journal


def rec(i: int, capture: str = "redacted") -> Record:
    return Record(id=f"rec-{i:06d}", request_id=f"req-{i:06d}", attempt=1, attempt_reason="primary",
                  endpoint="chat.completions", route="bot", variant="prod", provider="mock", model_requested="m",
                  started_at=1.7e9 + i, capture=capture,
                  request={"messages": [{"role": "user", "content": f"question {i}, write to {EMAIL}"}]})


def generations(folder: Path, name: str = "journal") -> list[Path]:
    return sorted(folder.glob(f"{name}.[0-9]*"))


def journal_lines(folder: Path, name: str = "journal") -> list[dict[str, Any]]:
    rows = []
    for path in generations(folder, name):
        rows += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return rows


def stored(path: str | Path) -> tuple[int, int, list[str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        count, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM records").fetchone()
        return count, distinct, sorted(r for (r,) in conn.execute("SELECT id FROM records"))



class StuckStore:
    """Writes never finish (a store hung on a lock): records stay in the recorder's memory."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner, self.url, self.dialect = inner, inner.url, inner.dialect
        self.release = asyncio.Event()

    async def write_records(self, rows: Sequence[Any]) -> int:
        await self.release.wait()
        return await self.inner.write_records(rows)

    async def ping(self) -> None:
        await self.inner.ping()


class BrokenStore:
    """Every write and ping fails (a full disk)."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner, self.url, self.dialect = inner, inner.url, inner.dialect

    async def write_records(self, rows: Sequence[Any]) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    async def ping(self) -> None:
        raise sqlite3.OperationalError("database or disk is full")


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    started: list[Recorder] = []
    yield started
    for r in started:
        await r.stop(timeout=2.0)


async def test_a_record_is_in_the_journal_sealed_before_submit_returns(store: SQLiteStore, tmp_path: Path,
                                                                       recorders: list[Recorder]) -> None:
    stuck = StuckStore(store)
    r = Recorder(stuck, spill_path=tmp_path / "spill.jsonl", journal_path=tmp_path / "journal")  # type: ignore[arg-type]
    recorders.append(r)
    await r.start()
    for i in range(50):
        r.submit(rec(i))
        # no await in between: the line is on disk when submit returns
        lines = journal_lines(tmp_path)
        assert len(lines) == i + 1 and lines[-1]["id"] == f"rec-{i:06d}"
    assert r.stats()["written"] == 0  # nothing reached the store: the journal is the only copy on disk
    text = b"".join(p.read_bytes() for p in generations(tmp_path)).decode()
    assert EMAIL not in text and "[EMAIL]" in text  # the capture mode applies before anything touches the disk
    assert lines[0] == orjson.loads(encode_row(rec(0)))  # the same row the store would hold
    stuck.release.set()
    await r.flush()
    assert stored(store.path)[0] == 50
    assert r.stats()["journal"]["appended"] == 50 and r.stats()["journal"]["failed"] == 0


async def test_journal_left_by_a_crash_is_replayed_once(store: SQLiteStore, tmp_path: Path,
                                                        recorders: list[Recorder]) -> None:
    # what a killed process leaves: generation 1 (its first 30 records already in the store),
    # generation 2 with a record torn by the kill
    await store.write_records([rec(i) for i in range(30)])
    (tmp_path / "journal.1").write_bytes(b"".join(encode_row(rec(i)) + b"\n" for i in range(60)))
    (tmp_path / "journal.2").write_bytes(b"".join(encode_row(rec(i)) + b"\n" for i in range(60, 80))
                                         + encode_row(rec(80))[:40])
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl", journal_path=tmp_path / "journal")
    recorders.append(r)
    await r.start()
    await wait_until(lambda: r.stats()["spill_pending"] == 0)
    count, distinct, ids = stored(store.path)
    assert count == distinct == 80 and ids == [f"rec-{i:06d}" for i in range(80)]  # all, none twice
    st = r.stats()
    assert st["journal"]["recovered"] == 81 and st["spill_corrupt"] == 1  # the torn line: skipped, counted
    assert journal_lines(tmp_path) == []  # the leftovers are gone (this process's generation is empty)
    r.submit(rec(100))
    assert [row["id"] for row in journal_lines(tmp_path)] == ["rec-000100"]


async def test_generations_are_deleted_once_their_records_are_stored(store: SQLiteStore, tmp_path: Path,
                                                                     recorders: list[Recorder]) -> None:
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl", journal_path=tmp_path / "journal",
                 journal_rotate_s=0.02)
    recorders.append(r)
    await r.start()
    n = 0
    for _ in range(20):
        for _ in range(25):
            r.submit(rec(n))
            n += 1
        await asyncio.sleep(0.01)
    await r.flush()
    await asyncio.sleep(0.1)  # a few ticks: the finished generations go
    files = generations(tmp_path)
    assert len(files) <= 2, files
    assert stored(store.path)[0] == n
    # what is still journaled is only what was submitted last (a bounded tail), never lost records
    assert len(journal_lines(tmp_path)) < n
    await r.stop()
    assert generations(tmp_path) == []  # everything stored: nothing to replay


async def test_journal_is_kept_for_the_next_start_when_records_are_dropped(store: SQLiteStore, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")  # the spill file cannot be written either
    r = Recorder(BrokenStore(store), spill_path=blocker / "spill.jsonl",  # type: ignore[arg-type]
                 journal_path=tmp_path / "journal", journal_rotate_s=0.01, retry_interval=0.01)
    await r.start()
    for i in range(40):
        r.submit(rec(i))
        if i % 10 == 0:
            await asyncio.sleep(0.02)
    await r.flush()
    await r.stop()
    assert r.stats()["dropped"] == 40
    assert sorted(row["id"] for row in journal_lines(tmp_path)) == [f"rec-{i:06d}" for i in range(40)]

    again = Recorder(store, spill_path=tmp_path / "spill.jsonl", journal_path=tmp_path / "journal")
    await again.start()
    await wait_until(lambda: again.stats()["spill_pending"] == 0)
    await again.stop()
    count, distinct, ids = stored(store.path)
    assert count == distinct == 40 and ids == [f"rec-{i:06d}" for i in range(40)]  # the drops came back
    assert generations(tmp_path) == []


async def test_an_unwritable_journal_is_counted_and_records_still_flow(store: SQLiteStore, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    r = Recorder(store, spill_path=tmp_path / "spill.jsonl", journal_path=blocker / "journal")
    await r.start()
    for i in range(25):
        r.submit(rec(i))
    await r.flush()
    journal = r.stats()["journal"]
    assert journal["writable"] is False and journal["failed"] == 25 and journal["appended"] == 0
    assert stored(store.path)[0] == 25  # the records themselves are not lost
    await r.stop()


async def test_a_second_process_on_the_same_journal_is_refused(store: SQLiteStore, tmp_path: Path,
                                                               recorders: list[Recorder]) -> None:
    """Replicas sharing a --journal would adopt (and delete) each other's live files."""
    first = Recorder(store, spill_path=tmp_path / "a.spill.jsonl", journal_path=tmp_path / "journal")
    recorders.append(first)
    await first.start()
    first.submit(rec(1))
    before = [(p.name, p.read_bytes()) for p in generations(tmp_path)]
    second = Recorder(store, spill_path=tmp_path / "b.spill.jsonl", journal_path=tmp_path / "journal")
    recorders.append(second)
    await second.start()
    assert second.stats()["journal"]["writable"] is False and second.stats()["journal"]["recovered"] == 0
    second.submit(rec(2))
    assert second.stats()["journal"]["failed"] == 1
    assert [(p.name, p.read_bytes()) for p in generations(tmp_path)] == before  # the first one's files untouched
    first.submit(rec(3))
    assert [row["id"] for row in journal_lines(tmp_path)] == ["rec-000001", "rec-000003"]
