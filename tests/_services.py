"""Real services for tests (Redis, PostgreSQL): reachable, or skipped with the reason.

Locally a missing service skips its tests with a clear reason; in CI (`CI=true`) it fails them: the
scale-out tests must run there, not quietly vanish. Import the fixtures into a test module:

    from tests._services import redis_url  # noqa: F401 (fixture)
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

__all__ = ["postgres_url", "redis_stream", "redis_url", "require_service"]

REDIS_URL = os.environ.get("SLUICEGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_service(name: str, url: str, default_port: int, *, env_hint: str) -> str:
    """`url` when a TCP connection to its host and port succeeds; else skip (fail when CI=true)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=0.5):
            pass
    except OSError as exc:
        reason = (f"{name} is not reachable at {host}:{port} ({exc.strerror or exc}); start it, or point "
                  f"{env_hint} at one")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} — CI=true: the {name} tests must run", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def redis_url() -> str:
    return require_service("Redis", REDIS_URL, 6379, env_hint="SLUICEGATE_TEST_REDIS_URL")


@pytest.fixture
async def redis_stream(redis_url: str) -> AsyncIterator[str]:
    """A stream name of this test's own; the stream and its dead letters are deleted afterwards."""
    import redis.asyncio as aioredis

    name = f"sluicegate-test:{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(name, f"{name}:dead")
    finally:
        await client.aclose()


POSTGRES_URL = os.environ.get("SLUICEGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A store URL on a PostgreSQL schema of this test's own, dropped afterwards."""
    import asyncpg

    require_service("PostgreSQL", POSTGRES_URL, 5432, env_hint="SLUICEGATE_TEST_POSTGRES_URL")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
