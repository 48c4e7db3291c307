"""Which schema version a store has, without opening (and so migrating) it: `sluicegate migrate --check`."""

from __future__ import annotations

import sqlite3
from typing import Any

from proxy.records._pg_schema import PG_SCHEMA_VERSION
from proxy.records._store import SCHEMA_VERSION, open_store

__all__ = ["schema_versions"]


async def schema_versions(url: str) -> tuple[int | None, int]:
    """(the store's version, or None when it has no schema yet; the version this sluicegate needs)."""
    store: Any = open_store(url)
    if store.dialect.name == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(store._dsn, server_settings={"search_path": store.schema} if store.schema else {})
        try:
            exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
            current = await conn.fetchval("SELECT max(version) FROM schema_version") if exists else None
        finally:
            await conn.close()
        return current, PG_SCHEMA_VERSION
    if store.url == "none://":
        return SCHEMA_VERSION, SCHEMA_VERSION
    try:
        conn = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return None, SCHEMA_VERSION  # no file yet
    try:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return (row[0] if row else None), SCHEMA_VERSION
    except sqlite3.OperationalError:
        return None, SCHEMA_VERSION
    finally:
        conn.close()
