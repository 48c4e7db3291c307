"""The corpus builder's reads. All its SQL lives here: portable SQL with `?` placeholders, the JSON
access spelled by the store's dialect, so it runs on SQLite and PostgreSQL alike.

The store's `fetch` returns whole result sets, so nothing is read in one go: records are read in
pages of a few hundred, by keyset on (started_at, id) over the index `records_route_served (route,
served, started_at)` — each page is an index range, not a rescan (SQLite sorts only rows of equal
`started_at` by id). Scores and outcomes are looked up per page by `IN` lists on their indexes
(`scores_record`; `outcomes_latest_request` / `outcomes_latest_episode` with the metric fixed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from proxy.records._dialect import Dialect
from proxy.reports import _queries as report_queries

__all__ = ["PAGE", "SCAN_FIELDS", "ScanRow", "count_served", "metric_kinds", "latest_outcomes", "rows_by_id", "scan_served", "scores_for"]

PAGE = 500  # rows per page, and ids per IN list (well under every SQLite build's variable limit)

# (id, started_at, request_hash, request_id, facts) of a served, non-shadow record; `facts` is the
# JSON array of SCAN_FIELDS taken from the stored row (the answer is not read: it is most of the row)
ScanRow = tuple[str, float, str | None, str, str]
# `request_hash` is read from the row too: the store fills its column only for rows given as dicts; a
# `Record` (what the recorder hands over) is hashed when sealed, after the columns are taken.
SCAN_FIELDS = ("request", "template_ref", "capture", "episode_id", "params", "guards", "request_hash")
# one parse of `data` per row, several paths (the store's dialect spells it)
LatestOutcome = tuple[float, float, str]  # value, received_at, outcome id (the latest wins, as in the reports)


def _chunks(values: Sequence[Any], size: int = PAGE) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _page_query(dialect: Dialect, route: str, since: float | None, until: float | None, last: tuple[float, str] | None,
                page: int) -> tuple[str, list[Any]]:
    """The keyset query of the page after `last` (None: the first page)."""
    where = ["route = ?", "served = 1", "coalesce(attempt_reason, '') != 'shadow'"]
    args: list[Any] = [route]
    low = since
    if last is not None:
        low = last[0] if low is None else max(low, last[0])
    if low is not None:
        where.append("started_at >= ?")
        args.append(low)
    if until is not None:
        where.append("started_at < ?")
        args.append(until)
    if last is not None:
        where.append("(started_at > ? OR id > ?)")
        args += [last[0], last[1]]
    facts = dialect.json_fields("data", SCAN_FIELDS)
    return (f"SELECT id, started_at, request_hash, request_id, {facts} FROM records WHERE {' AND '.join(where)} "
            f"ORDER BY started_at, id LIMIT ?", [*args, page])


async def scan_served(store: Any, route: str, since: float | None, until: float | None,
                      page: int = PAGE) -> AsyncIterator[list[ScanRow]]:
    """Pages of the route's served attempts (never shadows) with since <= started_at < until,
    oldest first: per record its `SCAN_FIELDS`, enough to classify, stratify and deduplicate it.

    The next page is read on read lane 1 while the caller works on this one (SQLite runs outside
    the GIL), so at most two pages are held at a time."""
    rows = await store.fetch(*_page_query(store.dialect, route, since, until, None, page), lane=1)
    while rows:
        ahead: asyncio.Future[list[ScanRow]] | None = None
        if len(rows) == page:
            last = (rows[-1][1], rows[-1][0])
            ahead = asyncio.ensure_future(store.fetch(*_page_query(store.dialect, route, since, until, last, page),
                                                      lane=1))
        try:
            yield rows
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        rows = await ahead if ahead is not None else []


async def count_served(store: Any, route: str, since: float | None, until: float | None) -> int:
    """About how many records `scan_served` will read (from the index alone: shadows, which are
    never served, are not told apart) — for progress display only."""
    where: list[str] = ["route = ?", "served = 1"]
    args: list[Any] = [route]
    if since is not None:
        where.append("started_at >= ?")
        args.append(since)
    if until is not None:
        where.append("started_at < ?")
        args.append(until)
    rows = await store.fetch(f"SELECT count(*) FROM records WHERE {' AND '.join(where)}", args)
    return int(rows[0][0]) if rows else 0


async def metric_kinds(store: Any) -> dict[str, tuple[set[str], bool]]:
    """metric -> (the levels it was reported at, whether every stored value is 0 or 1)."""
    out: dict[str, tuple[set[str], bool]] = {}
    rows = await store.fetch(report_queries.metric_kinds())
    for metric, level, _n, non_binary in rows:
        levels, boolean = out.get(metric, (set(), True))
        levels.add(level)
        out[metric] = (levels, boolean and not non_binary)
    return out


async def scores_for(store: Any, record_ids: Sequence[str]) -> dict[str, list[tuple[str, str, str, float | None,
                                                                                    str | None]]]:
    """record id -> its scores as (scorer, kind, label, score, taxonomy), by scorer name."""
    out: dict[str, list[tuple[str, str, str, float | None, str | None]]] = {}
    for chunk in _chunks(record_ids):
        rows = await store.fetch(
            f"SELECT record_id, scorer, kind, label, score, taxonomy FROM scores WHERE record_id IN ({_marks(len(chunk))})",
            list(chunk))
        for record_id, scorer, kind, label, score, taxonomy in rows:
            out.setdefault(record_id, []).append((scorer, kind, label, score, taxonomy))
    for scores in out.values():
        scores.sort()
    return out


async def latest_outcomes(store: Any, level: str, metrics: Iterable[str],
                          ids: Sequence[str]) -> dict[str, dict[str, LatestOutcome]]:
    """request id (level `inference`) or episode id (level `episode`) -> metric -> the latest
    outcome (received_at, then id, decide — a correction overrides an earlier report)."""
    key = "request_id" if level == "inference" else "episode_id"
    out: dict[str, dict[str, LatestOutcome]] = {}
    if not ids:
        return out
    for metric in sorted(metrics):
        for chunk in _chunks(ids):
            rows = await store.fetch(
                f"SELECT {key}, value, received_at, id FROM outcomes WHERE level = ? AND metric = ? "
                f"AND {key} IN ({_marks(len(chunk))})", [level, metric, *chunk])
            for subject, value, received_at, oid in rows:
                seen = out.setdefault(subject, {})
                current = seen.get(metric)
                if current is None or (received_at, oid) > (current[1], current[2]):
                    seen[metric] = (value, received_at, oid)
    return out


async def rows_by_id(store: Any, ids: Sequence[str]) -> dict[str, str]:
    """record id -> the stored row (JSON text)."""
    out: dict[str, str] = {}
    for chunk in _chunks(ids):
        rows = await store.fetch(f"SELECT id, data FROM records WHERE id IN ({_marks(len(chunk))})", list(chunk))
        out.update(rows)
    return out
