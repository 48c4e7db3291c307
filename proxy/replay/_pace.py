"""Pacing upstream calls: the run's `--rate` (requests per second) and upstream rate limits.

A replay is a batch job that must not look like an attack on the provider, nor burn through a
shared rate limit that production traffic also uses. Two rules:

- **Rate**: calls start at least `1 / rate` seconds apart, across every worker (slots are handed
  out in order, so `--concurrency` never multiplies the rate).
- **Back-off**: when a provider answers 429 with `retry-after` / `retry-after-ms`, *every* call to
  that provider waits until then — not only the one that was refused (the limit is the provider's,
  shared by all workers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Pacer"]


class Pacer:
    """`await pacer.acquire(provider)` before each upstream call; `pause(provider, seconds)` on a 429."""

    def __init__(self, rate: float | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 requests per second")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0  # the earliest start of the next slot
        self._paused: dict[str, float] = {}  # provider -> no call before this clock time
        self.waited_s = 0.0  # time spent waiting for upstream rate limits (for the summary)

    def pause(self, provider: str, seconds: float) -> None:
        """No call to `provider` for `seconds` from now (a later pause never shortens an earlier one)."""
        until = self._clock() + max(0.0, seconds)
        if until > self._paused.get(provider, 0.0):
            self._paused[provider] = until

    async def acquire(self, provider: str) -> None:
        while True:
            now = self._clock()
            paused = self._paused.get(provider, 0.0)
            slot = max(now, self._next, paused)
            self._next = slot + self.interval
            if slot > now:
                await self._sleep(slot - now)
                if paused > now:
                    self.waited_s += min(slot, paused) - now
            if self._clock() >= self._paused.get(provider, 0.0):  # not paused again while waiting
                return
