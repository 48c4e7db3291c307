"""Splitting a byte stream into complete SSE events, in linear time and bounded memory.

Each byte is scanned for the event terminator once (plus one byte of overlap at a chunk boundary):
the search resumes where the previous one stopped, so a stream that never sends "\\n\\n" costs
O(bytes), not O(bytes²) as re-searching a growing buffer from its start would. An event (or the
unfinished one being collected) larger than `max_event_bytes` ends the stream with `EventTooLarge`
instead of growing the buffer without bound.
"""

from __future__ import annotations

__all__ = ["EventTooLarge", "SSESplitter", "event_data"]


class EventTooLarge(ValueError):
    """An SSE event longer than the splitter's `max_event_bytes`."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"an SSE event of over {size} bytes (the limit is {limit})")
        self.size = size
        self.limit = limit


class SSESplitter:
    """Feed raw bytes, get back complete events (terminator included), in order.

    Line endings are normalised to "\\n" (a "\\r\\n" split across two chunks included).
    """

    __slots__ = ("_buffer", "_scan_from", "_cr", "max_event_bytes")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._buffer = bytearray()  # the unfinished event
        self._scan_from = 0  # bytes of `_buffer` already known to hold no terminator
        self._cr = False  # the previous chunk ended in "\r"
        self.max_event_bytes = max_event_bytes

    def feed(self, data: bytes) -> list[bytes]:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):  # may be the first half of a "\r\n": wait for the next chunk
                data = data[:-1]
                self._cr = True
            data = data.replace(b"\r\n", b"\n")
        buffer = self._buffer
        limit = self.max_event_bytes
        events: list[bytes] = []
        if not buffer:  # the common case: the chunk starts an event; slice it without copying it first
            start = 0
            end = data.find(b"\n\n")
            while end >= 0:
                end += 2
                if limit is not None and end - start > limit:
                    raise EventTooLarge(end - start, limit)
                events.append(data[start:end])
                start = end
                end = data.find(b"\n\n", start)
            if start < len(data):
                buffer += memoryview(data)[start:]
                self._scan_from = len(buffer) - 1  # its last byte may be the first "\n" of a terminator
                self._check_tail()
            return events
        buffer += data
        start = 0
        end = buffer.find(b"\n\n", self._scan_from)
        while end >= 0:
            end += 2
            if limit is not None and end - start > limit:
                raise EventTooLarge(end - start, limit)
            events.append(bytes(buffer[start:end]))
            start = end
            end = buffer.find(b"\n\n", start)
        if start:
            del buffer[:start]  # bytearray drops a prefix in O(1) (it moves its start)
        self._scan_from = max(len(buffer) - 1, 0)
        self._check_tail()
        return events

    def _check_tail(self) -> None:
        limit = self.max_event_bytes
        if limit is not None and len(self._buffer) > limit:
            raise EventTooLarge(len(self._buffer), limit)

    def tail(self) -> bytes:
        """Whatever arrived after the last complete event (a stream cut mid-event)."""
        return bytes(self._buffer) + (b"\r" if self._cr else b"")


def event_data(event: bytes) -> bytes | None:
    """The event's `data:` payload (lines joined by newlines), or None for comments and pings."""
    if event.startswith(b"data:") and event.count(b"\n") == 2:
        return event[5:-2].strip()  # the common case: a single data line
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None
