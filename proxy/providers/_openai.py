"""Adapter for any OpenAI-compatible upstream: OpenAI, vLLM, Ollama, Together, the mock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamHTTPError
from proxy.providers._base import ENDPOINT_PATHS, UpstreamCall, UpstreamReply
from proxy.providers._http import AiohttpClient, HTTPClient, HTTPResponse, HttpxClient, Timeouts
from proxy.providers._sse import SSESplitter

__all__ = ["AzureOpenAIAdapter", "OpenAIAdapter"]

_PASS_HEADERS = ("retry-after", "retry-after-ms")


class OpenAIAdapter:
    kind = "openai"

    def __init__(self, name: str, *, base_url: str, api_key: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, max_connections: int = 256,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        request_headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            request_headers.update(self._auth_headers(api_key))
        self._timeouts = Timeouts(connect=connect_timeout, read=read_timeout)
        self._http: HTTPClient = (
            HttpxClient(name, base_url, request_headers, transport) if transport is not None
            else AiohttpClient(name, base_url, request_headers, max_connections=max_connections))

    @staticmethod
    def _auth_headers(api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def _timeouts_for(self, call: UpstreamCall) -> Timeouts:
        if call.timeout is None:
            return self._timeouts
        return Timeouts(connect=min(call.timeout, self._timeouts.connect), read=min(call.timeout, self._timeouts.read))

    def _path(self, call: UpstreamCall) -> str:
        return ENDPOINT_PATHS[call.endpoint]

    async def _post(self, call: UpstreamCall) -> HTTPResponse:
        return await self._http.post(self._path(call), orjson.dumps(call.body), self._timeouts_for(call))

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        response = await self._post(call)
        content = await response.read()
        first_byte_at = time.time()
        if response.status >= 400:
            raise self._http_error(response.status, content, response.headers)
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
        if response.status >= 400:
            content = await response.read()
            raise self._http_error(response.status, content, response.headers)
        return _OpenAIStream(self.name, response)

    def _http_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamHTTPError:
        detail = _error_message(content)
        return UpstreamHTTPError(
            f"upstream '{self.name}' returned {status}" + (f": {detail}" if detail else ""),
            provider=self.name, upstream_status=status, body=content,
            content_type=headers.get("content-type"),
            headers={k: headers[k] for k in _PASS_HEADERS if k in headers},
        )

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
    def __init__(self, provider: str, response: HTTPResponse) -> None:
        self.provider = provider
        self.status = response.status
        self.first_byte_at = time.time()
        self._response = response

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for data in self._response.iter_chunks():
                for event in splitter.feed(data):
                    yield event
        except UpstreamError as exc:
            raise _stream_error(exc) from None
        if splitter.tail().strip():
            raise UpstreamBadResponse(f"upstream '{self.provider}' ended the stream in the middle of an event",
                                      provider=self.provider, upstream_status=self.status)

    async def aclose(self) -> None:
        await self._response.aclose()


def _stream_error(error: UpstreamError) -> UpstreamError:
    error.message = error.message.replace("before the response was complete", "in the middle of the stream")
    error.args = (error.message,)
    return error


def _error_message(content: bytes) -> str:
    """The upstream's own error message, if it sent OpenAI's error shape (it never holds our key)."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = data["error"].get("message")
        return str(message)[:300] if message else ""
    return ""
