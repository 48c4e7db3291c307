"""Logging: structlog, JSON in production, readable on a terminal, secrets scrubbed last."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

__all__ = ["DeferredFlushStream", "configure_logging", "flush_logs", "set_secrets", "get_logger"]

_secrets: tuple[str, ...] = ()


def set_secrets(secrets: Iterable[str]) -> None:
    """Values that must never be printed (provider keys); replaced wherever they appear."""
    global _secrets
    _secrets = tuple(s for s in secrets if s and len(s) >= 4)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "[SECRET]")
    return value


def _scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Defence in depth: keys are never passed to a logger on purpose, but an exception text or an
    # upstream message could carry one.
    if _secrets:
        for key, value in event.items():
            event[key] = _scrub(value)
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class DeferredFlushStream:
    """A text stream that writes its lines out at most `delay` seconds later, in one system call.

    structlog flushes after every line; one write() per request line cost ~2.5% of the gateway's
    CPU (issue 5 profile). Inside a running event loop a flush is deferred by `delay` (lines logged
    meanwhile go out together); outside one (CLI commands, other threads) it happens at once.
    `flush_logs()` and exit flush what is pending.
    """

    def __init__(self, stream: Any, delay: float = 0.1) -> None:
        self._stream = stream
        self._delay = delay
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._pending: asyncio.TimerHandle | None = None
        self._pending_loop: asyncio.AbstractEventLoop | None = None

    def write(self, text: str) -> int:
        with self._lock:
            self._lines.append(text)
        return len(text)

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_now()
            return
        if self._pending is not None:
            if self._pending_loop is loop:  # a flush is already due
                return
            self._pending.cancel()  # due on a loop that has gone away: it would never come
        self._pending_loop = loop
        self._pending = loop.call_later(self._delay, self.flush_now)

    def flush_now(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = self._pending_loop = None
            text, self._lines = "".join(self._lines), []
            if text:
                try:
                    self._stream.write(text)
                    self._stream.flush()
                except ValueError:  # the stream was closed under us (a test's captured stderr): never raise
                    self._stream = sys.__stderr__
                    self._stream.write(text)

    def isatty(self) -> bool:
        return bool(self._stream.isatty())


_stream: DeferredFlushStream | None = None


def flush_logs() -> None:
    """Write out log lines still waiting (called on shutdown)."""
    if _stream is not None:
        _stream.flush_now()


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    global _stream
    if _stream is None:
        atexit.register(flush_logs)
    else:
        _stream.flush_now()
    _stream = DeferredFlushStream(sys.stderr)
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json
                     # plain tracebacks: a "rich" one prints every local variable (request scopes, headers)
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(),
                                                        exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_stream),
        cache_logger_on_first_use=True,
    )
    # Third-party loggers: warnings only, and never request lines (they could carry URLs with keys).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpcore", "aiohttp", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str = "sluicegate") -> Any:
    return structlog.get_logger(name)
