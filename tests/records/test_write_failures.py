"""A full disk: `/readyz` and the recorder say the store is not writable while writes fail — also
after the store answers a ping (a full SQLite database still does) — and ready again only once a
write succeeds, with every record the test sent in the store.

The disk is filled with SQLite's own cap (`PRAGMA max_page_count` on the store's write connection):
every insert that needs a new page fails with SQLITE_FULL ("database or disk is full"), exactly
as on a full disk, while `BEGIN IMMEDIATE; ROLLBACK` (the ping) still succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.records import Record, Recorder, SQLiteStore
from proxy.server import Settings, create_app
from tests.records._wait import wait_until

BIG = "x" * 20_000  # every record needs new pages


class LogSpy:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **kw: self.calls.append((level, event, kw))

    def events(self, event: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [c for c in self.calls if c[1] == event]


def rec(i: int) -> Record:
    return Record(id=f"rec-{i:06d}", request_id=f"req-{i:06d}", attempt=1, attempt_reason="primary", endpoint="chat.completions",
                  route="bot", variant="prod", provider="mock", model_requested="m", started_at=1.7e9 + i,
                  capture="full", request={"messages": [{"role": "user", "content": f"{i} {BIG}"}]})


async def fill_disk(store: SQLiteStore) -> None:
    """Cap the database at its current size: the next insert needing a page fails with SQLITE_FULL."""
    def cap() -> None:
        conn = store._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    await store._call(cap)


async def free_disk(store: SQLiteStore) -> None:
    await store._call(lambda: store._connection().execute("PRAGMA max_page_count = 1073741823"))


def stored_ids(path: str | Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM records")]



# --------------------------------------------------------------------------- the recorder


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    """Recorders to stop at the end even when the test fails (before the store fixture closes the store)."""
    started: list[Recorder] = []
    yield started
    for r in started:
        await r.stop()


async def test_a_full_database_stays_unwritable_although_pings_succeed(store: SQLiteStore, tmp_path: Path,
                                                                        recorders: list[Recorder]) -> None:
    log = LogSpy()
    spill = tmp_path / "spill.jsonl"
    r = Recorder(store, spill_path=spill, retry_interval=0.02, logger=log)
    recorders.append(r)
    await r.start()
    for i in range(5):
        r.submit(rec(i))
    await r.flush()
    assert r.stats()["store_healthy"] is True and r.stats()["written"] == 5

    await fill_disk(store)
    n = 60
    for i in range(5, 5 + n):
        r.submit(rec(i))
    await r.flush()
    with pytest.raises(sqlite3.OperationalError, match="full"):  # the fault is real
        await store.write_records([rec(999)])
    await store.ping()  # ... and the ping cannot see it
    await asyncio.sleep(0.3)  # ~15 ping intervals: every ping succeeded, every write after it failed
    st = r.stats()
    assert st["store_healthy"] is False, st
    assert st["store_failures"] >= 1 and "full" in st["last_error"] and st["last_failure_at"] is not None
    assert st["spilled"] == n and st["written"] == 5 and st["dropped"] == 0
    # one warning for the outage, and no "recovered" after each successful ping
    assert len(log.events("records.store_unhealthy")) == 1
    assert log.events("records.store_recovered") == []

    await free_disk(store)
    await wait_until(lambda: r.stats()["store_healthy"] and r.stats()["spill_pending"] == 0)
    st = r.stats()
    assert st["store_failures"] == 0 and st["last_write_at"] >= st["last_failure_at"]
    assert len(log.events("records.store_recovered")) == 1
    ids = stored_ids(store.path)
    assert sorted(ids) == [f"rec-{i:06d}" for i in range(5 + n)]  # every record the test sent, once


# --------------------------------------------------------------------------- /readyz of a gateway

POLICY = """
providers:
  mock: {kind: openai, base_url: 'http://mock.test/v1'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  bot: {model: prod, capture: full}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, spill: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    transport = httpx.ASGITransport(app=create_mock())
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db", spill_path=spill,
                              transports={"mock": transport}, recorder_options={"retry_interval": 0.02},
                              report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield client, app.state.gateway


async def ask(client: httpx.AsyncClient, i: int) -> str:
    body = {"model": "bot", "messages": [{"role": "user", "content": f"question {i} {BIG}"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-sluicegate-request-id"]


async def readyz(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/readyz")
    assert response.status_code == 200  # degraded, never unready: requests keep flowing
    return response.json()


async def test_readyz_says_degraded_while_the_disk_is_full_and_ready_once_a_write_succeeds(tmp_path: Path) -> None:
    async with gateway(tmp_path, tmp_path / "other-disk" / "spill.jsonl") as (client, gw):
        sent = [await ask(client, 0)]
        await gw.recorder.flush()
        assert (await readyz(client))["store"]["writable"] is True

        await fill_disk(gw.store)
        sent += [await ask(client, i) for i in range(1, 31)]
        await gw.recorder.flush()
        await asyncio.sleep(0.3)  # the recorder pinged the store many times meanwhile, successfully
        during = await readyz(client)
        assert during["status"] == "degraded", during
        store = during["store"]
        assert store["writable"] is False and store["failures_in_a_row"] >= 1 and "full" in store["last_error"]
        assert store["last_write_at"] < store["last_failure_at"]
        assert during["recorder"]["spilled"] == 30 and during["recorder"]["dropped"] == 0
        assert "sluicegate_store_writable 0.0" in (await client.get("/metrics")).text  # alertable

        await free_disk(gw.store)
        await wait_until(lambda: gw.recorder.stats()["spill_pending"] == 0 and gw.recorder.stats()["store_healthy"])
        after = await readyz(client)
        assert after["status"] == "ready" and after["store"]["writable"] is True
        assert after["store"]["failures_in_a_row"] == 0
        assert after["recorder"]["replayed"] == 30
        assert "sluicegate_store_writable 1.0" in (await client.get("/metrics")).text
    assert sorted(r for (r,) in sqlite3.connect(tmp_path / "s.db").execute("SELECT request_id FROM records")) \
        == sorted(sent)


async def test_readyz_is_not_fooled_by_pings_when_the_spill_file_fails_too(tmp_path: Path) -> None:
    """The finding: store and spill file on one full disk, records dropped, and after the next
    successful ping `/readyz` said `writable: true`."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")  # the spill file's folder cannot be created: every spill write fails
    async with gateway(tmp_path, blocker / "spill.jsonl") as (client, gw):
        await ask(client, 0)
        await gw.recorder.flush()
        await fill_disk(gw.store)
        for i in range(1, 11):
            await ask(client, i)
        await gw.recorder.flush()
        await asyncio.sleep(0.3)  # ~15 successful pings
        during = await readyz(client)
        assert during["store"]["writable"] is False and during["status"] == "degraded"
        assert during["recorder"]["dropped"] == 10  # counted, never silent

        await free_disk(gw.store)
        await asyncio.sleep(0.1)
        assert (await readyz(client))["store"]["writable"] is False  # nothing written yet: not known writable
        await ask(client, 11)
        await wait_until(lambda: gw.recorder.stats()["store_healthy"])
        after = await readyz(client)
        assert after["store"]["writable"] is True
        assert after["status"] == "degraded"  # records were lost: stays visible until restart
