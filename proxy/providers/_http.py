"""The HTTP slot under every provider adapter: POST a body, read the answer whole or as it streams.

Production runs on `AiohttpClient`, aiohttp's connection pool called directly. Measured here
(issue 5, py-spy at 300 RPS): on the same aiohttp pool, httpx's request building — URL merging,
headers, cookie and redirect hooks — cost ~20% of the gateway's CPU per request, more than aiohttp
itself. DESIGN.md's table is the other half: httpx's own pool costs ~10x aiohttp's here.

Tests put any httpx transport (`MockTransport`, `ASGITransport`) in the same slot with
`HttpxClient`. Both clients raise only `UpstreamError`s naming the provider, and hold the upstream
to the same rules (DESIGN.md, "Trust boundaries"):

- a redirect is never followed: a 3xx is `UpstreamBadResponse` (the Location is not repeated);
- what the upstream sends is bounded by the provider's `limits:` (`_limits.BodyMeter`): a whole
  answer is read chunk by chunk with a running count, never with an unbounded `read()`;
- waiting for a pooled connection is bounded by `Timeouts.pool`, apart from the connect timeout,
  and ends in `UpstreamBusy` (503 with Retry-After), not in a connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import httpx
from yarl import URL

from proxy.config import UpstreamLimits
from proxy.errors import UpstreamBadResponse, UpstreamBusy, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from proxy.providers._limits import BodyMeter, next_chunk

__all__ = ["AiohttpClient", "HTTPClient", "HTTPResponse", "HttpxClient", "Timeouts", "open_client"]


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float  # DNS, TCP and TLS of a new connection
    read: float  # between two reads of the answer (the idle gap)
    pool: float = 10.0  # waiting for a free pooled connection


class HTTPResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body, within the provider's limits (`UpstreamTooLarge`, `UpstreamTimeout` past them)."""
        ...

    async def read_some(self, max_bytes: int) -> tuple[bytes, bool]:
        """At most `max_bytes` of the body (an error page), and whether more was left unread."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunks are relayed as they come, never batched), within the limits."""
        ...

    async def aclose(self) -> None: ...


class HTTPClient(Protocol):
    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> HTTPResponse:
        """Send the request and wait for the status line and headers."""
        ...

    async def aclose(self) -> None: ...


def open_client(provider: str, base_url: str, headers: Mapping[str, str], *, max_connections: int,
                limits: UpstreamLimits | None, transport: httpx.AsyncBaseTransport | None) -> HTTPClient:
    """The production client, or the httpx one around `transport` (tests)."""
    if transport is not None:
        return HttpxClient(provider, base_url, headers, transport, limits=limits)
    return AiohttpClient(provider, base_url, headers, max_connections=max_connections, limits=limits)


def _redirect_error(provider: str, status: int) -> UpstreamBadResponse:
    # the Location is not quoted: it may carry a token, and it is not where the caller's request may go
    return UpstreamBadResponse(f"upstream '{provider}' answered {status}, a redirect; Sluicegate never follows "
                               "an upstream's redirects (point the provider's base_url at the final address)",
                               provider=provider, upstream_status=status)


class _BoundedResponse:
    """What both clients share: reading the body within the provider's limits."""

    __slots__ = ("provider", "status", "headers", "_limits", "_started", "_read_timeout", "_done")
    _transport_errors: tuple[type[BaseException], ...] = ()  # what the client's reads raise

    def __init__(self, provider: str, status: int, headers: Mapping[str, str], limits: UpstreamLimits,
                 started: float, read_timeout: float) -> None:
        self.provider = provider
        self.status = status
        self.headers = headers
        self._limits = limits
        self._started = started
        self._read_timeout = read_timeout
        self._done = False

    # --- what a client provides
    def _chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def _raw_total(self) -> int:
        raise NotImplementedError

    def _error(self, exc: BaseException) -> UpstreamError:
        """The UpstreamError for one of `_transport_errors`."""
        raise NotImplementedError

    async def _finish(self, reuse: bool) -> None:
        """Release the connection to the pool (`reuse`, the body was read to its end) or close it."""
        raise NotImplementedError

    # --- shared
    async def read(self) -> bytes:
        meter = BodyMeter(self.provider, self._limits, self._started, stream=False)
        parts: list[bytes] = []
        complete = False
        try:
            meter.check_length(self.headers.get("content-length") if "content-encoding" not in self.headers else None)
            async for chunk in self._bounded_chunks(meter):
                parts.append(chunk)
            complete = True
        finally:
            await self.close(reuse=complete)
        return b"".join(parts)

    async def read_some(self, max_bytes: int) -> tuple[bytes, bool]:
        meter = BodyMeter(self.provider, self._limits, self._started, stream=False)
        parts: list[bytes] = []
        size, complete = 0, False
        try:
            async with contextlib.aclosing(self._bounded_chunks(meter)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
                    size += len(chunk)
                    if size > max_bytes:
                        return b"".join(parts)[:max_bytes], True
            complete = True
        finally:
            await self.close(reuse=complete)
        return b"".join(parts), False

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._bounded_chunks(BodyMeter(self.provider, self._limits, self._started, stream=True))

    async def _bounded_chunks(self, meter: BodyMeter) -> AsyncIterator[bytes]:
        """The body's chunks, counted and timed against the limits; transport errors as UpstreamErrors.
        Per chunk, the common case costs a clock read and an addition (relayed streams go through here)."""
        chunks = self._chunks()
        clock = asyncio.get_running_loop().time
        read_timeout = self._read_timeout
        received, check_from = 0, meter.check_from
        try:
            while True:
                if meter.deadline - clock() >= read_timeout:  # the read timeout bounds this wait already
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        return
                else:
                    next_one = await next_chunk(chunks, meter, read_timeout)
                    if next_one is None:
                        return
                    chunk = next_one
                received += len(chunk)
                if received > check_from:
                    meter.check(received, self._raw_total())
                yield chunk
        except self._transport_errors as exc:
            raise self._error(exc) from None

    async def close(self, reuse: bool = False) -> None:
        if not self._done:
            self._done = True
            await self._finish(reuse)

    async def aclose(self) -> None:
        await self.close()


# --- aiohttp (production) ------------------------------------------------------------------------


class AiohttpClient:
    def __init__(self, provider: str, base_url: str, headers: Mapping[str, str], *,
                 max_connections: int = 256, keepalive_s: float = 30.0,
                 limits: UpstreamLimits | None = None) -> None:
        self.provider = provider
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._limits = limits or UpstreamLimits()
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None
        self._free = asyncio.Semaphore(max_connections)

    def _open(self) -> aiohttp.ClientSession:
        # created on first use, inside the running loop that will use it. `_free`: one per request in
        # flight, given back when its response is released, so the connector's own queue is never
        # used — aiohttp counts that wait as connect time, and it would end as a connect timeout
        self._free = asyncio.Semaphore(self._max_connections)
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_s,
                                         ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                              trust_env=False, headers=self._headers)
        return self._session

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._base + path)
        return url

    def _timeout(self, timeouts: Timeouts) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeouts)
        if timeout is None:
            if len(self._timeouts) > 64:  # deadlines make many distinct values: keep the cache small
                self._timeouts.clear()
            timeout = self._timeouts[timeouts] = aiohttp.ClientTimeout(
                total=None, connect=timeouts.connect, sock_read=timeouts.read)
        return timeout

    async def _wait_for_connection(self, timeouts: Timeouts) -> None:
        if not self._free.locked():
            await self._free.acquire()  # returns at once: no timer on the common path
            return
        try:
            async with asyncio.timeout(timeouts.pool):
                await self._free.acquire()
        except TimeoutError:
            raise UpstreamBusy(f"upstream '{self.provider}' has all {self._max_connections} connections busy "
                               f"(max_connections); this request waited {timeouts.pool:g} s for one (pool_timeout)",
                               provider=self.provider) from None

    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> _AiohttpResponse:
        session = self._session or self._open()
        await self._wait_for_connection(timeouts)
        started = asyncio.get_running_loop().time()
        try:
            response = await session.post(self._url(path), data=body, timeout=self._timeout(timeouts),
                                          allow_redirects=False)
        except BaseException as exc:
            self._free.release()
            if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
                raise aiohttp_error(exc, self.provider) from None
            raise
        wrapped = _AiohttpResponse(self.provider, response, self._limits, started, timeouts.read,
                                   self._free.release)
        if 300 <= response.status < 400:
            await wrapped.close()
            raise _redirect_error(self.provider, response.status)
        return wrapped

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpResponse(_BoundedResponse):
    __slots__ = ("_response", "_give_back")
    _transport_errors = (aiohttp.ClientError, asyncio.TimeoutError)

    def __init__(self, provider: str, response: aiohttp.ClientResponse, limits: UpstreamLimits, started: float,
                 read_timeout: float, give_back: Callable[[], None]) -> None:
        super().__init__(provider, response.status, response.headers, limits, started, read_timeout)
        self._response = response
        self._give_back = give_back

    def _chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    def _raw_total(self) -> int:
        return self._response.content.total_raw_bytes

    def _error(self, exc: BaseException) -> UpstreamError:
        return aiohttp_error(exc, self.provider)

    async def _finish(self, reuse: bool) -> None:
        try:
            if reuse:
                self._response.release()
            else:
                self._response.close()
        finally:
            self._give_back()

    def __del__(self) -> None:
        # a response dropped without being read or closed (a bug upstream of here) must not keep
        # its pool slot for ever: close the connection and give the slot back
        if not self._done:
            self._done = True
            self._response.close()
            self._give_back()


def aiohttp_error(exc: BaseException, provider: str) -> UpstreamError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"upstream '{provider}' is unreachable: {_os_reason(exc)}", provider=provider)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return UpstreamTimeout(f"upstream '{provider}' timed out", provider=provider)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return UpstreamBadResponse(f"upstream '{provider}' closed the connection before the response was complete",
                                   provider=provider)
    return UpstreamBadResponse(f"upstream '{provider}' failed: {type(exc).__name__}", provider=provider)


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    # str(exc) names host and port, which is fine; the OS error says why (refused, no route, ...)
    return exc.os_error.strerror or str(exc.os_error) if exc.os_error else "connection failed"


# --- httpx (tests: MockTransport, ASGITransport) -------------------------------------------------


class HttpxClient:
    def __init__(self, provider: str, base_url: str, headers: Mapping[str, str],
                 transport: httpx.AsyncBaseTransport, limits: UpstreamLimits | None = None) -> None:
        self.provider = provider
        self._limits = limits or UpstreamLimits()
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=dict(headers), transport=transport,
                                         follow_redirects=False)

    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> _HttpxResponse:
        timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool)
        request = self._client.build_request("POST", path, content=body, timeout=timeout)
        started = asyncio.get_running_loop().time()
        try:
            response = await self._client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise httpx_error(exc, self.provider, timeouts) from None
        wrapped = _HttpxResponse(self.provider, response, self._limits, started, timeouts)
        if 300 <= response.status_code < 400:
            await wrapped.close()
            raise _redirect_error(self.provider, response.status_code)
        return wrapped

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxResponse(_BoundedResponse):
    __slots__ = ("_response", "_timeouts")
    _transport_errors = (httpx.HTTPError,)

    def __init__(self, provider: str, response: httpx.Response, limits: UpstreamLimits, started: float,
                 timeouts: Timeouts) -> None:
        super().__init__(provider, response.status_code, response.headers, limits, started, timeouts.read)
        self._response = response
        self._timeouts = timeouts

    def _chunks(self) -> AsyncIterator[bytes]:
        return self._response.aiter_bytes()

    def _raw_total(self) -> int:
        return self._response.num_bytes_downloaded

    def _error(self, exc: BaseException) -> UpstreamError:
        return httpx_error(exc, self.provider, self._timeouts)  # type: ignore[arg-type]

    async def _finish(self, reuse: bool) -> None:
        await self._response.aclose()


def httpx_error(exc: httpx.HTTPError, provider: str, timeouts: Any = None) -> UpstreamError:
    if isinstance(exc, httpx.PoolTimeout):
        waited = f"{timeouts.pool:g} s " if timeouts is not None else ""
        return UpstreamBusy(f"upstream '{provider}' has all its connections busy; this request waited {waited}"
                            "for one (pool_timeout)", provider=provider)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream '{provider}' timed out", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"upstream '{provider}' is unreachable", provider=provider)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return UpstreamBadResponse(f"upstream '{provider}' closed the connection before the response was complete",
                                   provider=provider)
    return UpstreamBadResponse(f"upstream '{provider}' failed: {type(exc).__name__}", provider=provider)
