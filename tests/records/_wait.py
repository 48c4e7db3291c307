"""Waiting in tests for something the recorder does in the background."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_until"]


async def wait_until(cond: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Returns once `cond()` (sync or async) is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
