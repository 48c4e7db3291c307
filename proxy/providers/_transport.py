"""The upstream transport: httpx's API on aiohttp's connection pool.

DESIGN.md's measurements: httpx's default pool costs ~10x aiohttp's per request on these
machines, so the hot path runs on `httpx_aiohttp.AiohttpTransport`. Tests plug
`httpx.MockTransport` or `httpx.ASGITransport` into the same slot.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamTimeout, UpstreamUnreachable

__all__ = ["fast_transport", "classify_transport_error"]


def fast_transport(max_connections: int, keepalive_s: float = 30.0) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=max_connections, keepalive_expiry=keepalive_s)
    return AiohttpTransport(limits=limits, trust_env=False)


def classify_transport_error(exc: BaseException, provider: str) -> UpstreamError:
    """Maps a transport exception to our tree by its root cause.

    httpx-aiohttp maps some aiohttp errors loosely (a server that hangs up becomes
    `httpx.ConnectTimeout`), so the aiohttp cause is checked first.
    """
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, aiohttp.ClientError | asyncio.TimeoutError):
        cause = cause.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"upstream '{provider}' is unreachable: {_os_reason(cause)}", provider=provider)
    if isinstance(cause, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return UpstreamTimeout(f"upstream '{provider}' timed out", provider=provider)
    if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return UpstreamBadResponse(f"upstream '{provider}' closed the connection before the response was complete",
                                   provider=provider)
    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return UpstreamTimeout(f"upstream '{provider}' timed out", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"upstream '{provider}' is unreachable", provider=provider)
    return UpstreamBadResponse(
        f"upstream '{provider}' failed: {type(exc).__name__}", provider=provider)


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    # str(exc) names host and port, which is fine; the OS error says why (refused, no route, ...)
    return exc.os_error.strerror or str(exc.os_error) if exc.os_error else "connection failed"
