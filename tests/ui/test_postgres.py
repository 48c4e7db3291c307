"""The dashboard's own SQL (record search, series over time, review progress, a record's joins) gives
the same answers on SQLite and on the real PostgreSQL store, seeded with the same rows.

Skipped when PostgreSQL is not reachable (SLUICEGATE_TEST_POSTGRES_URL), failed under CI=true."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from proxy.config import load_policy
from proxy.records import SQLiteStore, open_store
from proxy.ui._records import Search, record_data, search
from proxy.ui._reports import route_data
from proxy.ui._review import review_data
from tests._services import postgres_url  # noqa: F401 (fixture)
from tests.ui._seed import seed, write_policy

SEARCHES = [
    {}, {"route": "faq", "variant": "cand"}, {"guard_class": "forbidden_content"}, {"outcome": "upstream_error"},
    {"metric": "task_success", "feedback": "bad", "route": "support-bot"}, {"request_id": "req_support-bot_00008"},
    {"episode_id": "ep_faq_prod_0007"}, {"correlation_id": "corr-00042"}, {"route": "faq", "offset": 50},
]


def _without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in ("generated_at", "timings")}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


async def _answers(store: Any, policy: Any, now: float) -> dict[str, Any]:
    gateway = SimpleNamespace(store=store, policy=policy)
    goals = {name: m.goal for name, m in policy.metrics.items()}
    return {
        "search": [await search(store, Search(**f), goals) for f in SEARCHES],
        "review": await review_data(gateway, now=now),
        "record": await record_data(gateway, "req_support-bot_00004"),
        "route": _without_clock(await route_data(gateway, "support-bot", now - 24 * 3600, None)),
    }


async def test_the_dashboard_queries_agree_on_sqlite_and_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    policy = load_policy(write_policy(tmp_path))
    now = time.time()
    answers = []
    for store in (SQLiteStore(tmp_path / "s.db"), open_store(postgres_url)):
        await store.open()
        try:
            await seed(store, now=now)
            answers.append(await _answers(store, policy, now))
        finally:
            await store.close()
    sqlite, postgres = answers
    assert all(found["records"] for found in sqlite["search"][:4])
    for i, (a, b) in enumerate(zip(sqlite["search"], postgres["search"])):
        assert a == b, SEARCHES[i]
    assert sqlite["review"] == postgres["review"]
    assert sqlite["record"] == postgres["record"]
    assert sqlite["route"]["series"] == postgres["route"]["series"]
    assert sqlite["route"] == postgres["route"]
