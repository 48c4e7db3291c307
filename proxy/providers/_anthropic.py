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

from proxy.config import UpstreamLimits
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
from proxy.providers._http import HTTPClient, HTTPResponse, Timeouts, open_client
from proxy.providers._limits import event_too_large
from proxy.providers._scrub import Scrubber, provider_secrets
from proxy.providers._sse import EventTooLarge, SSESplitter
from proxy.providers._upstream_error import (
    ERROR_BODY_BYTES,
    MAX_MESSAGE_CHARS,
    bounded,
    pass_headers,
    safe_identifier,
)

__all__ = ["AnthropicAdapter"]

API_VERSION = "2023-06-01"


class AnthropicAdapter:
    kind = "anthropic"

    def __init__(self, name: str, *, base_url: str = "https://api.anthropic.com", api_key: str | None = None,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, pool_timeout: float = 10.0, max_connections: int = 256,
                 limits: UpstreamLimits | None = None, default_max_tokens: int = 4096,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.default_max_tokens = default_max_tokens
        request_headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **(headers or {})}
        if api_key:
            request_headers["x-api-key"] = api_key
        base = base_url.rstrip("/")
        if base.endswith("/v1"):  # accept either form of the base URL
            base = base[: -len("/v1")]
        self.limits = limits or UpstreamLimits()
        self._timeouts = Timeouts(connect=connect_timeout, read=read_timeout, pool=pool_timeout)
        self._scrub = Scrubber(provider_secrets(api_key, headers, base_url))
        self._http: HTTPClient = open_client(name, base, request_headers, max_connections=max_connections,
                                             limits=self.limits, transport=transport)

    def _translate(self, call: UpstreamCall) -> tuple[dict[str, Any], Translation]:
        if call.endpoint != "chat.completions":
            raise InvalidRequest(f"provider '{self.name}' (anthropic) serves chat completions only, not "
                                 f"{call.endpoint}; route this model to an OpenAI-compatible provider", param="model")
        try:
            return to_anthropic(call.body, model=str(call.body.get("model")), default_max_tokens=self.default_max_tokens)
        except TranslationError as exc:
            raise InvalidRequest(f"{exc.message} (provider '{self.name}' is Anthropic)", param=exc.param) from None

    async def _post(self, call: UpstreamCall, body: dict[str, Any]) -> HTTPResponse:
        t = self._timeouts
        timeouts = t if call.timeout is None else Timeouts(
            connect=min(call.timeout, t.connect), read=min(call.timeout, t.read), pool=min(call.timeout, t.pool))
        response = await self._http.post("/v1/messages", orjson.dumps(body), timeouts)
        if response.status >= 400:
            body_bytes, cut = await response.read_some(ERROR_BODY_BYTES)
            raise self._http_error(response.status, body_bytes, response.headers, cut)
        return response

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        body, translation = self._translate(call)
        response = await self._post(call, body)
        content = await response.read()
        first_byte_at = time.time()
        if self._scrub:
            content = self._scrub.answer(content)  # an upstream echoing our key in an answer
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
        return _AnthropicStream(self.name, response, translator, self.limits.max_event_bytes, self._scrub)

    def _http_error(self, status: int, content: bytes, headers: Mapping[str, str], cut: bool) -> UpstreamHTTPError:
        # the record keeps Anthropic's own status (529 overloaded stays 529); the client gets OpenAI's
        # error shape, scrubbed: a 4xx keeps its status and fields, a 5xx becomes a 502 naming the upstream
        _, error = error_to_openai(status, content, content_type=headers.get("content-type"), scrub=self._scrub.text,
                                   cut=cut)
        fields = error["error"]
        message = bounded(str(fields.get("message") or ""), MAX_MESSAGE_CHARS)
        return UpstreamHTTPError(
            f"upstream '{self.name}' returned {status}" + (f": {message}" if message else ""),
            provider=self.name, upstream_status=status, error={**fields, "message": message or None},
            headers=pass_headers(headers))

    async def close(self) -> None:
        await self._http.aclose()


class _AnthropicStream:
    def __init__(self, provider: str, response: HTTPResponse, translator: StreamTranslator,
                 max_event_bytes: int | None = None, scrub: Scrubber | None = None) -> None:
        self.provider = provider
        self.status = 200
        self.first_byte_at = time.time()
        self._response = response
        self._translator = translator
        self._max_event_bytes = max_event_bytes
        self._scrub = scrub or Scrubber(())

    async def events(self) -> AsyncIterator[bytes]:
        splitter = SSESplitter(self._max_event_bytes)
        scrub = self._scrub if self._scrub else None
        try:
            async for data in self._response.iter_chunks():
                for event in splitter.feed(data):
                    if scrub is not None:
                        event = scrub.answer(event)
                    for chunk in self._translate(event):
                        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except UpstreamError as exc:
            exc.message = exc.message.replace("before the response was complete", "in the middle of the stream")
            exc.args = (exc.message,)
            raise
        except EventTooLarge as exc:
            raise event_too_large(self.provider, exc.size, exc.limit) from None
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
        except StreamError as exc:  # its type and message come from the upstream: scrubbed, bounded
            kind = safe_identifier(exc.type) or "error"
            message = bounded(self._scrub.text(exc.message), MAX_MESSAGE_CHARS)
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent an error event: {kind}: {message}",
                                      provider=self.provider, upstream_status=exc.status) from None
        except (AttributeError, TypeError, KeyError, ValueError, IndexError):  # an event of the wrong shape
            raise UpstreamBadResponse(f"upstream '{self.provider}' sent a '{safe_identifier(name) or '?'}' event of an "
                                      "unexpected shape",
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
