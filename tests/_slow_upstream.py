"""A slow OpenAI-compatible upstream on 127.0.0.1 that notes what happens to its connections.

It runs in its own thread and event loop, so a test's own loop stays free for its clients, and it
is the independent witness of cancellation: a request the gateway gives up on shows here as its
connection closing. What it does depends on the body's `model`:

  hold         no answer: waits (up to 60 s) for the connection to close, and notes when
  hold-stream  200 text/event-stream with one chunk, then waits for the close as `hold` does
  drip-N       200 text/event-stream: N chunks, one every 0.1 s, then [DONE]
  busy         503 with Retry-After: 30
  other        200 with a one-word chat completion

Requests are told apart by the body's `user` field (the test's marker), which the gateway forwards.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

__all__ = ["SlowUpstream"]

HOLD_S = 60.0


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(model: str, text: str) -> bytes:
    chunk = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0, "model": model,
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class SlowUpstream:
    def __init__(self) -> None:
        self.port = 0
        self.requests: list[dict[str, Any]] = []  # every request: path, model, marker, arrived (monotonic)
        self.closed: dict[str, float] = {}  # marker -> when its held connection closed (monotonic)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SlowUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the slow upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def arrived(self, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if model is None or r["model"] == model]

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))) or b"{}")
                model, marker = str(body.get("model")), str(body.get("user"))
                with self._lock:
                    self.requests.append({"path": path, "model": model, "marker": marker,
                                          "arrived": time.monotonic()})
                if model == "hold":
                    await self._until_closed(reader, marker)
                    return
                if model == "hold-stream":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n" + _chunk(_event(model, "partial")))
                    await writer.drain()
                    await self._until_closed(reader, marker)
                    return
                if model.startswith("drip-"):
                    await self._drip(writer, model, int(model.split("-", 1)[1]))
                elif model == "busy":
                    self._answer(writer, 503, b'{"error": {"message": "busy", "type": "server_error"}}',
                                 b"retry-after: 30\r\n")
                else:
                    answer = {"id": "chatcmpl-fast", "object": "chat.completion", "created": 0, "model": model,
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                    self._answer(writer, 200, json.dumps(answer).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _until_closed(self, reader: asyncio.StreamReader, marker: str) -> None:
        try:
            await asyncio.wait_for(reader.read(1), HOLD_S)  # b"" once the gateway closes the connection
        except TimeoutError:
            return  # never closed: not noted
        except ConnectionError:
            pass
        with self._lock:
            self.closed[marker] = time.monotonic()

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, extra: bytes = b"") -> None:
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                     .encode() + extra + b"\r\n" + body)

    @staticmethod
    async def _drip(writer: asyncio.StreamWriter, model: str, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(n):
            writer.write(_chunk(_event(model, f"w{i} ")))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
