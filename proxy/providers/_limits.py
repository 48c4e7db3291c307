"""Holding an upstream to its provider's `limits:` while its answer is read (DESIGN.md, "Trust boundaries").

`BodyMeter` checks what arrived — bytes after decompression against `max_response_bytes` (a
non-streamed answer), and against the bytes received for `max_decompression_ratio` — and keeps the
call's deadline (`max_response_seconds` or `max_stream_seconds` from when the request was sent).
`next_chunk` waits for the next chunk no longer than that deadline.

Decompression: aiohttp (>= 3.13.3, CVE-2025-69223) decompresses incrementally, at most a chunk
(64 KiB) per network read, and stops reading the socket while the reader has not taken what it
decompressed. So counting the decompressed bytes as they are read, and stopping at a bound, bounds
memory whatever the encoding (gzip, deflate, br and zstd when installed) — no second decompressor of
our own. The ratio bound ends what a size bound cannot: a stream inflating ~1000x for as long as
`max_stream_seconds` allows. It is checked once `RATIO_FLOOR` bytes have arrived, so small, highly
compressible answers are not refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from proxy.errors import UpstreamTimeout, UpstreamTooLarge

__all__ = ["RATIO_FLOOR", "BodyMeter", "event_too_large", "next_chunk", "too_large"]

RATIO_FLOOR = 1024 * 1024


class BodyMeter:
    __slots__ = ("provider", "limits", "stream", "deadline", "check_from", "_max_bytes", "_ratio")

    def __init__(self, provider: str, limits: Any, started: float, *, stream: bool) -> None:
        """`limits`: the provider's `UpstreamLimits`; `started`: `loop.time()` when the request was sent."""
        self.provider = provider
        self.limits = limits
        self.stream = stream
        self.deadline = started + (limits.max_stream_seconds if stream else limits.max_response_seconds)
        self._max_bytes = None if stream else limits.max_response_bytes
        self._ratio = limits.max_decompression_ratio
        # below this many bytes no bound can be passed: `check` is not worth calling
        self.check_from = RATIO_FLOOR if self._max_bytes is None else min(RATIO_FLOOR, self._max_bytes)

    def check_length(self, content_length: str | None) -> None:
        """Refuse at once an answer that announces more than `max_response_bytes`."""
        if self._max_bytes is not None and content_length and content_length.isdigit() \
                and int(content_length) > self._max_bytes:
            raise self._too_large(f"announces {int(content_length)} bytes", "max_response_bytes", self._max_bytes)

    def check(self, received: int, raw_total: int) -> None:
        """`received`: bytes so far after decompression; `raw_total`: bytes so far as sent."""
        if self._max_bytes is not None and received > self._max_bytes:
            raise self._too_large(f"sent over {self._max_bytes} bytes", "max_response_bytes", self._max_bytes)
        if received > RATIO_FLOOR and received > self._ratio * max(raw_total, 1):
            raise self._too_large(f"sent {raw_total} bytes that decompress to over {received}",
                                  "max_decompression_ratio", self._ratio)

    def too_slow(self) -> UpstreamTimeout:
        name = "max_stream_seconds" if self.stream else "max_response_seconds"
        limit = self.limits.max_stream_seconds if self.stream else self.limits.max_response_seconds
        what = "stream" if self.stream else "answer"
        return UpstreamTimeout(f"upstream '{self.provider}' did not finish its {what} within {limit:g} s "
                               f"(limits.{name})", provider=self.provider)

    def _too_large(self, what: str, name: str, limit: float) -> UpstreamTooLarge:
        return too_large(self.provider, what, name, limit)


def too_large(provider: str, what: str, name: str, limit: float) -> UpstreamTooLarge:
    """`what` the upstream did, past the bound `limits.<name>`."""
    return UpstreamTooLarge(f"upstream '{provider}' {what}; the limit is {limit:g} (limits.{name}); "
                            "the answer was dropped", provider=provider)


def event_too_large(provider: str, size: int, limit: int) -> UpstreamTooLarge:
    return too_large(provider, f"sent an SSE event of over {size} bytes", "max_event_bytes", limit)


async def next_chunk(chunks: AsyncIterator[bytes], meter: BodyMeter, read_timeout: float) -> bytes | None:
    """The next chunk, or None at the end; `UpstreamTimeout` past the meter's deadline.

    A timer is set only when the deadline is nearer than the read timeout (which bounds each read
    already), so the common case costs one clock read per chunk.
    """
    left = meter.deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise meter.too_slow()
    if left >= read_timeout:
        return await anext(chunks, None)
    timeout = asyncio.timeout(left)
    try:
        async with timeout:
            return await anext(chunks, None)
    except TimeoutError:
        if timeout.expired():
            raise meter.too_slow() from None
        raise  # the client's own read timeout (aiohttp's ServerTimeoutError is a TimeoutError too)
