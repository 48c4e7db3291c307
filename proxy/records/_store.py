"""Where records are kept: the `RecordStore` interface and its SQLite implementation.

`open_store(url)` picks the implementation from the URL:

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (and `sqlite:///:memory:` for
  tests); query parameter `busy_timeout_ms` (default 2000), e.g. `sqlite:///rec.db?busy_timeout_ms=500`.
- `postgresql://…` comes with the scale-out work.

SQLite runs in WAL mode with synchronous=NORMAL (a power cut may lose the last transactions, never
corrupt the file; the recorder's spill file covers crashes of the process). All database work
runs on ONE dedicated thread (a `ThreadPoolExecutor(max_workers=1)`, which owns the connection),
reached with `loop.run_in_executor`, so the event loop never waits on SQLite.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qs

import orjson

from proxy.records._model import Outcome, Record
from proxy.records._seal import encode_row

__all__ = ["INDEXED_COLUMNS", "SCHEMA_VERSION", "RecordStore", "SQLiteStore", "open_store"]

_T = TypeVar("_T")


@runtime_checkable
class RecordStore(Protocol):
    """A place to keep records. Rows are the dicts of `Record` (a `Record` itself is accepted too)."""

    url: str  # without credentials

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def write_records(self, rows: Sequence[Mapping[str, Any] | Record]) -> int:
        """Insert rows in one transaction; a row whose id is already stored is skipped
        (idempotent). Returns the number of rows newly inserted."""

    async def ping(self) -> None:
        """Raise if the store cannot take a write right now."""

    async def query_records(self, *, since: float | None = None, until: float | None = None,
                            route: str | None = None, request_id: str | None = None,
                            limit: int | None = None) -> list[dict[str, Any]]:
        """Records with since <= started_at < until (each bound optional), ordered by
        (started_at, id), oldest first; `limit` keeps the first `limit` of that order."""

    async def count_records(self) -> int:
        """How many records are stored."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (reports, feedback look-ups)."""

    async def close(self) -> None:
        """Release the connection and the thread. Idempotent."""


# --- SQLite --------------------------------------------------------------------------------------

SCHEMA_VERSION = 2

# Columns copied out of the row (for filtering and indexes); the whole row is in `data`.
INDEXED_COLUMNS = (
    "request_id", "attempt", "served", "started_at", "route", "variant", "experiment",
    "episode_id", "correlation_id", "user_id", "provider", "model_requested", "model_served",
    "status", "outcome", "request_hash",
)

# version -> statements. A later version appends an entry; `open()` applies what is missing.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS records (
            id TEXT PRIMARY KEY,
            request_id TEXT,
            attempt INTEGER,
            served INTEGER,
            started_at REAL,
            route TEXT,
            variant TEXT,
            experiment TEXT,
            episode_id TEXT,
            correlation_id TEXT,
            user_id TEXT,
            provider TEXT,
            model_requested TEXT,
            model_served TEXT,
            status INTEGER,
            outcome TEXT,
            request_hash TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS records_route_started ON records (route, started_at)",
        "CREATE INDEX IF NOT EXISTS records_request_id ON records (request_id)",
        "CREATE INDEX IF NOT EXISTS records_episode_id ON records (episode_id)",
        "CREATE INDEX IF NOT EXISTS records_started_at ON records (started_at)",
    ),
    2: (
        """CREATE TABLE IF NOT EXISTS outcomes (
            id TEXT PRIMARY KEY,
            metric TEXT NOT NULL,
            value REAL NOT NULL,
            level TEXT NOT NULL,
            received_at REAL NOT NULL,
            request_id TEXT,
            episode_id TEXT,
            source TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS outcomes_request ON outcomes (metric, request_id)",
        "CREATE INDEX IF NOT EXISTS outcomes_episode ON outcomes (metric, episode_id)",
        "CREATE INDEX IF NOT EXISTS records_route_served ON records (route, served, started_at)",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION

_INSERT_SQL = (
    f"INSERT OR IGNORE INTO records (id, {', '.join(INDEXED_COLUMNS)}, data) "
    f"VALUES ({', '.join('?' * (len(INDEXED_COLUMNS) + 2))})"
)


_OUTCOME_COLUMNS = ("id", "metric", "value", "level", "received_at", "request_id", "episode_id", "source")
_INSERT_OUTCOME_SQL = (
    f"INSERT OR IGNORE INTO outcomes ({', '.join(_OUTCOME_COLUMNS)}, data) "
    f"VALUES ({', '.join('?' * (len(_OUTCOME_COLUMNS) + 1))})"
)


def _is_outcome(row: Any) -> bool:
    return isinstance(row, Outcome) or (isinstance(row, Mapping) and row.get("kind") == "outcome")


def _outcome_params(row: Mapping[str, Any] | Outcome) -> list[Any]:
    data = dataclasses.asdict(row) if isinstance(row, Outcome) else dict(row)
    return [*(data.get(key) for key in _OUTCOME_COLUMNS), orjson.dumps(data).decode()]


_ROW_KEYS = ("id", *INDEXED_COLUMNS)
_RECORD_COLUMNS = operator.attrgetter(*_ROW_KEYS)
_SERVED = _ROW_KEYS.index("served")


def _row_params(row: Mapping[str, Any] | Record) -> list[Any]:
    """The INSERT parameters of one row: id, the indexed columns, the row as JSON text.

    A `Record` is encoded directly (orjson serialises dataclasses natively; measured ~2x cheaper
    than building its dict first), so the recorder can hand records over unconverted.
    """
    if isinstance(row, Record):
        values = list(_RECORD_COLUMNS(row))
    elif isinstance(row, Mapping):
        if not isinstance(row, dict):
            row = dict(row)
        get = row.get
        values = [get(key) for key in _ROW_KEYS]
    else:
        raise TypeError(f"a record row must be a dict or a Record, not {type(row).__name__}")
    rid = values[0]
    if not isinstance(rid, str) or not rid:
        raise ValueError("a record without an id cannot be stored")
    served = values[_SERVED]
    if served is not None:
        values[_SERVED] = int(bool(served))
    values.append(encode_row(row).decode())
    return values


class SQLiteStore:
    """Records in one SQLite file (WAL), written and read on one dedicated thread."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 2000, url: str | None = None) -> None:
        self.path = str(path)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.url = url or f"sqlite:///{self.path}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # -- plumbing

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise RuntimeError(f"record store {self.url} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"record store {self.url} is not open")
        return self._conn

    # -- thread-side work (runs only on the store's thread)

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                raise RuntimeError(f"record store {self.url}: cannot enable WAL (journal_mode is {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                         "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"record store {self.url} has schema version {current}, newer than this "
                    f"sluicegate knows ({SCHEMA_VERSION}); upgrade sluicegate")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                             (version, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_sync(self, rows: Sequence[Mapping[str, Any] | Record | Outcome]) -> int:
        conn = self._connection()
        # encode before taking the write lock; outcome rows travel the same path as records
        outcomes = [_outcome_params(r) for r in rows if _is_outcome(r)]
        params = [_row_params(r) for r in rows if not _is_outcome(r)]
        if not params and not outcomes:
            return 0
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            if params:
                conn.executemany(_INSERT_SQL, params)
            if outcomes:
                conn.executemany(_INSERT_OUTCOME_SQL, outcomes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return conn.total_changes - before

    def _ping_sync(self) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock (waits up to busy_timeout)
        conn.execute("ROLLBACK")

    def _query_sync(self, since: float | None, until: float | None, route: str | None,
                    request_id: str | None, limit: int | None) -> list[dict[str, Any]]:
        conn = self._connection()
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at < ?")
            args.append(until)
        if route is not None:
            where.append("route = ?")
            args.append(route)
        if request_id is not None:
            where.append("request_id = ?")
            args.append(request_id)
        sql = "SELECT data FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        loads = orjson.loads
        return [loads(data) for (data,) in conn.execute(sql, args)]

    def _fetch_sync(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, tuple(params)).fetchall()

    def _count_sync(self) -> int:
        return self._connection().execute("SELECT count(*) FROM records").fetchone()[0]

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the RecordStore interface

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluicegate-sqlite")
        if self._conn is None:
            await self._call(self._open_sync)

    async def write_records(self, rows: Sequence[Mapping[str, Any] | Record]) -> int:
        return await self._call(self._write_sync, list(rows))

    async def ping(self) -> None:
        await self._call(self._ping_sync)

    async def query_records(self, *, since: float | None = None, until: float | None = None,
                            route: str | None = None, request_id: str | None = None,
                            limit: int | None = None) -> list[dict[str, Any]]:
        return await self._call(self._query_sync, since, until, route, request_id, limit)

    async def count_records(self) -> int:
        return await self._call(self._count_sync)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query on the store's thread (reports, feedback look-ups). Portable SQL only:
        the same statements must run on PostgreSQL later (`?` placeholders are translated there)."""
        return await self._call(self._fetch_sync, sql, params)

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            await self._call(self._close_sync)
        finally:
            self._executor = None
            executor.shutdown(wait=False)


def open_store(url: str, *, busy_timeout_ms: int | None = None) -> RecordStore:
    """The store for `url` (not yet opened: call `await store.open()`).

    Error messages name the scheme, never the whole URL (it may carry a password).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("records store URL must look like sqlite:///relative/path.db or "
                         "sqlite:////absolute/path.db")
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise ValueError("records store: postgresql:// comes with the scale-out work; "
                         "use sqlite:///path/to/records.db for now")
    if scheme != "sqlite":
        raise ValueError(f"records store: unsupported URL scheme {scheme!r}; use "
                         "sqlite:///relative/path.db or sqlite:////absolute/path.db")
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError("records store: a SQLite URL has three slashes before a relative path "
                         "(sqlite:///records.db) and four before an absolute one (sqlite:////var/lib/records.db)")
    rest = url[len(prefix):]
    path, _, query = rest.partition("?")
    if not path:
        raise ValueError("records store: the SQLite URL has no file path (sqlite:///records.db)")
    timeout = 2000
    if query:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"busy_timeout_ms"})
        if unknown:
            raise ValueError(f"records store: unknown SQLite URL parameter(s) {', '.join(unknown)}; "
                             "known: busy_timeout_ms")
        if "busy_timeout_ms" in params:
            try:
                timeout = int(params["busy_timeout_ms"][-1])
            except ValueError:
                raise ValueError("records store: busy_timeout_ms must be an integer (milliseconds)") from None
            if timeout < 0:
                raise ValueError("records store: busy_timeout_ms must be >= 0")
    if busy_timeout_ms is not None:
        timeout = busy_timeout_ms
    return SQLiteStore(path, busy_timeout_ms=timeout, url=f"{prefix}{path}")
