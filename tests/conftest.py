"""Test-wide set-up: a fresh SQLite store fixture (`store`; a module may define its own), and structlog's console output with plain tracebacks (tests never call
`configure_logging`, and with `rich` installed structlog's default would print every local variable
of every frame — slow, and it would put request scopes into the test output)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from proxy.records import SQLiteStore

structlog.configure(processors=[
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
    structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A new, open SQLite store in the test's own folder."""
    s = SQLiteStore(tmp_path / "s.db")
    await s.open()
    yield s
    await s.close()
