"""SQLite record store: schema, WAL, idempotent writes, queries."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

import orjson
import pytest

from proxy.records import Record, RecordStore, SQLiteStore, open_store
from proxy.records._rows import INDEXED_COLUMNS, REPORT_COLUMNS
from proxy.records._rows import row_params as _row_params
from proxy.records._store import _MIGRATIONS, SCHEMA_VERSION


def rec(i: int, **kw: object) -> Record:
    base = dict(id=f"rec-{i:05d}", request_id=f"req-{i // 2:05d}", attempt=1 + i % 2, attempt_reason="primary",
                endpoint="chat.completions", route="support-bot", variant="prod", provider="openai",
                model_requested="gpt-4o-2024-08-06", started_at=1_700_000_000.0 + i,
                request={"model": "support-bot", "messages": [{"role": "user", "content": f"question {i}"}]},
                params={"temperature": 0}, tags=["vip"], status=200, served=i % 2 == 1)
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path):
    s = open_store(f"sqlite:///{tmp_path}/data/records.db?busy_timeout_ms=50")
    await s.open()
    yield s
    await s.close()


# --- URLs ---------------------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path) -> None:
    s = open_store("sqlite:///relative/dir/records.db")
    assert isinstance(s, SQLiteStore) and isinstance(s, RecordStore)
    assert s.path == "relative/dir/records.db" and s.url == "sqlite:///relative/dir/records.db"
    assert s.busy_timeout_ms == 2000
    s = open_store(f"sqlite:///{tmp_path}/abs.db")  # tmp_path is absolute: four slashes
    assert s.path == f"{tmp_path}/abs.db"
    assert open_store("sqlite:////var/lib/x.db?busy_timeout_ms=250").busy_timeout_ms == 250
    assert open_store("sqlite:////var/lib/x.db", busy_timeout_ms=10).busy_timeout_ms == 10
    assert open_store("sqlite:///:memory:").path == ":memory:"
    pg = open_store("postgres://sg:hunter2@db:5433/sluice?schema=prod")
    assert pg.dialect.name == "postgresql" and pg.url == "postgresql://sg@db:5433/sluice?schema=prod"


@pytest.mark.parametrize("url,message", [
    ("postgresql://user:hunter2@db/sluicegate?pool=3", "unknown PostgreSQL URL parameter"),
    ("postgres://user:hunter2@db/sluicegate?schema=a-b", "schema must be a plain identifier"),
    ("mysql://user:hunter2@db/x", "unsupported URL scheme 'mysql'"),
    ("sqlite://records.db", "three slashes"),
    ("sqlite:///", "no file path"),
    ("records.db", "sqlite:///"),
    ("sqlite:///x.db?timeout=5", "unknown SQLite URL parameter"),
    ("sqlite:///x.db?busy_timeout_ms=soon", "integer"),
])
def test_open_store_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


# --- schema -------------------------------------------------------------------------------------


async def test_fresh_store_creates_schema_with_wal(store: SQLiteStore) -> None:
    assert Path(store.path).exists()
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"records", "outcomes", "schema_version", "scores", "reviews", "scoring_cursors", "canary_state",
                "canary_decisions", "response_cache"} <= tables
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        cols = [r[1] for r in conn.execute("PRAGMA table_info(records)")]
        assert cols == ["id", "request_id", "attempt", "served", "started_at", "route", "variant", "experiment",
                        "episode_id", "correlation_id", "user_id", "provider", "model_requested", "model_served",
                        "status", "outcome", "request_hash", "data", *REPORT_COLUMNS]
        indexes = {r[0]: r[1] for r in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
        index_cols = {tuple(c[2] for c in conn.execute(f"PRAGMA index_info({name})")) for name in indexes}
        assert index_cols == {
            ("route", "started_at"), ("started_at",), ("route", "served", "started_at"),
            ("route", "variant", "attempt", "served", "latency_ms", "started_at", "ttft_ms", "prompt_tokens",
             "completion_tokens", "cost_usd"),
            ("route", "variant", "attempt", "served", "ttft_ms", "started_at"),
            ("route", "variant", "model_served", "system_fingerprint", "attempt", "started_at"),
            ("request_id", "attempt", "route", "variant", "started_at", "bucket", "user_id", "episode_id",
             "policy_version", "served", "latency_ms", "guard_failures", "failed_guards"),  # v9: report units
            ("episode_id", "route", "variant", "attempt", "started_at", "bucket", "user_id"),
            ("route", "policy_version", "started_at"),  # v9, partial: attempt = 1
            ("request_id",),  # partial: attempt > 1
            ("route", "started_at"),  # partial: guard_failures > 0
            ("level", "request_id"),
            ("level", "metric", "request_id", "received_at", "id", "value"),  # v4: latest outcome
            ("level", "metric", "episode_id", "received_at", "id", "value"),
            ("scorer", "record_id"), ("record_id",), ("entered_at",),  # v5: scores, reviews
            ("route", "at"),  # v6: the canary decision log
            ("expires_at",),  # v7: the output cache
        }
        pk = [r for r in conn.execute("PRAGMA table_info(records)") if r[5]]
        assert [r[1] for r in pk] == ["id"]
    finally:
        conn.close()


async def test_reopen_keeps_data_and_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    s = open_store(url)
    await s.open()
    await s.write_records([rec(1)])
    await s.close()
    await s.close()  # idempotent
    s = open_store(url)
    await s.open()
    assert await s.count_records() == 1
    await s.close()
    conn = sqlite3.connect(f"{tmp_path}/r.db")
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/r.db")
    await s.open()
    await s.close()
    conn = sqlite3.connect(f"{tmp_path}/r.db")
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    s = open_store(f"sqlite:///{tmp_path}/r.db")
    with pytest.raises(RuntimeError, match="schema version 99"):
        await s.open()
    await s.close()


async def test_use_before_open_fails(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/r.db")
    with pytest.raises(RuntimeError, match="not open"):
        await s.count_records()


# --- writes -------------------------------------------------------------------------------------


async def test_writes_are_idempotent(store: SQLiteStore) -> None:
    assert await store.write_records([rec(1), rec(2), rec(3)]) == 3
    assert await store.write_records([rec(1), rec(2), rec(3)]) == 0
    assert await store.write_records([rec(3), rec(4)]) == 1
    assert await store.write_records([]) == 0
    # the same id inside one batch
    assert await store.write_records([rec(5), rec(5)]) == 1
    assert await store.count_records() == 5


async def test_records_and_dicts_store_the_same_row(store: SQLiteStore) -> None:
    r1 = rec(1, episode_id="ep-1", correlation_id="c-1", user_id="u-1", model_served="gpt-4o-2024-08-06",
             outcome="ok", request_hash="ab" * 32, experiment="exp")
    r2 = dataclasses.replace(r1, id="rec-dict")
    await store.write_records([r1])
    await store.write_records([dataclasses.asdict(r2)])
    rows = await store.query_records()
    assert rows[0] == dataclasses.asdict(r1)
    assert rows[1] == dataclasses.asdict(r2)
    conn = sqlite3.connect(store.path)
    cols = conn.execute(
        "SELECT request_id, attempt, served, started_at, route, variant, experiment, episode_id, correlation_id,"
        " user_id, provider, model_requested, model_served, status, outcome, request_hash, data"
        " FROM records WHERE id = ?", (r1.id,)).fetchone()
    conn.close()
    assert cols[:16] == ("req-00000", 2, 1, 1_700_000_001.0, "support-bot", "prod", "exp", "ep-1", "c-1", "u-1",
                         "openai", "gpt-4o-2024-08-06", "gpt-4o-2024-08-06", 200, "ok", "ab" * 32)
    assert isinstance(cols[16], str) and orjson.loads(cols[16]) == dataclasses.asdict(r1)


async def test_a_bad_row_fails_the_whole_batch(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="without an id"):
        await store.write_records([rec(1), {"route": "x"}])
    with pytest.raises(TypeError):
        await store.write_records([rec(2), rec(3, params={"bad": {1, 2}})])
    assert await store.count_records() == 0
    assert await store.write_records([rec(1)]) == 1  # the store is still usable


# --- queries ------------------------------------------------------------------------------------


async def test_query_filters_and_order(store: SQLiteStore) -> None:
    rows = [rec(i, route="a" if i % 3 else "b") for i in range(10)]
    rows.append(rec(100, started_at=1_700_000_005.0, id="rec-00005-z"))  # same time as rec-00005
    rows.append(rec(101, started_at=1_700_000_005.0, id="rec-00005-a"))
    await store.write_records(list(reversed(rows)))
    everything = await store.query_records()
    assert [r["id"] for r in everything] == [
        "rec-00000", "rec-00001", "rec-00002", "rec-00003", "rec-00004", "rec-00005", "rec-00005-a",
        "rec-00005-z", "rec-00006", "rec-00007", "rec-00008", "rec-00009"]
    assert [r["id"] for r in await store.query_records(since=1_700_000_008.0)] == ["rec-00008", "rec-00009"]
    assert [r["id"] for r in await store.query_records(until=1_700_000_002.0)] == ["rec-00000", "rec-00001"]
    assert [r["id"] for r in await store.query_records(since=1_700_000_002.0, until=1_700_000_004.0)] == [
        "rec-00002", "rec-00003"]
    assert [r["id"] for r in await store.query_records(route="b")] == [
        "rec-00000", "rec-00003", "rec-00006", "rec-00009"]
    assert [r["id"] for r in await store.query_records(request_id="req-00001")] == ["rec-00002", "rec-00003"]
    assert [r["id"] for r in await store.query_records(route="a", limit=3)] == [
        "rec-00001", "rec-00002", "rec-00004"]
    assert await store.query_records(route="nope") == []
    assert await store.count_records() == 12


# --- faults and threads -------------------------------------------------------------------------


async def test_exclusive_lock_makes_writes_and_ping_fail(store: SQLiteStore) -> None:
    await store.ping()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.write_records([rec(1)])
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.ping()
        assert await store.count_records() == 0  # WAL: readers are not blocked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.ping()
    assert await store.write_records([rec(1)]) == 1


async def test_writes_on_one_thread_reads_on_another(store: SQLiteStore) -> None:
    writes: set[int] = set()
    reads: set[int] = set()
    original, original_reader = store._connection, store._reader

    def spy() -> sqlite3.Connection:
        writes.add(threading.get_ident())
        return original()

    def read_spy() -> sqlite3.Connection:
        reads.add(threading.get_ident())
        return original_reader()

    store._connection = spy  # type: ignore[method-assign]
    store._reader = read_spy  # type: ignore[method-assign]
    await store.write_records([rec(i) for i in range(3)])
    await store.ping()
    await store.query_records()
    await store.count_records()
    await store.fetch("SELECT count(*) FROM records")
    assert len(writes) == 1 and len(reads) == 1 and writes != reads
    assert threading.get_ident() not in writes | reads


async def test_a_long_read_does_not_hold_up_writes(store: SQLiteStore) -> None:
    import asyncio
    import time

    await store.write_records([rec(i) for i in range(2)])
    # a deliberately slow read (recursive CTE) on the read connection, while writes go on
    slow = asyncio.ensure_future(store.fetch(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) FROM c"))
    await asyncio.sleep(0.01)
    t = time.perf_counter()
    assert await store.write_records([rec(i) for i in range(2, 10)]) == 8
    wrote_in = time.perf_counter() - t
    assert not slow.done(), "the read should still be running (make it slower on a fast machine)"
    assert (await slow)[0][0] == 3000000
    assert wrote_in < 0.5
    assert await store.count_records() == 10  # the read connection sees committed writes


async def test_memory_store_reads_share_the_one_connection() -> None:
    s = open_store("sqlite:///:memory:")
    await s.open()
    try:
        await s.write_records([rec(1)])
        assert await s.count_records() == 1
        assert await s.fetch("SELECT id FROM records") == [("rec-00001",)]
    finally:
        await s.close()


def _report_row(r: Record) -> dict:
    return dict(zip(REPORT_COLUMNS, _row_params(r)[1 + len(INDEXED_COLUMNS):-1]))


async def test_report_columns_are_filled_on_write_and_by_the_v3_migration(tmp_path: Path) -> None:
    guards = [{"guard": "a", "passed": False, "taxonomy": "invented_tool_param", "severity": "major"},
              {"guard": "b", "passed": True, "taxonomy": "refusal", "severity": "minor"},
              {"guard": "c", "taxonomy": "pii", "severity": "critical"}]
    records = [
        rec(1, latency_ms=12.5, ttft_ms=3.0, cost_usd=0.002, system_fingerprint="fp_x", guards=guards,
            usage={"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}, attempt_reason="fallback"),
        rec(2),  # nothing measured: NULLs, no guards
        rec(3, usage={"prompt_tokens": 7.5}, guards=[{"guard": "d", "passed": True}]),
    ]
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    for version in (1, 2):
        for statement in _MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    for r in records:  # as a v2 sluicegate wrote them: indexed columns and data only
        params = _row_params(r)
        conn.execute(f"INSERT INTO records (id, {', '.join(INDEXED_COLUMNS)}, data) "
                     f"VALUES ({', '.join('?' * (len(INDEXED_COLUMNS) + 2))})",
                     [*params[:1 + len(INDEXED_COLUMNS)], params[-1]])
    conn.close()
    s = open_store(f"sqlite:///{path}")
    await s.open()  # migrates to v3 and back-fills from data
    try:
        migrated = await s.fetch(f"SELECT {', '.join(REPORT_COLUMNS)} FROM records ORDER BY id")
        expected = [tuple(_report_row(r).values()) for r in records]
        assert migrated == expected
        assert expected[0][:8] == ("fallback", 12.5, 3.0, 10, 4, 0.002, "fp_x", 2)
        assert orjson.loads(expected[0][8]) == [["invented_tool_param", "major"], ["pii", "critical"]]
        assert expected[1][1:] == (None,) * 6 + (0, None, 0, None, None)  # v9: bucket, policy_version
        assert expected[2][3:5] == (7.5, None) and expected[2][7:] == (0, None, 0, None, None)
        # a dict row (as replayed from the spill file) gives the same columns as the Record
        await s.write_records([rec(1, id="again", latency_ms=12.5, ttft_ms=3.0, cost_usd=0.002,
                                   system_fingerprint="fp_x", guards=guards, attempt_reason="fallback",
                                   usage={"prompt_tokens": 10, "completion_tokens": 4}).to_dict()])
        again = await s.fetch(f"SELECT {', '.join(REPORT_COLUMNS)} FROM records WHERE id = 'again'")
        assert again == [expected[0]]
    finally:
        await s.close()



async def test_outcomes_share_the_write_path_and_are_idempotent(store):
    from proxy.records import Outcome

    outcome = Outcome(id="out_1", metric="task_success", value=1.0, level="episode", received_at=1.0,
                      episode_id="ep-1", source="app")
    as_spilled = {"id": "out_2", "metric": "task_success", "value": 0.0, "level": "inference",
                  "received_at": 2.0, "request_id": "req_1", "kind": "outcome"}
    assert await store.write_records([rec(1), outcome, as_spilled, outcome]) == 3
    rows = await store.fetch("SELECT id, metric, value, level, episode_id, request_id FROM outcomes ORDER BY id")
    assert rows == [("out_1", "task_success", 1.0, "episode", "ep-1", None),
                    ("out_2", "task_success", 0.0, "inference", None, "req_1")]
    assert await store.count_records() == 1


async def test_none_store_turns_recording_off() -> None:
    from proxy.records._null import NullStore

    store = open_store("none://")
    assert isinstance(store, NullStore) and isinstance(store, RecordStore)
    await store.open()
    assert await store.write_records([{"id": "a"}, {"id": "b"}]) == 2
    assert store.discarded == 2
    assert await store.query_records() == [] and await store.count_records() == 0
    assert await store.fetch("SELECT 1") == []
    await store.close()


async def test_read_lanes_run_queries_at_the_same_time_on_their_own_connections(store: SQLiteStore) -> None:
    import asyncio

    # a temp table made on lane 0 is not visible on lane 1: each lane has its own connection
    await store.fetch("CREATE TEMP TABLE lane_probe AS SELECT 1 AS x")
    assert await store.fetch("SELECT x FROM lane_probe") == [(1,)]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.fetch("SELECT x FROM lane_probe", lane=1)
    # both lanes answer concurrently
    a, b = await asyncio.gather(store.fetch("SELECT 1"), store.fetch("SELECT 2", lane=1))
    assert (a, b) == ([(1,)], [(2,)])


async def test_a_record_object_fills_the_request_hash_column(store) -> None:
    from proxy.records import request_hash

    r = rec(1)
    await store.write_records([r, rec(2, request=None)])
    rows = dict(await store.fetch("SELECT id, request_hash FROM records"))
    assert rows == {"rec-00001": request_hash(rec(1).request), "rec-00002": None}
