"""Logging: structlog, JSON in production, readable on a terminal, secrets scrubbed last."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
import structlog

__all__ = ["configure_logging", "set_secrets", "get_logger"]

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


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_orjson_dumps) if json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Third-party loggers: warnings only, and never request lines (they could carry URLs with keys).
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "httpcore", "aiohttp", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str = "sluicegate") -> Any:
    return structlog.get_logger(name)
