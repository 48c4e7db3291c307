"""The PostgreSQL store: the same interface and the same SQL as the SQLite one, for several
replicas and workers sharing one store.

asyncpg, chosen by measurement (`bench/pg_drivers.py`): inserting 20,000 records in batches of 500,
COPY into a staging table then INSERT … ON CONFLICT DO NOTHING ran at ~25,700 rows/s against
psycopg 3's ~24,200, and executemany at ~20,100 against ~17,500 (one run, this machine).

Connections, each used by one task at a time (asyncpg runs one query per connection):
- the writer: every write is one transaction (records by COPY, other rows by executemany);
- three read lanes, like SQLite's: 0 and 1 for reports (their temp tables live on the lane's
  session), 2 for point look-ups a request may wait on (the output cache);
- the lease connection, only once `try_lease` is called: it holds a session advisory lock, which
  PostgreSQL releases by itself when the process (and so the connection) dies.
A connection that broke is replaced on its next use; the recorder spills meanwhile.

Rows are encoded (JSON) on a worker thread, not on the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import decimal
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from proxy.records._conflicts import PG_CONFLICT_SQL, conflict_params, is_keyed_outcome, log_conflicts
from proxy.records._dialect import POSTGRES
from proxy.records._model import Record
from proxy.records._pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION
from proxy.records._store import StoreURLError, records_query
from proxy.records._rows import INDEXED_COLUMNS, REPORT_COLUMNS, SIDE_TABLES, row_params, side_params, side_row

__all__ = ["PostgresStore", "public_url", "to_numbered"]

READ_LANES = 3
RECORD_COLUMNS = ("id", *INDEXED_COLUMNS, *REPORT_COLUMNS, "data")
_PLACEHOLDER = re.compile(r"\?")
_MIGRATION_LOCK = 0x51_7C_E6A7  # advisory lock key: one process migrates at a time


def to_numbered(sql: str) -> str:
    """`?` placeholders → `$1, $2, …` (the portable SQL never has a `?` inside a literal)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def public_url(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _side_sql(kind: str) -> str:
    spec = SIDE_TABLES[kind]
    columns = spec.all_columns
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    if spec.replace:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in spec.key)
        conflict = f"ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET {updates}"
    else:
        conflict = "ON CONFLICT DO NOTHING"
    return f"INSERT INTO {spec.table} ({', '.join(columns)}) VALUES ({values}) {conflict}"


_SIDE_SQL = {kind: _side_sql(kind) for kind in SIDE_TABLES}


_Keyed = list[tuple[Mapping[str, Any], list[Any], list[Any]]]


def _encode(rows: Sequence[Any]) -> tuple[list[tuple[Any, ...]], dict[str, list[list[Any]]], _Keyed]:
    """Records as COPY tuples, other rows as their statement's parameters, and outcomes under an
    idempotency key with their conflict parameters (runs on a thread)."""
    records: list[tuple[Any, ...]] = []
    side: dict[str, list[list[Any]]] = {}
    keyed: _Keyed = []
    for row in rows:
        kind = side_row(row)
        if kind is None:
            records.append(tuple(row_params(row)))
        elif is_keyed_outcome(*kind):
            keyed.append((kind[1], side_params(*kind), conflict_params(kind[1])))
        else:
            side.setdefault(kind[0], []).append(side_params(*kind))
    return records, side, keyed


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):  # sum() of integers: keep SQLite's int / float results
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class PostgresStore:
    dialect = POSTGRES

    def __init__(self, dsn: str, *, schema: str | None = None, connect_timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self.url = public_url(dsn) + (f"?schema={schema}" if schema else "")
        self.schema = schema
        self._timeout = connect_timeout_s
        self._conns: dict[str, asyncpg.Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._open = False
        self._lease_held: set[str] = set()
        self.outcome_conflicts = 0  # keyed outcomes kept aside at write time since open (_conflicts.py)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- connections

    async def _connect(self) -> asyncpg.Connection:
        settings = {"search_path": self.schema} if self.schema else {}
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout, server_settings=settings)
        if self.schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        return conn

    async def _use(self, name: str) -> tuple[asyncio.Lock, asyncpg.Connection]:
        if not self._open:
            raise RuntimeError(f"record store {self.url} is not open")
        lock = self._locks.setdefault(name, asyncio.Lock())
        await lock.acquire()
        try:
            conn = self._conns.get(name)
            if conn is None or conn.is_closed():
                conn = self._conns[name] = await self._connect()
        except BaseException:
            lock.release()
            raise
        return lock, conn

    async def _run(self, name: str, fn: Any) -> Any:
        lock, conn = await self._use(name)
        try:
            return await fn(conn)
        except (asyncpg.PostgresConnectionError, ConnectionError, OSError):
            await self._drop(name)  # reconnect on the next use
            raise
        finally:
            lock.release()

    async def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            conn.terminate()
        if name == "lease":
            self._lease_held.clear()

    # -- the RecordStore interface

    async def open(self) -> None:
        if self._open:
            return
        self._open = True
        try:
            await self._run("write", self._migrate)
        except BaseException:
            self._open = False
            await self.close()
            raise

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                               "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            if current > PG_SCHEMA_VERSION:
                raise RuntimeError(f"record store {self.url} has schema version {current}, newer than this "
                                   f"sluicegate knows ({PG_SCHEMA_VERSION}); upgrade sluicegate")
            for version in sorted(v for v in PG_MIGRATIONS if v > current):
                for statement in PG_MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version VALUES ($1, $2)", version, time.time())

    async def schema_version(self) -> int:
        return int(await self._run("write", lambda c: c.fetchval("SELECT max(version) FROM schema_version")) or 0)

    async def write_records(self, rows: Sequence[Mapping[str, Any] | Record]) -> int:
        records, side, keyed = await asyncio.to_thread(_encode, list(rows))
        if not records and not side and not keyed:
            return 0
        conflicts: list[Mapping[str, Any]] = []

        async def write(conn: asyncpg.Connection) -> int:
            inserted = 0
            conflicts.clear()  # a retried transaction starts over
            async with conn.transaction():
                if records:
                    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS records_stage "
                                       "(LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                    await conn.copy_records_to_table("records_stage", records=records, columns=RECORD_COLUMNS)
                    columns = ", ".join(RECORD_COLUMNS)
                    status = await conn.execute(f"INSERT INTO records ({columns}) SELECT {columns} "
                                                "FROM records_stage ON CONFLICT DO NOTHING")
                    inserted += int(status.rsplit(" ", 1)[-1])
                for kind, params in side.items():
                    await conn.executemany(_SIDE_SQL[kind], params)
                    inserted += len(params)
                for row, params, conflict in keyed:  # one by one: a taken id is checked against its content
                    if await conn.execute(_SIDE_SQL["outcome"], *params) == "INSERT 0 1":
                        inserted += 1
                    elif await conn.execute(PG_CONFLICT_SQL, *conflict) == "INSERT 0 1":
                        conflicts.append(row)
            return inserted

        written = int(await self._run("write", write))
        if conflicts:
            self.outcome_conflicts += len(conflicts)
            log_conflicts(self.url, conflicts, self.outcome_conflicts)
        return written

    async def ping(self) -> None:
        if not self._open:  # the server was down when this process started: open (and migrate) now
            await self.open()
        await self._run("write", lambda c: c.execute("SELECT 1"))

    async def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """A session advisory lock on a connection of its own: held while this process lives (ttl_s
        is not needed: PostgreSQL frees the lock the moment the connection drops)."""
        if name in self._lease_held:
            return True
        key = zlib.crc32(f"{self.schema or ''}:{name}".encode())  # advisory locks are per database, not schema
        got = await self._run("lease", lambda c: c.fetchval("SELECT pg_try_advisory_lock($1)", key))
        if got:
            self._lease_held.add(name)
        return bool(got)

    async def query_records(self, *, since: float | None = None, until: float | None = None,
                            route: str | None = None, request_id: str | None = None,
                            limit: int | None = None) -> list[dict[str, Any]]:
        import orjson

        sql, args = records_query(since, until, route, request_id, limit)
        rows = await self.fetch(sql, args)
        return [orjson.loads(data) for (data,) in rows]

    async def count_records(self) -> int:
        return int((await self.fetch("SELECT count(*) FROM records"))[0][0])

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, lane: int = 0) -> list[tuple[Any, ...]]:
        statement = to_numbered(sql)

        async def run(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
            rows = await conn.fetch(statement, *params)
            return [tuple(_plain(v) for v in row) for row in rows]

        return await self._run(f"lane{lane % READ_LANES}", run)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        status = await self._run("write", lambda c: c.execute(to_numbered(sql), *params))
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def tail(self, table: str, columns: str, where: str, after: int,
                   limit: int) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of `table` written after cursor `after`, in commit order, and the new cursor.

        The cursor is a transaction id: only transactions older than the oldest one still running
        are read, whole, so a row committed late (by a slower replica) is never skipped."""
        horizon = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        txids = await self.fetch(f"SELECT DISTINCT txid FROM {table} WHERE txid > ? AND txid < {horizon} "
                                 f"ORDER BY txid LIMIT ?", [after, max(1, limit // 50)])
        if not txids:
            return [], after
        last = int(txids[-1][0])
        rows = await self.fetch(f"SELECT {columns} FROM {table} WHERE txid > ? AND txid <= ? AND ({where}) "
                                "ORDER BY txid, seq", [after, last])
        return rows, last

    async def close(self) -> None:
        self._open = False
        conns, self._conns = self._conns, {}
        self._lease_held.clear()
        for conn in conns.values():
            try:
                await asyncio.wait_for(conn.close(), timeout=2.0)
            except Exception:  # noqa: BLE001 - closing anyway
                conn.terminate()


def open_postgres(url: str) -> PostgresStore:
    """`postgresql://user:password@host:port/db?schema=name` (schema optional: default search path)."""
    base, _, query = url.partition("?")
    params = parse_qs(query, keep_blank_values=True) if query else {}
    unknown = sorted(set(params) - {"schema"})
    if unknown:
        raise StoreURLError(f"records store: unknown PostgreSQL URL parameter(s) {', '.join(unknown)}; known: schema")
    schema = params["schema"][-1] if "schema" in params else None
    if schema is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise StoreURLError("records store: schema must be a plain identifier (letters, digits, underscores)")
    if base.startswith("postgres://"):
        base = "postgresql://" + base[len("postgres://"):]
    return PostgresStore(base, schema=schema)
