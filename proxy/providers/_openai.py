"""Adapter for any OpenAI-compatible upstream: OpenAI, vLLM, Ollama, Together, the mock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

import httpx
import orjson

from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamHTTPError
from proxy.providers._base import ENDPOINT_PATHS, UpstreamCall, UpstreamReply
from proxy.providers._sse import SSESplitter
from proxy.providers._transport import classify_transport_error, fast_transport

__all__ = ["OpenAIAdapter"]

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
            request_headers["authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=request_headers,
            timeout=self._timeout,
            transport=transport or fast_transport(max_connections),
        )

    def _timeout_for(self, call: UpstreamCall) -> httpx.Timeout:
        if call.timeout is None:
            return self._timeout
        return httpx.Timeout(min(call.timeout, self._timeout.read or call.timeout),
                             connect=min(call.timeout, self._timeout.connect or call.timeout))

    def _request(self, call: UpstreamCall) -> httpx.Request:
        return self._client.build_request("POST", ENDPOINT_PATHS[call.endpoint], content=orjson.dumps(call.body),
                                          timeout=self._timeout_for(call))

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        try:
            response = await self._client.send(self._request(call))
            first_byte_at = time.time()
            content = response.content
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, self.name) from None
        if response.status_code >= 400:
            raise self._http_error(response.status_code, content, response.headers)
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(f"upstream '{self.name}' returned a body that is not JSON "
                                      f"(status {response.status_code}, {len(content)} bytes)",
                                      provider=self.name, upstream_status=response.status_code) from None
        if not isinstance(data, dict):
            raise UpstreamBadResponse(f"upstream '{self.name}' returned JSON that is not an object",
                                      provider=self.name, upstream_status=response.status_code)
        return UpstreamReply(response.status_code, content, data, first_byte_at)

    async def stream(self, call: UpstreamCall) -> _OpenAIStream:
        try:
            response = await self._client.send(self._request(call), stream=True)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc, self.name) from None
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError as exc:
                raise classify_transport_error(exc, self.name) from None
            finally:
                await response.aclose()
            raise self._http_error(response.status_code, content, response.headers)
        return _OpenAIStream(self.name, response)

    def _http_error(self, status: int, content: bytes, headers: httpx.Headers) -> UpstreamHTTPError:
        detail = _error_message(content)
        return UpstreamHTTPError(
            f"upstream '{self.name}' returned {status}" + (f": {detail}" if detail else ""),
            provider=self.name, upstream_status=status, body=content,
            content_type=headers.get("content-type"),
            headers={k: headers[k] for k in _PASS_HEADERS if k in headers},
        )

    async def close(self) -> None:
        await self._client.aclose()


class _OpenAIStream:
    def __init__(self, provider: str, response: httpx.Response) -> None:
        self.provider = provider
        self.status = response.status_code
        self.first_byte_at = time.time()
        self._response = response

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for data in self._response.aiter_bytes():
                for event in splitter.feed(data):
                    yield event
        except httpx.HTTPError as exc:
            raise _stream_error(classify_transport_error(exc, self.provider)) from None
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
