"""Splitting a byte stream into complete SSE events, without copying more than needed."""

from __future__ import annotations

__all__ = ["SSESplitter", "event_data"]


class SSESplitter:
    """Feed raw bytes, get back complete events (terminator included), in order."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            events.append(buffer[start : end + 2])
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def tail(self) -> bytes:
        """Whatever arrived after the last complete event (a stream cut mid-event)."""
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The event's `data:` payload (lines joined by newlines), or None for comments and pings."""
    if event.startswith(b"data:") and event.count(b"\n") == 2:
        return event[5:-2].strip()  # the common case: a single data line
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None
