"""A cheap OpenAI-compatible mock upstream for the benchmark: raw asyncio, HTTP/1.1 keep-alive.

    python -m bench.upstream --port 9101 --latency-ms 50 --chunks 50 --chunk-delay-ms 10

POST /v1/chat/completions -> a fixed, realistic `chat.completion` (after `--latency-ms`), or with
`"stream": true` an SSE stream of `--chunks` content chunks `--chunk-delay-ms` apart (first chunk
after `--latency-ms`), then a finish chunk, a usage chunk when `stream_options.include_usage`, and
`data: [DONE]`. GET /health and GET /v1/models answer 200.

The harness changes the settings between scenarios without restarting (so the gateways' pooled
connections survive): `PUT /_bench/config?latency_ms=50&chunks=50&chunk_delay_ms=10`.
GET /_bench/stats gives the request counts. No framework, no per-request allocations beyond what
the parse needs: the non-streamed answer is serialized once per model name and cached.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import parse_qs

try:
    import orjson

    _loads = orjson.loads
    _dumps = orjson.dumps
except ImportError:  # pragma: no cover - the project always has orjson
    import json

    _loads = json.loads

    def _dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


ANSWER = (
    "Thanks for reaching out! I checked order #48213: it left our warehouse yesterday and is with the "
    "carrier now. The tracking number is 1Z999AA10123456784, and the estimated delivery is Thursday "
    "between 9am and 5pm. If it has not arrived by Friday, reply here and I will open a claim with the "
    "carrier and send a replacement at no cost. Is there anything else I can help you with today?"
)
CREATED = 1_732_000_000


class Settings:
    def __init__(self, latency_ms: float = 0.0, chunks: int = 50, chunk_delay_ms: float = 10.0) -> None:
        self.latency_ms = latency_ms
        self.chunks = chunks
        self.chunk_delay_ms = chunk_delay_ms
        self.requests = 0
        self.streams = 0


def completion(model: str) -> bytes:
    return _dumps({
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_bench_0001",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 182, "completion_tokens": 78, "total_tokens": 260,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    })


def _event(obj: object) -> bytes:
    data = b"data: " + _dumps(obj) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The stream as HTTP chunks: `chunks` content events, then finish (+ usage) + [DONE] + end."""
    words = ANSWER.split(" ")
    base = {"id": "chatcmpl-bench0000000000000000000000", "object": "chat.completion.chunk",
            "created": CREATED, "model": model, "system_fingerprint": "fp_bench_0001"}
    events = []
    for i in range(chunks):
        delta: dict = {"content": (" " if i else "") + words[i % len(words)]}
        if i == 0:
            delta = {"role": "assistant", **delta}
        events.append(_event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                    "finish_reason": None}]}))
    tail = _event({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    if include_usage:
        tail += _event({**base, "choices": [], "usage": {"prompt_tokens": 182, "completion_tokens": chunks,
                                                          "total_tokens": 182 + chunks}})
    done = b"data: [DONE]\n\n"
    tail += b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)
    events.append(tail)
    return events


class MockProtocol(asyncio.Protocol):
    __slots__ = ("settings", "cache", "transport", "buf")

    def __init__(self, settings: Settings, cache: dict[str, bytes]) -> None:
        self.settings = settings
        self.cache = cache
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17: stop if stop >= 0 else None])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._reply(b"411 Length Required", b'{"error":"send content-length"}', close=True)
                return
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body = bytes(self.buf[end + 4: total])
            del self.buf[:total]
            self.handle(head, body)

    def _reply(self, status: bytes, body: bytes, close: bool = False) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                % (status, len(body), b"connection: close\r\n" if close else b"", body))
        if close:
            t.close()

    def handle(self, head: bytes, body: bytes) -> None:
        line = head.split(b"\r\n", 1)[0]
        method, _, rest = line.partition(b" ")
        target = rest.rpartition(b" ")[0]
        close = b"\r\nconnection: close" in head
        s = self.settings
        if method == b"post" and target.endswith(b"/chat/completions"):
            s.requests += 1
            try:
                req = _loads(body)
                model = str(req.get("model") or "gpt-bench")
            except Exception:
                self._reply(b"400 Bad Request", b'{"error":{"message":"body is not JSON"}}', close)
                return
            loop = asyncio.get_running_loop()
            if req.get("stream"):
                s.streams += 1
                usage = bool((req.get("stream_options") or {}).get("include_usage"))
                loop.create_task(self.stream(model, usage, close))
                return
            answer = self.cache.get(model)
            if answer is None:
                answer = self.cache[model] = completion(model)
            if s.latency_ms > 0:
                loop.call_later(s.latency_ms / 1000, self._reply, b"200 OK", answer, close)
            else:
                self._reply(b"200 OK", answer, close)
        elif method == b"put" and target.startswith(b"/_bench/config"):
            query = parse_qs(target.partition(b"?")[2].decode())
            if "latency_ms" in query:
                s.latency_ms = float(query["latency_ms"][0])
            if "chunks" in query:
                s.chunks = int(query["chunks"][0])
            if "chunk_delay_ms" in query:
                s.chunk_delay_ms = float(query["chunk_delay_ms"][0])
            self._reply(b"200 OK", _dumps(self._stats()), close)
        elif method == b"get" and target.startswith(b"/_bench/stats"):
            self._reply(b"200 OK", _dumps(self._stats()), close)
        elif method == b"get" and target.rstrip(b"/").endswith(b"/models"):
            self._reply(b"200 OK", b'{"object":"list","data":[{"id":"gpt-bench","object":"model",'
                                   b'"created":1732000000,"owned_by":"bench"}]}', close)
        elif method == b"get":
            self._reply(b"200 OK", b'{"status":"ok"}', close)
        else:
            self._reply(b"404 Not Found", b'{"error":{"message":"not found"}}', close)

    def _stats(self) -> dict:
        s = self.settings
        return {"latency_ms": s.latency_ms, "chunks": s.chunks, "chunk_delay_ms": s.chunk_delay_ms,
                "requests": s.requests, "streams": s.streams}

    async def stream(self, model: str, include_usage: bool, close: bool) -> None:
        s = self.settings
        key = f"{model}|{s.chunks}|{include_usage}"
        events = self.cache.get(key)
        if events is None:
            events = self.cache[key] = stream_events(model, s.chunks, include_usage)  # type: ignore[assignment]
        if s.latency_ms > 0:
            await asyncio.sleep(s.latency_ms / 1000)
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + events[0])
        delay = s.chunk_delay_ms / 1000
        # pace against an absolute schedule so that timer slop does not accumulate
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, event in enumerate(events[1:], 1):
            if i < len(events) - 1 and delay > 0:
                await asyncio.sleep(max(0.0, start + i * delay - loop.time()))
            t = self.transport
            if t is None or t.is_closing():
                return
            t.write(event)
        if close and self.transport is not None:
            self.transport.close()


async def serve(host: str, port: int, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    cache: dict[str, bytes] = {}
    server = await loop.create_server(lambda: MockProtocol(settings, cache), host, port, backlog=4096,
                                      reuse_address=True)
    print(f"bench mock upstream on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9101)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--chunks", type=int, default=50)
    p.add_argument("--chunk-delay-ms", type=float, default=10.0)
    a = p.parse_args(argv)
    settings = Settings(a.latency_ms, a.chunks, a.chunk_delay_ms)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        runner(serve(a.host, a.port, settings))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
