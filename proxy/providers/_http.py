"""The HTTP slot under every provider adapter: POST a body, read the answer whole or as it streams.

Production runs on `AiohttpClient`, aiohttp's connection pool called directly. Measured here
(issue 5, py-spy at 300 RPS): on the same aiohttp pool, httpx's request building — URL merging,
headers, cookie and redirect hooks — cost ~20% of the gateway's CPU per request, more than aiohttp
itself. DESIGN.md's table is the other half: httpx's own pool costs ~10x aiohttp's here.

Tests put any httpx transport (`MockTransport`, `ASGITransport`) in the same slot with
`HttpxClient`. Both clients raise only `UpstreamError`s naming the provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamTimeout, UpstreamUnreachable

__all__ = ["AiohttpClient", "HTTPClient", "HTTPResponse", "HttpxClient", "Timeouts"]


@dataclasses.dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float  # between two reads of the answer


class HTTPResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunks are relayed as they come, never batched)."""
        ...

    async def aclose(self) -> None: ...


class HTTPClient(Protocol):
    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> HTTPResponse:
        """Send the request and wait for the status line and headers."""
        ...

    async def aclose(self) -> None: ...


# --- aiohttp (production) ------------------------------------------------------------------------


class AiohttpClient:
    def __init__(self, provider: str, base_url: str, headers: Mapping[str, str], *,
                 max_connections: int = 256, keepalive_s: float = 30.0) -> None:
        self.provider = provider
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # created on first use, inside the running loop that will use it
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

    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> _AiohttpResponse:
        session = self._session or self._open()
        try:
            response = await session.post(self._url(path), data=body, timeout=self._timeout(timeouts))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise aiohttp_error(exc, self.provider) from None
        return _AiohttpResponse(self.provider, response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpResponse:
    __slots__ = ("provider", "status", "headers", "_response")

    def __init__(self, provider: str, response: aiohttp.ClientResponse) -> None:
        self.provider = provider
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._response = response

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise aiohttp_error(exc, self.provider) from None
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_any():
                yield data
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise aiohttp_error(exc, self.provider) from None

    async def aclose(self) -> None:
        self._response.close()


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
                 transport: httpx.AsyncBaseTransport) -> None:
        self.provider = provider
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=dict(headers), transport=transport)

    async def post(self, path: str, body: bytes, timeouts: Timeouts) -> _HttpxResponse:
        timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.connect)
        request = self._client.build_request("POST", path, content=body, timeout=timeout)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise httpx_error(exc, self.provider) from None
        return _HttpxResponse(self.provider, response)

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpxResponse:
    __slots__ = ("provider", "status", "headers", "_response")

    def __init__(self, provider: str, response: httpx.Response) -> None:
        self.provider = provider
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers
        self._response = response

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise httpx_error(exc, self.provider) from None
        finally:
            await self._response.aclose()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.aiter_bytes():
                yield data
        except httpx.HTTPError as exc:
            raise httpx_error(exc, self.provider) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def httpx_error(exc: httpx.HTTPError, provider: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"upstream '{provider}' timed out", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable(f"upstream '{provider}' is unreachable", provider=provider)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return UpstreamBadResponse(f"upstream '{provider}' closed the connection before the response was complete",
                                   provider=provider)
    return UpstreamBadResponse(f"upstream '{provider}' failed: {type(exc).__name__}", provider=provider)
