"""Relaying an upstream stream to the client event by event, as it arrives — never buffered.

Each event is parsed once to assemble the answer for the record (and, later, the guards). The
usage chunk we asked for on the client's behalf is dropped; everything else is passed on as the
upstream sent it. If the client goes away the upstream stream is closed at once (`outcome:
cancelled`, `served` only if an event had reached the client); if the upstream breaks mid-stream the
client gets an SSE error event (the OpenAI SDK raises on it) rather than a silently truncated answer.
Either way the record says what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import orjson
from starlette.types import Receive, Scope, Send

from proxy.assembly import StreamAssembler
from proxy.errors import UpstreamBadResponse, UpstreamError, UpstreamTooLarge, error_body
from proxy.guards import GuardChain
from proxy.logs import get_logger
from proxy.providers import ProviderAdapter, UpstreamCall, UpstreamReply, UpstreamStream, event_data
from proxy.records import Record
from proxy.server._answers import CANCELLED, describe_answer, finish_request
from proxy.server._disconnect import DisconnectWatch
from proxy.server._state import Gateway

__all__ = ["RelayResponse", "StreamTap", "buffer_stream"]

log = get_logger("sluicegate.relay")

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class StreamTap:
    """Watches a stream go by: assembles the answer, notes the first event and a missing [DONE]."""

    __slots__ = ("record", "drop_usage_chunk", "clock", "assembler", "saw_done", "bytes_out", "_first")

    def __init__(self, record: Record, drop_usage_chunk: bool, clock: float) -> None:
        self.record = record
        self.drop_usage_chunk = drop_usage_chunk
        self.clock = clock
        self.assembler = StreamAssembler()
        self.saw_done = False
        self.bytes_out = 0
        self._first = True

    def passes(self, event: bytes) -> bool:
        """Takes in one event; False if it must not be relayed (the usage chunk we asked for)."""
        data = event_data(event)
        if data is not None:
            if data == b"[DONE]":
                self.saw_done = True
            else:
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    self.record.error = "upstream sent an SSE event that is not JSON"
                else:
                    if isinstance(chunk, dict):
                        self.assembler.add(chunk)
                        if self.drop_usage_chunk and not chunk.get("choices") and chunk.get("usage"):
                            return False
        if self._first:
            self.record.ttft_ms = round((time.perf_counter() - self.clock) * 1000, 3)
            self._first = False
        self.bytes_out += len(event)
        return True


async def buffer_stream(provider: ProviderAdapter, call: UpstreamCall, record: Record, drop_usage_chunk: bool,
                        clock: float) -> UpstreamReply:
    """A whole stream, held back (`stream_guard: buffer`) so guards can judge it before it is sent.

    Cancelled half-way (the client left), the record keeps what had arrived: bytes, the answer so
    far and its usage if the upstream had sent it."""
    upstream = await provider.stream(call)
    record.upstream_status = upstream.status
    tap = StreamTap(record, drop_usage_chunk, clock)
    events: list[bytes] = []
    try:
        async for event in upstream.events():
            if tap.passes(event):
                events.append(event)
    except asyncio.CancelledError:
        record.response_bytes = tap.bytes_out
        record.response = tap.assembler.result()
        raise
    finally:
        await upstream.aclose()
    if not tap.saw_done:
        raise UpstreamBadResponse(f"upstream '{record.provider}' ended the stream without [DONE]",
                                  provider=record.provider, upstream_status=upstream.status)
    return UpstreamReply(upstream.status, b"".join(events), tap.assembler.result(), upstream.first_byte_at)


class RelayResponse:
    def __init__(self, gateway: Gateway, guards: GuardChain | None, upstream: UpstreamStream, record: Record,
                 drop_usage_chunk: bool, headers: Mapping[str, str], clock: float,
                 on_done: Callable[[Record], None] | None = None,
                 releases: Sequence[Callable[[], None]] = (), watch: DisconnectWatch | None = None) -> None:
        self.gateway = gateway
        self.guards = guards
        self.upstream = upstream
        self.record = record
        self.headers = [*_SSE_HEADERS, *((k.encode(), v.encode()) for k, v in headers.items())]
        self.clock = clock
        self.tap = StreamTap(record, drop_usage_chunk, clock)
        self.on_done = on_done  # called with the finished record of a stream that completed (the output cache)
        self.releases = releases  # the provider's and the caller's slots, given back when the stream ends
        self.watch = watch  # the request's disconnect watch, handed over by the handler (else one is started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.watch
        if watch is None:
            watch = DisconnectWatch(receive)
        else:
            watch.follow()
        outcome, error = "ok", None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async for event in self.upstream.events():
                if self.tap.passes(event):
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            if not self.tap.saw_done:  # a clean close before [DONE] is a cut too: say so, never truncate silently
                provider = self.record.provider
                outcome, error = "stream_cut", f"upstream '{provider}' ended the stream without [DONE]"
                await self._send_error(send, UpstreamBadResponse(error, provider=provider,
                                                                 upstream_status=self.upstream.status))
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.absorb():
                outcome, error = CANCELLED, "the server stopped the stream"
                raise
            outcome, error = CANCELLED, "the client closed the connection mid-stream"
        except UpstreamError as exc:
            # a breached limit keeps its own outcome; any other fault mid-stream is a cut
            outcome = exc.outcome if isinstance(exc, UpstreamTooLarge) else "stream_cut"
            error = exc.message
            await self._send_error(send, exc)
        except OSError:
            outcome, error = CANCELLED, "the client closed the connection mid-stream"
        finally:
            watch.stop()
            for release in self.releases:  # the one place a stream gives its slots back
                release()
            self._finish(outcome, error)
            await self.upstream.aclose()

    async def _send_error(self, send: Send, exc: UpstreamError) -> None:
        payload = error_body(exc.message, exc.type, None, exc.code)
        try:
            await send({"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": False})
        except OSError:
            pass

    def _finish(self, outcome: str, error: str | None) -> None:
        record = self.record
        record.ended_at = time.time()
        record.latency_ms = round((time.perf_counter() - self.clock) * 1000, 3)
        record.status = 200
        if outcome == "ok" and record.error:  # the stream completed, but an event was not JSON
            outcome = "malformed"
        record.outcome = outcome
        record.error = error or record.error
        record.response_bytes = self.tap.bytes_out
        if outcome == CANCELLED and not self.tap.bytes_out:
            record.served = False  # the client left before any of the answer reached it
        answer = self.tap.assembler.result()
        record.response = answer
        describe_answer(self.gateway, record, answer)
        if self.guards is not None and outcome == "ok":
            # `flag` on a stream: judged after it was sent; the record (not the header) carries it
            record.guards = [failure.to_dict() for failure in self.guards.run(record.request or {}, answer)]
        if outcome == "ok":
            self.gateway.served(record)
            if self.on_done is not None:
                self.on_done(record)
        else:
            self.gateway.record(record)
        finish_request(self.gateway, record.request_id, record.route, record.variant, 200, self.clock,
                       record.attempt, error=error, level="info" if outcome == "ok" else "warning")
