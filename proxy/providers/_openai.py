"""Adapter for any OpenAI-compatible upstream: OpenAI, vLLM, Ollama, Together, the mock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from proxy.config import UpstreamLimits
from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamHTTPError
from proxy.providers._base import ENDPOINT_PATHS, UpstreamCall, UpstreamReply
from proxy.providers._http import HTTPClient, HTTPResponse, Timeouts, open_client
from proxy.providers._limits import event_too_large
from proxy.providers._scrub import Scrubber, provider_secrets
from proxy.providers._sse import EventTooLarge, SSESplitter
from proxy.providers._upstream_error import ERROR_BODY_BYTES, http_error

__all__ = ["AzureOpenAIAdapter", "OpenAIAdapter"]


class OpenAIAdapter:
    kind = "openai"

    def __init__(self, name: str, *, base_url: str, api_key: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, pool_timeout: float = 10.0, max_connections: int = 256,
                 limits: UpstreamLimits | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        request_headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            request_headers.update(self._auth_headers(api_key))
        self.limits = limits or UpstreamLimits()
        self._timeouts = Timeouts(connect=connect_timeout, read=read_timeout, pool=pool_timeout)
        self._scrub = Scrubber(provider_secrets(api_key, headers, base_url))
        self._http: HTTPClient = open_client(name, base_url, request_headers, max_connections=max_connections,
                                             limits=self.limits, transport=transport)

    @staticmethod
    def _auth_headers(api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def _timeouts_for(self, call: UpstreamCall) -> Timeouts:
        if call.timeout is None:
            return self._timeouts
        t = self._timeouts
        return Timeouts(connect=min(call.timeout, t.connect), read=min(call.timeout, t.read),
                        pool=min(call.timeout, t.pool))

    def _path(self, call: UpstreamCall) -> str:
        return ENDPOINT_PATHS[call.endpoint]

    async def _post(self, call: UpstreamCall) -> HTTPResponse:
        response = await self._http.post(self._path(call), orjson.dumps(call.body), self._timeouts_for(call))
        if response.status >= 400:
            raise await self._http_error(response)
        return response

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        response = await self._post(call)
        content = await response.read()
        first_byte_at = time.time()
        if self._scrub:
            content = self._scrub.answer(content)  # an upstream echoing our key in an answer
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(f"upstream '{self.name}' returned a body that is not JSON "
                                      f"(status {response.status}, {len(content)} bytes)",
                                      provider=self.name, upstream_status=response.status) from None
        if not isinstance(data, dict):
            raise UpstreamBadResponse(f"upstream '{self.name}' returned JSON that is not an object",
                                      provider=self.name, upstream_status=response.status)
        return UpstreamReply(response.status, content, data, first_byte_at)

    async def stream(self, call: UpstreamCall) -> _OpenAIStream:
        response = await self._post(call)
        return _OpenAIStream(self.name, response, self.limits.max_event_bytes, self._scrub)

    async def _http_error(self, response: HTTPResponse) -> UpstreamHTTPError:
        body, cut = await response.read_some(ERROR_BODY_BYTES)
        return http_error(self.name, response.status, body, response.headers, self._scrub, cut=cut)

    async def close(self) -> None:
        await self._http.aclose()


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure OpenAI: the same wire format, at deployment URLs with an `api-version`, keyed by an
    `api-key` header. The variant's `model` is the deployment name (Azure ignores the body's model)."""

    kind = "azure"
    DEFAULT_API_VERSION = "2024-10-21"  # the GA version current when this was written; set `api_version:`

    def __init__(self, name: str, *, api_version: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.api_version = api_version or self.DEFAULT_API_VERSION

    @staticmethod
    def _auth_headers(api_key: str) -> dict[str, str]:
        return {"api-key": api_key}

    def _path(self, call: UpstreamCall) -> str:
        deployment = quote(str(call.body.get("model", "")), safe="")
        return f"/openai/deployments/{deployment}{ENDPOINT_PATHS[call.endpoint]}?api-version={self.api_version}"


class _OpenAIStream:
    def __init__(self, provider: str, response: HTTPResponse, max_event_bytes: int | None = None,
                 scrub: Scrubber | None = None) -> None:
        self.provider = provider
        self.status = response.status
        self.first_byte_at = time.time()
        self._response = response
        self._max_event_bytes = max_event_bytes
        self._scrub = scrub if scrub else None

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter(self._max_event_bytes)
        scrub = self._scrub
        try:
            async for data in self._response.iter_chunks():
                for event in splitter.feed(data):
                    if not event.isascii():
                        self._check_utf8(event)
                    yield scrub.answer(event) if scrub is not None else event
        except UpstreamError as exc:
            raise _stream_error(exc) from None
        except EventTooLarge as exc:
            raise event_too_large(self.provider, exc.size, exc.limit) from None
        if splitter.tail().strip():
            raise UpstreamBadResponse(f"upstream '{self.provider}' ended the stream in the middle of an event",
                                      provider=self.provider, upstream_status=self.status)

    def _check_utf8(self, event: bytes) -> None:
        try:
            event.decode("utf-8")
        except UnicodeDecodeError:
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent an SSE event that is not valid UTF-8",
                                      provider=self.provider, upstream_status=self.status) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def _stream_error(error: UpstreamError) -> UpstreamError:
    error.message = error.message.replace("before the response was complete", "in the middle of the stream")
    error.args = (error.message,)
    return error
