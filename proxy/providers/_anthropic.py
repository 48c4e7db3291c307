"""Adapter for Anthropic's Messages API behind the OpenAI chat API the app speaks.

The request is translated (`_anthropic_translate.to_anthropic`: a parameter with no Anthropic
equivalent is a 400 naming it, never a silent drop of meaning), sent to `/v1/messages` through the
same HTTP slot as every adapter, and the answer translated back to an OpenAI `chat.completion`, or
the event stream to `chat.completion.chunk` events, with a final usage chunk and `[DONE]`.
Anthropic errors become OpenAI's error shape; the record keeps the upstream status (529 included).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from proxy.errors import InvalidRequest, UpstreamBadResponse, UpstreamError, UpstreamHTTPError
from proxy.providers._anthropic_translate import (
    MalformedResponse,
    StreamError,
    StreamTranslator,
    Translation,
    TranslationError,
    error_to_openai,
    from_anthropic,
    to_anthropic,
)
from proxy.providers._base import UpstreamCall, UpstreamReply
from proxy.providers._http import AiohttpClient, HTTPClient, HTTPResponse, HttpxClient, Timeouts
from proxy.providers._sse import SSESplitter

__all__ = ["AnthropicAdapter"]

API_VERSION = "2023-06-01"
_PASS_HEADERS = ("retry-after", "retry-after-ms")


class AnthropicAdapter:
    kind = "anthropic"

    def __init__(self, name: str, *, base_url: str = "https://api.anthropic.com", api_key: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, max_connections: int = 256, default_max_tokens: int = 4096,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.default_max_tokens = default_max_tokens
        request_headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **(headers or {})}
        if api_key:
            request_headers["x-api-key"] = api_key
        base = base_url.rstrip("/")
        if base.endswith("/v1"):  # accept either form of the base URL
            base = base[: -len("/v1")]
        self._timeouts = Timeouts(connect=connect_timeout, read=read_timeout)
        self._http: HTTPClient = (
            HttpxClient(name, base, request_headers, transport) if transport is not None
            else AiohttpClient(name, base, request_headers, max_connections=max_connections))

    def _translate(self, call: UpstreamCall) -> tuple[dict[str, Any], Translation]:
        if call.endpoint != "chat.completions":
            raise InvalidRequest(f"provider '{self.name}' (anthropic) serves chat completions only, not "
                                 f"{call.endpoint}; route this model to an OpenAI-compatible provider", param="model")
        try:
            return to_anthropic(call.body, model=str(call.body.get("model")), default_max_tokens=self.default_max_tokens)
        except TranslationError as exc:
            raise InvalidRequest(f"{exc.message} (provider '{self.name}' is Anthropic)", param=exc.param) from None

    async def _post(self, call: UpstreamCall, body: dict[str, Any]) -> HTTPResponse:
        timeouts = self._timeouts if call.timeout is None else Timeouts(
            connect=min(call.timeout, self._timeouts.connect), read=min(call.timeout, self._timeouts.read))
        response = await self._http.post("/v1/messages", orjson.dumps(body), timeouts)
        if response.status >= 400:
            raise self._http_error(response.status, await response.read(), response.headers)
        return response

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        body, translation = self._translate(call)
        response = await self._post(call, body)
        content = await response.read()
        first_byte_at = time.time()
        try:
            data = from_anthropic(orjson.loads(content), request_model=str(call.body.get("model")),
                                  translation=translation)
        except (orjson.JSONDecodeError, MalformedResponse) as exc:
            raise UpstreamBadResponse(f"upstream '{self.name}' returned a body that is not an Anthropic message "
                                      f"({type(exc).__name__})", provider=self.name,
                                      upstream_status=response.status) from None
        return UpstreamReply(200, orjson.dumps(data), data, first_byte_at)

    async def stream(self, call: UpstreamCall) -> _AnthropicStream:
        body, translation = self._translate(call)
        response = await self._post(call, body)
        translator = StreamTranslator(request_model=str(call.body.get("model")), translation=translation)
        return _AnthropicStream(self.name, response, translator)

    def _http_error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamHTTPError:
        # the record keeps Anthropic's own status (529 overloaded stays 529); the client gets OpenAI's
        # error shape: a 4xx passes through, a 5xx becomes a 502 naming the upstream
        _, error = error_to_openai(status, content)
        message = str(error.get("error", {}).get("message", ""))[:300]
        return UpstreamHTTPError(
            f"upstream '{self.name}' returned {status}" + (f": {message}" if message else ""),
            provider=self.name, upstream_status=status, body=orjson.dumps(error), content_type="application/json",
            headers={k: headers[k] for k in _PASS_HEADERS if k in headers})

    async def close(self) -> None:
        await self._http.aclose()


class _AnthropicStream:
    def __init__(self, provider: str, response: HTTPResponse, translator: StreamTranslator) -> None:
        self.provider = provider
        self.status = 200
        self.first_byte_at = time.time()
        self._response = response
        self._translator = translator

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter()
        try:
            async for data in self._response.iter_chunks():
                for event in splitter.feed(data):
                    for chunk in self._translate(event):
                        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except UpstreamError as exc:
            exc.message = exc.message.replace("before the response was complete", "in the middle of the stream")
            exc.args = (exc.message,)
            raise
        if not self._translator.finished:
            raise UpstreamBadResponse(f"upstream '{self.provider}' ended the stream before message_stop",
                                      provider=self.provider, upstream_status=self.status)
        yield b"data: [DONE]\n\n"

    def _translate(self, event: bytes) -> list[dict[str, Any]]:
        try:
            name, payload = _parse_event(event)
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent an event that is not UTF-8 JSON",
                                      provider=self.provider, upstream_status=self.status) from None
        if payload is None:
            return []
        try:
            return self._translator.feed(name, payload)
        except StreamError as exc:
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent an error event: {exc.type}: {exc.message}",
                                      provider=self.provider, upstream_status=exc.status) from None
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):  # an event of the wrong shape
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent a '{name}' event of an unexpected shape",
                                      provider=self.provider, upstream_status=self.status) from None

    async def aclose(self) -> None:
        await self._response.aclose()


def _parse_event(event: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """(event name, data object) of one SSE event; (name, None) for a comment or an empty event."""
    name: str | None = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].strip())
    if not data:
        return name, None
    payload = orjson.loads(b"\n".join(data))
    return name, payload if isinstance(payload, dict) else None
