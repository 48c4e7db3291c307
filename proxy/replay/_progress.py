"""The progress line on stderr: items done / total, rate, ETA — no dependency.

On a terminal it is one line rewritten in place (`\\r`) at most ten times a second; elsewhere (a
CI log) a line is printed at every tenth of the way, so a log is not flooded with thousands of
carriage returns. Items skipped because an earlier run finished them count as done but not in the
rate (the rate and ETA are this run's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar", "format_eta"]


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    def __init__(self, total: int, stream: TextIO, *, already_done: int = 0, tty: bool | None = None,
                 width: int = 24, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self._clock = clock
        self._started = clock()
        self._already = already_done
        self.done = already_done
        self._last_draw = 0.0
        self._last_step = -1

    def line(self) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(round(fraction * self.width))
        elapsed = max(self._clock() - self._started, 1e-9)
        fresh = self.done - self._already
        rate = fresh / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        bar = "#" * filled + "." * (self.width - filled)
        return (f"replay [{bar}] {self.done}/{self.total} ({fraction:.0%}) {rate:.1f} items/s "
                f"ETA {format_eta(eta if self.done < self.total else 0)}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if self.tty:
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self.line())
                self.stream.flush()
            return
        step = int(self.done * 10 / self.total) if self.total else 10
        if step != self._last_step:
            self._last_step = step
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def start(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
