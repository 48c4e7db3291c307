"""Where records are kept: the `RecordStore` interface and its SQLite implementation.

`open_store(url)` picks the implementation from the URL:

- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (and `sqlite:///:memory:` for
  tests); query parameter `busy_timeout_ms` (default 2000), e.g. `sqlite:///rec.db?busy_timeout_ms=500`.
- `none://`: recording off (records are counted and discarded; see `_null.py`).
- `postgresql://user:password@host:5432/db` (optional `?schema=name`): the PostgreSQL store
  (`_postgres.py`), for several replicas and workers on one store.

SQLite runs in WAL mode with synchronous=NORMAL (a power cut may lose the last transactions, never
corrupt the file; the recorder's spill file covers crashes of the process). All writes run on ONE
dedicated thread (a `ThreadPoolExecutor(max_workers=1)`, which owns the write connection), reached
with `loop.run_in_executor`, so the event loop never waits on SQLite. Reads (`fetch`,
`query_records`, `count_records`: reports, feedback look-ups) run on a SECOND thread with its own
connection, so a long report never holds up the recorder (WAL: readers and the writer do not block
each other). A `:memory:` store has one connection, so there reads share the write thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qs

import orjson

from proxy.records._conflicts import SQLITE_CONFLICT_SQL, conflict_params, is_keyed_outcome, log_conflicts
from proxy.records._dialect import SQLITE, Dialect
from proxy.records._model import Outcome, Record
from proxy.records._rows import (
    INDEXED_COLUMNS,
    REPORT_COLUMNS,
    SIDE_TABLES,
    V3_REPORT_COLUMNS,
    row_params,
    side_params,
    side_row,
)

__all__ = ["INDEXED_COLUMNS", "LOOKUP_LANE", "REPORT_COLUMNS", "SCHEMA_VERSION", "RecordStore", "SQLiteStore",
           "StoreURLError", "open_store"]

_T = TypeVar("_T")


class StoreURLError(ValueError):
    """A store URL that cannot be used; the message says what to write instead (never the password)."""


@runtime_checkable
class RecordStore(Protocol):
    """A place to keep records. Rows are the dicts of `Record` (a `Record` itself is accepted too)."""

    url: str  # without credentials
    dialect: Dialect  # the SQL spellings `fetch` takes (proxy.records._dialect)

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

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, lane: int = 0) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (reports, feedback look-ups). Queries on different `lane`s
        (0 or 1) may run at the same time; a temp table belongs to the lane that made it."""

    async def tail(self, table: str, columns: str, where: str, after: int,
                   limit: int) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of `table` (`columns`, matching `where`) written after cursor `after`, in commit
        order, at most about `limit`; and the cursor to pass next time."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction (retention); returns the rows it changed."""

    async def close(self) -> None:
        """Release the connection and the thread. Idempotent."""


def records_query(since: float | None, until: float | None, route: str | None, request_id: str | None,
                  limit: int | None) -> tuple[str, list[Any]]:
    """`query_records`' SQL (portable, `?` placeholders) and its parameters, for every backend."""
    where, args = [], []
    for clause, value in (("started_at >= ?", since), ("started_at < ?", until), ("route = ?", route),
                          ("request_id = ?", request_id)):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql = "SELECT data FROM records" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY started_at, id" + (" LIMIT ?" if limit is not None else "")
    if limit is not None:
        args.append(int(limit))
    return sql, args


# --- SQLite --------------------------------------------------------------------------------------

SCHEMA_VERSION = 10
READ_LANES = 3  # read connections: 0 and 1 for reports (a 2-core machine runs two report queries at once),
LOOKUP_LANE = 2  # and one for point look-ups a request may wait on (the output cache, feedback): never behind a report

_FAILED = "coalesce(json_extract(g.value, '$.passed'), 0) = 0"

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
    3: (
        *(f"ALTER TABLE records ADD COLUMN {name}" for name in V3_REPORT_COLUMNS),
        # back-fill from `data` (once; slow on a big store, instant on a new one)
        f"""UPDATE records SET
            attempt_reason = json_extract(data, '$.attempt_reason'),
            latency_ms = json_extract(data, '$.latency_ms'),
            ttft_ms = json_extract(data, '$.ttft_ms'),
            prompt_tokens = json_extract(data, '$.usage.prompt_tokens'),
            completion_tokens = json_extract(data, '$.usage.completion_tokens'),
            cost_usd = json_extract(data, '$.cost_usd'),
            system_fingerprint = json_extract(data, '$.system_fingerprint'),
            guard_failures = (SELECT count(*) FROM json_each(records.data, '$.guards') g WHERE {_FAILED}),
            failed_guards = (SELECT json_group_array(json_array(json_extract(g.value, '$.taxonomy'),
                                                                json_extract(g.value, '$.severity')))
                             FROM json_each(records.data, '$.guards') g WHERE {_FAILED}
                             HAVING count(*) > 0)""",
        # report indexes. Per arm: aggregates and latency percentiles (covering, ordered by latency)
        """CREATE INDEX IF NOT EXISTS records_arm_latency ON records
            (route, variant, attempt, served, latency_ms, started_at, ttft_ms,
             prompt_tokens, completion_tokens, cost_usd)""",
        "CREATE INDEX IF NOT EXISTS records_arm_ttft ON records (route, variant, attempt, served, ttft_ms, started_at)",
        """CREATE INDEX IF NOT EXISTS records_arm_drift ON records
            (route, variant, model_served, system_fingerprint, attempt, started_at)""",
        # request / episode look-ups become covering for the report's joins
        "DROP INDEX IF EXISTS records_request_id",
        "CREATE INDEX IF NOT EXISTS records_request ON records (request_id, attempt, route, variant, started_at)",
        "DROP INDEX IF EXISTS records_episode_id",
        "CREATE INDEX IF NOT EXISTS records_episode ON records (episode_id, route, variant, attempt, started_at)",
        # small partial indexes: later attempts (fallbacks, retries, shadows) and failed guards
        "CREATE INDEX IF NOT EXISTS records_later ON records (request_id) WHERE attempt > 1",
        "CREATE INDEX IF NOT EXISTS records_guard_failed ON records (route, started_at) WHERE guard_failures > 0",
        "CREATE INDEX IF NOT EXISTS outcomes_level_request ON outcomes (level, request_id)",
    ),
    4: (
        # the latest outcome per (metric, request or episode) and the metric kinds, from the index alone
        """CREATE INDEX IF NOT EXISTS outcomes_latest_request ON outcomes
            (level, metric, request_id, received_at DESC, id DESC, value)""",
        """CREATE INDEX IF NOT EXISTS outcomes_latest_episode ON outcomes
            (level, metric, episode_id, received_at DESC, id DESC, value)""",
        "DROP INDEX IF EXISTS outcomes_request",
        "DROP INDEX IF EXISTS outcomes_episode",
    ),
    5: (
        # one row per (record, scorer): a score delivered twice is stored once
        """CREATE TABLE IF NOT EXISTS scores (
            id TEXT PRIMARY KEY,
            record_id TEXT NOT NULL,
            request_id TEXT,
            scorer TEXT NOT NULL,
            kind TEXT NOT NULL,
            label TEXT NOT NULL,
            score REAL,
            taxonomy TEXT,
            confidence REAL,
            weight REAL,
            cost_usd REAL,
            created_at REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS scores_scorer ON scores (scorer, record_id)",
        "CREATE INDEX IF NOT EXISTS scores_record ON scores (record_id)",
        # the human review queue: one entry per (record, human scorer); its label is a `human` score
        """CREATE TABLE IF NOT EXISTS reviews (
            id TEXT PRIMARY KEY,
            record_id TEXT NOT NULL,
            request_id TEXT,
            route TEXT,
            variant TEXT,
            scorer TEXT NOT NULL,
            reason TEXT NOT NULL,
            entered_at REAL NOT NULL,
            note TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS reviews_entered ON reviews (entered_at)",
        # where each `sluicegate worker` is in `records` (by rowid); written with its scores
        "CREATE TABLE IF NOT EXISTS scoring_cursors (id TEXT PRIMARY KEY, value INTEGER NOT NULL, updated_at REAL)",
    ),
    6: (
        # canary routes: the current stage every serving process reads, and every decision taken
        """CREATE TABLE IF NOT EXISTS canary_state (
            route TEXT PRIMARY KEY, stage REAL NOT NULL, status TEXT NOT NULL, updated_at REAL NOT NULL,
            reason TEXT)""",
        """CREATE TABLE IF NOT EXISTS canary_decisions (
            id TEXT PRIMARY KEY, route TEXT NOT NULL, at REAL NOT NULL, action TEXT NOT NULL,
            from_stage REAL, to_stage REAL, rule TEXT, reason TEXT, figures TEXT, actor TEXT)""",
        "CREATE INDEX IF NOT EXISTS canary_decisions_route ON canary_decisions (route, at)",
    ),
    7: (
        # the exact-match output cache (`cache: {mode: exact}` routes), shared by every replica
        "ALTER TABLE records ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE IF NOT EXISTS response_cache (
            key TEXT PRIMARY KEY, route TEXT, variant TEXT, model TEXT, created_at REAL NOT NULL,
            expires_at REAL NOT NULL, answer TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS response_cache_expires ON response_cache (expires_at)",
    ),
    8: (
        # feedback idempotency scoped to (caller, subject, metric): the content digest of a keyed outcome, and
        # the outcomes refused at write time because their scope already held other content (_conflicts.py)
        "ALTER TABLE outcomes ADD COLUMN digest TEXT",
        """CREATE TABLE IF NOT EXISTS outcome_conflicts (
            id TEXT PRIMARY KEY, outcome_id TEXT NOT NULL, received_at REAL NOT NULL, detected_at REAL NOT NULL,
            data TEXT NOT NULL)""",
    ),
    9: (
        # the report's unit of analysis and allocation periods: the sticky bucket (NULL: no sticky key, the
        # request is its own unit) and the policy version in force, as columns (json_extract costs ~4 µs a row)
        "ALTER TABLE records ADD COLUMN bucket",
        "ALTER TABLE records ADD COLUMN policy_version",
        """UPDATE records SET bucket = json_extract(data, '$.bucket'),
            policy_version = json_extract(data, '$.policy_version')""",
        # the report's per-unit sums read every attempt-1 row of the window: from these covering indexes,
        # never from the rows themselves (a row holds its captured request and answer: ~20x the index entry)
        "DROP INDEX IF EXISTS records_request",
        """CREATE INDEX IF NOT EXISTS records_request ON records (request_id, attempt, route, variant, started_at,
            bucket, user_id, episode_id, policy_version, served, latency_ms, guard_failures, failed_guards)""",
        "DROP INDEX IF EXISTS records_episode",
        """CREATE INDEX IF NOT EXISTS records_episode ON records (episode_id, route, variant, attempt, started_at,
            bucket, user_id)""",
        # when each policy version was in force on each route (the report's allocation periods)
        "CREATE INDEX IF NOT EXISTS records_versions ON records (route, policy_version, started_at) WHERE attempt = 1",
    ),
    10: (
        # canary runs (proxy/canary/_state.py): decisions read only requests assigned since the run started
        "ALTER TABLE canary_state ADD COLUMN run_id TEXT",
        "ALTER TABLE canary_state ADD COLUMN run_started_at REAL",
        "ALTER TABLE canary_state ADD COLUMN stage_started_at REAL",
        "ALTER TABLE canary_state ADD COLUMN fingerprint TEXT",
        "ALTER TABLE canary_decisions ADD COLUMN run_id TEXT",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION

_INSERT_SQL = (
    f"INSERT OR IGNORE INTO records (id, {', '.join(INDEXED_COLUMNS)}, {', '.join(REPORT_COLUMNS)}, data) "
    f"VALUES ({', '.join('?' * (len(INDEXED_COLUMNS) + len(REPORT_COLUMNS) + 2))})"
)
_SIDE_SQL = {kind: f"INSERT OR {'REPLACE' if spec.replace else 'IGNORE'} INTO {spec.table} "
                   f"({', '.join(spec.all_columns)}) VALUES ({', '.join('?' * len(spec.all_columns))})"
             for kind, spec in SIDE_TABLES.items()}


class SQLiteStore:
    """Records in one SQLite file (WAL), written and read on one dedicated thread."""

    dialect = SQLITE

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 2000, url: str | None = None) -> None:
        self.path = str(path)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.url = url or f"sqlite:///{self.path}"
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # read lanes: one thread and connection each, so independent report queries run in parallel
        self._read_executors: list[ThreadPoolExecutor] = []
        self._rconns: list[sqlite3.Connection | None] = [None] * READ_LANES
        self._lane = threading.local()  # which lane the current read thread serves
        self.outcome_conflicts = 0  # keyed outcomes kept aside at write time since open (_conflicts.py)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # -- plumbing

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise RuntimeError(f"record store {self.url} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _read(self, fn: Callable[..., _T], *args: Any, lane: int = 0) -> _T:
        """Run a read on a read lane's thread (the write thread for `:memory:`)."""
        executor = self._read_executors[lane % READ_LANES] if self._read_executors else self._executor
        if executor is None:
            raise RuntimeError(f"record store {self.url} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, fn, *args)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"record store {self.url} is not open")
        return self._conn

    def _reader(self) -> sqlite3.Connection:
        """The connection of the read lane whose thread this is (the write connection for `:memory:`)."""
        lane = getattr(self._lane, "index", None)
        if lane is not None and self._rconns[lane] is not None:
            return self._rconns[lane]  # type: ignore[return-value]
        return self._connection()

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
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -16384")  # 16 MiB: hot index pages stay cached between batches (RSS budget: 120 MB)
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_reader_sync(self, lane: int) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
            conn.execute("PRAGMA temp_store = MEMORY")  # the report's temp tables
            # 256 MiB for the report lanes; the look-up lane reads single rows by primary key
            conn.execute("PRAGMA cache_size = -8192" if lane == LOOKUP_LANE else "PRAGMA cache_size = -262144")
            # no mmap: every page a report touched would stay in the process's RSS, growing with the file
        except BaseException:
            conn.close()
            raise
        self._lane.index = lane
        self._rconns[lane] = conn

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
        # encode before taking the write lock; other kinds of rows travel the same path as records
        batches: dict[str, list[list[Any]]] = {}
        keyed: list[tuple[Mapping[str, Any], list[Any]]] = []  # outcomes under an idempotency key: one by one
        for row in rows:
            side = side_row(row)
            if side is None:
                batches.setdefault(_INSERT_SQL, []).append(row_params(row))
            elif is_keyed_outcome(*side):
                keyed.append((side[1], side_params(*side)))
            else:
                batches.setdefault(_SIDE_SQL[side[0]], []).append(side_params(*side))
        if not batches and not keyed:
            return 0
        before = conn.total_changes
        conflicts: list[Mapping[str, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in batches.items():
                conn.executemany(sql, params)
            for row, params in keyed:
                if conn.execute(_SIDE_SQL["outcome"], params).rowcount == 0:  # the id is taken: same content?
                    if conn.execute(SQLITE_CONFLICT_SQL, conflict_params(row)).rowcount:
                        conflicts.append(row)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if conflicts:
            self.outcome_conflicts += len(conflicts)
            log_conflicts(self.url, conflicts, self.outcome_conflicts)
        return conn.total_changes - before

    def _lease_sync(self, name: str, holder: str, ttl_s: float) -> bool:
        conn = self._connection()
        now = time.time()
        conn.execute("CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
                     "until REAL NOT NULL)")
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes: the check and the claim are one
        try:
            row = conn.execute("SELECT holder, until FROM leases WHERE name = ?", (name,)).fetchone()
            mine = row is None or row[0] == holder or row[1] < now
            if mine:
                conn.execute("INSERT OR REPLACE INTO leases (name, holder, until) VALUES (?, ?, ?)",
                             (name, holder, now + ttl_s))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return mine

    def _ping_sync(self) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock (waits up to busy_timeout)
        conn.execute("ROLLBACK")

    def _query_sync(self, since: float | None, until: float | None, route: str | None,
                    request_id: str | None, limit: int | None) -> list[dict[str, Any]]:
        sql, args = records_query(since, until, route, request_id, limit)
        loads = orjson.loads
        return [loads(data) for (data,) in self._reader().execute(sql, args)]

    def _fetch_sync(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._reader().execute(sql, tuple(params)).fetchall()

    def _count_sync(self) -> int:
        return self._reader().execute("SELECT count(*) FROM records").fetchone()[0]

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _close_reader_sync(self, lane: int) -> None:
        conn, self._rconns[lane] = self._rconns[lane], None
        if conn is not None:
            conn.close()

    # -- the RecordStore interface

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluicegate-sqlite")
        if self._conn is None:
            await self._call(self._open_sync)
        if self.path != ":memory:" and not self._read_executors:
            loop = asyncio.get_running_loop()
            for lane in range(READ_LANES):
                executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sluicegate-sqlite-read{lane}")
                self._read_executors.append(executor)
                await loop.run_in_executor(executor, self._open_reader_sync, lane)

    async def write_records(self, rows: Sequence[Mapping[str, Any] | Record]) -> int:
        return await self._call(self._write_sync, list(rows))

    async def ping(self) -> None:
        if self._conn is None:  # it could not be opened at start (locked, unwritable): try again now
            await self.open()
        await self._call(self._ping_sync)

    async def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Claim (or renew) the lease `name` for `ttl_s` seconds; False while another holder has it.
        The PostgreSQL store will use an advisory lock here."""
        return await self._call(self._lease_sync, name, holder, ttl_s)

    async def query_records(self, *, since: float | None = None, until: float | None = None,
                            route: str | None = None, request_id: str | None = None,
                            limit: int | None = None) -> list[dict[str, Any]]:
        return await self._read(self._query_sync, since, until, route, request_id, limit)

    async def count_records(self) -> int:
        return await self._read(self._count_sync)

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, lane: int = 0) -> list[tuple[Any, ...]]:
        """A read-only query on a read lane's thread and connection (reports, feedback look-ups;
        temp tables a report creates live on that lane's connection). Portable SQL only: the same
        statements must run on PostgreSQL later (`?` placeholders are translated there)."""
        return await self._read(self._fetch_sync, sql, params, lane=lane)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._call(self._execute_sync, sql, list(params))

    def _execute_sync(self, sql: str, params: list[Any]) -> int:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            changed = conn.execute(sql, params).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return changed

    async def release_memory(self) -> None:
        """Give the report lanes' page caches back after a report (a 1M-record report fills hundreds of
        MB of cache that would otherwise stay in the process until it exits)."""
        for lane in range(LOOKUP_LANE):
            await self._read(self._shrink_sync, lane=lane)

    def _shrink_sync(self) -> None:
        self._reader().execute("PRAGMA shrink_memory")

    async def tail(self, table: str, columns: str, where: str, after: int,
                   limit: int) -> tuple[list[tuple[Any, ...]], int]:
        """By rowid: one writer at a time (BEGIN IMMEDIATE) makes rowid order the commit order."""
        rows = await self.fetch(f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? AND ({where}) "
                                "ORDER BY rowid LIMIT ?", [after, limit])
        return [row[1:] for row in rows], (int(rows[-1][0]) if rows else after)

    async def close(self) -> None:
        readers, self._read_executors = self._read_executors, []
        for lane, reader in enumerate(readers):
            try:
                await asyncio.get_running_loop().run_in_executor(reader, self._close_reader_sync, lane)
            finally:
                reader.shutdown(wait=False)
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
    if url in ("none", "none://"):
        from proxy.records._null import NullStore

        return NullStore()
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError("records store URL must look like sqlite:///relative/path.db or "
                         "sqlite:////absolute/path.db")
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        from proxy.records._postgres import open_postgres

        return open_postgres(url)
    if scheme != "sqlite":
        raise StoreURLError(f"records store: unsupported URL scheme {scheme!r}; use "
                         "sqlite:///relative/path.db or sqlite:////absolute/path.db")
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreURLError("records store: a SQLite URL has three slashes before a relative path "
                         "(sqlite:///records.db) and four before an absolute one (sqlite:////var/lib/records.db)")
    rest = url[len(prefix):]
    path, _, query = rest.partition("?")
    if not path:
        raise StoreURLError("records store: the SQLite URL has no file path (sqlite:///records.db)")
    timeout = 2000
    if query:
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"busy_timeout_ms"})
        if unknown:
            raise StoreURLError(f"records store: unknown SQLite URL parameter(s) {', '.join(unknown)}; "
                             "known: busy_timeout_ms")
        if "busy_timeout_ms" in params:
            try:
                timeout = int(params["busy_timeout_ms"][-1])
            except ValueError:
                raise StoreURLError("records store: busy_timeout_ms must be an integer (milliseconds)") from None
            if timeout < 0:
                raise StoreURLError("records store: busy_timeout_ms must be >= 0")
    if busy_timeout_ms is not None:
        timeout = busy_timeout_ms
    return SQLiteStore(path, busy_timeout_ms=timeout, url=f"{prefix}{path}")
