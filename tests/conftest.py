"""Test-wide set-up: structlog's console output with plain tracebacks (tests never call
`configure_logging`, and with `rich` installed structlog's default would print every local variable
of every frame — slow, and it would put request scopes into the test output)."""

from __future__ import annotations

import structlog

structlog.configure(processors=[
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
    structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
])
