"""Cancelling a request's work when its client goes away.

Starlette does not cancel a handler when its client disconnects: without this, an abandoned request
keeps its upstream call (and its provider slot, and its caller's slot) until the upstream answers.
A watcher task waits on the ASGI `receive()` for `http.disconnect` and cancels the task serving the
request; the handler catches the `CancelledError`, sees `disconnected`, takes the cancellation back
(`absorb`) and records the attempt as `cancelled`. Cancelling the task cancels whatever it awaits:
the upstream call (aiohttp then closes that connection: the upstream sees it go), a wait in a
provider's line, a retry's wait.

Start it only once the request body has been read whole: until then `receive()` carries the body,
and a watcher would take messages meant for the handler. After the body, `receive()` has nothing
more to give but the disconnect (uvicorn also says `http.disconnect` once the response is complete,
which is why the watcher is stopped before the response goes out, or handed to the response that
streams).
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

__all__ = ["DisconnectWatch"]


class DisconnectWatch:
    __slots__ = ("disconnected", "_receive", "_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None, "a DisconnectWatch needs a running task to cancel"
        self.disconnected = False
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the body was read whole before the watch began: nothing else is expected
        self.disconnected = True
        self._task.cancel()

    def follow(self) -> None:
        """Cancel the current task from now on (a response may run in another task than its handler)."""
        task = asyncio.current_task()
        if task is not None:
            self._task = task

    def absorb(self) -> bool:
        """After a CancelledError: True when it was this watch's, for the client left; the task's
        cancellation is then taken back, so the caller may finish its work (record, log) normally.
        False: someone else cancelled (the server is stopping) and the error must propagate."""
        if not self.disconnected:
            return False
        self._task.uncancel()
        return True

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
