"""`none://`: recording off. Records are counted and discarded; queries find nothing.

For a gateway that only routes (and for the benchmark's "minimal" system). Outcomes and reports
need a real store: with this one, feedback can only name requests this process served recently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.records._dialect import SQLITE

__all__ = ["NullStore"]


class NullStore:
    url = "none://"
    dialect = SQLITE

    def __init__(self) -> None:
        self.discarded = 0

    async def open(self) -> None:
        return None

    async def write_records(self, rows: Sequence[Mapping[str, Any] | Any]) -> int:
        self.discarded += len(rows)
        return len(rows)

    async def ping(self) -> None:
        return None

    async def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        return True  # one process, nothing shared

    async def query_records(self, *, since: float | None = None, until: float | None = None,
                            route: str | None = None, request_id: str | None = None,
                            limit: int | None = None) -> list[dict[str, Any]]:
        return []

    async def count_records(self) -> int:
        return 0

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, lane: int = 0) -> list[tuple[Any, ...]]:
        return []

    async def tail(self, table: str, columns: str, where: str, after: int,
                   limit: int) -> tuple[list[tuple[Any, ...]], int]:
        return [], after

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return 0

    async def close(self) -> None:
        return None
