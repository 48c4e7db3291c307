"""Log lines: deferred flushing (one write per burst inside a loop) and secret scrubbing."""

from __future__ import annotations

import asyncio
import io
import json

from proxy.logs import DeferredFlushStream, configure_logging, flush_logs, get_logger, set_secrets


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def isatty(self) -> bool:
        return False


def test_outside_a_loop_each_flush_writes_at_once() -> None:
    out = CountingStream()
    stream = DeferredFlushStream(out)
    stream.write("a\n")
    stream.flush()
    assert out.getvalue() == "a\n"


async def test_inside_a_loop_a_burst_of_lines_goes_out_in_one_write_after_the_delay() -> None:
    out = CountingStream()
    stream = DeferredFlushStream(out, delay=0.05)
    for i in range(100):
        stream.write(f"line {i}\n")
        stream.flush()
    assert out.getvalue() == ""  # nothing yet: the flush is deferred
    await asyncio.sleep(0.15)
    assert out.writes == 1
    assert out.getvalue().splitlines() == [f"line {i}" for i in range(100)]


def test_a_flush_due_on_a_closed_loop_does_not_strand_lines() -> None:
    out = CountingStream()
    stream = DeferredFlushStream(out, delay=10)

    async def log_one() -> None:
        stream.write("first\n")
        stream.flush()

    asyncio.run(log_one())  # the loop closes before its flush is due
    assert out.getvalue() == ""
    asyncio.run(log_one())  # a new loop: the stale timer is replaced, not trusted
    stream.flush()  # outside any loop: writes everything at once
    assert out.getvalue() == "first\nfirst\n"


async def test_configured_logger_lines_are_json_scrubbed_and_written_by_flush_logs(capsys) -> None:
    configure_logging(json=True, level="info")
    set_secrets(["sk-very-secret-key"])
    try:
        get_logger("sluicegate.test").info("request", error="upstream said sk-very-secret-key is bad")
        flush_logs()
        line = capsys.readouterr().err.strip().splitlines()[-1]
        event = json.loads(line)
        assert event["event"] == "request"
        assert "sk-very-secret-key" not in line and "[SECRET]" in event["error"]
    finally:
        set_secrets([])
