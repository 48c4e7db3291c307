"""`--cache`: the baseline model's answers kept in the store's output cache (`response_cache`), so a
rerun of the same corpus compares the candidate with the same baseline text, and the production
gateway's cached answers serve as baseline where they exist. Writes go straight to the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from proxy.records import open_store
from proxy.server._cache import ResponseCache

__all__ = ["baseline_cache"]


class _DirectWriter:
    """What ResponseCache needs of a recorder (`submit`), writing each row at once."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._pending: set[asyncio.Task[int]] = set()

    def submit(self, row: Any) -> None:
        task = asyncio.create_task(self._store.write_records([row]))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        await asyncio.gather(*self._pending)


@contextlib.asynccontextmanager
async def baseline_cache(store_url: str) -> AsyncIterator[ResponseCache]:
    store = open_store(store_url)
    await store.open()
    writer = _DirectWriter(store)
    try:
        # no request waits here: a slow store may take its time rather than turn a hit into a paid call
        yield ResponseCache(store, writer, lookup_timeout_s=10.0)
        await writer.drain()
    finally:
        await store.close()
