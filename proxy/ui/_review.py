"""The review queue inside the dashboard: the existing queue, plus progress per reviewer.

Nothing of the queue is re-implemented. The first item comes from `next_item` (what `GET /review`
and `GET /v1/review/next` use), labels go to `POST /v1/review/{id}`, and the keyboard handling is
the review page's own script (`_review_page._JS`), served as a static file so the dashboard's CSP
needs no inline script. This module adds the figures around it: entries queued, labelled and
pending per scorer, and labels per reviewer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.server._review_api import _PENDING, next_item  # noqa: PLC2701 - the queue's own definition
from proxy.server._review_page import _JS, SHORTCUTS  # noqa: PLC2701 - the review page's own script

__all__ = ["REVIEW_JS", "SHORTCUTS", "review_data"]

REVIEW_JS = _JS
DAY_S = 86400.0


async def _per_scorer(store: Any) -> list[dict[str, Any]]:
    rows = await store.fetch(f"SELECT r.scorer, count(*), sum(CASE WHEN {_PENDING} THEN 1 ELSE 0 END) "
                             "FROM reviews r GROUP BY r.scorer ORDER BY r.scorer")
    out = []
    for scorer, queued, pending in rows:
        pending = int(pending or 0)
        out.append({"scorer": scorer, "queued": queued, "labelled": queued - pending, "pending": pending,
                    "done": (queued - pending) / queued if queued else None})
    return out


async def _per_reviewer(store: Any, now: float) -> list[dict[str, Any]]:
    """Labels per reviewer (every human score; a relabel replaces the score, so counts once)."""
    d = store.dialect
    rows = await store.fetch(
        f"SELECT {d.json_fields('data', ('reviewer', 'label'))}, count(*), max(created_at), "
        "sum(CASE WHEN created_at >= ? THEN 1 ELSE 0 END) FROM scores WHERE kind = 'human' GROUP BY 1",
        [now - DAY_S])
    people: dict[str, dict[str, Any]] = {}
    for fields, n, last, today in rows:
        reviewer, label = orjson.loads(fields) if fields else (None, None)
        p = people.setdefault(reviewer or "(unnamed)", {"reviewer": reviewer or "(unnamed)", "labelled": 0,
                                                        "last_24h": 0, "last_at": None, "labels": {}})
        p["labelled"] += n
        p["last_24h"] += int(today or 0)
        p["last_at"] = max(p["last_at"] or 0.0, last)
        p["labels"][label] = p["labels"].get(label, 0) + n
    total = sum(p["labelled"] for p in people.values())
    for p in people.values():
        p["share"] = p["labelled"] / total if total else None
    return sorted(people.values(), key=lambda p: (-p["labelled"], p["reviewer"]))


async def review_data(gateway: Any, *, scorer: str | None = None, route: str | None = None,
                      now: float | None = None) -> dict[str, Any]:
    """The first pending item (as the review page has it) and the queue's progress."""
    item, pending = await next_item(gateway, scorer=scorer, route=route)
    scorers = await _per_scorer(gateway.store)
    queued = sum(s["queued"] for s in scorers)
    labelled = sum(s["labelled"] for s in scorers)
    return {
        "filters": {"scorer": scorer, "route": route},
        "pending": pending,
        "item": item,
        "progress": {"queued": queued, "labelled": labelled, "pending": queued - labelled,
                     "done": labelled / queued if queued else None},
        "scorers": scorers,
        "reviewers": await _per_reviewer(gateway.store, time.time() if now is None else now),
    }
