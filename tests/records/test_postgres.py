"""The PostgreSQL store against the real server: the same interface as SQLite, and the same answers
to the same SQL — every report section is computed on both from the same rows and compared."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.records import Outcome, Record, new_id, open_store
from tests._services import POSTGRES_URL, postgres_url  # noqa: F401 (fixture)

PG_URL = POSTGRES_URL


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
async def both(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    stores = (open_store(f"sqlite:///{tmp_path}/s.db"), open_store(pg_url))
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


T0 = 1_700_000_000.0
WORDS = ("order", "refund", "invoice", "delivery", "password", "plan", "address", "parcel", "points", "label",
         "card", "account", "coupon", "warranty")


def _question(i: int) -> str:
    """Different words, not only different digits (a corpus drops near-duplicates that differ in digits)."""
    return f"help with my {WORDS[i % len(WORDS)]} and {WORDS[(i // len(WORDS)) % len(WORDS)]}"


def traffic(seed: int = 3, n: int = 400) -> list[Any]:
    """Requests on two variants with fallbacks, retries, shadows, guard failures, episodes, outcomes
    (some corrected later) and scores: every kind of row the reports read."""
    from proxy.scoring import Score
    from proxy.scoring._worker import score_row

    rng = random.Random(seed)
    rows: list[Any] = []
    for i in range(n):
        variant = "prod" if rng.random() < 0.5 else "cand"
        rid, episode = new_id("req_"), f"ep-{i // 3}"
        t = T0 + i * 37.0
        failed = rng.random() < (0.05 if variant == "prod" else 0.15)
        guards = [{"guard": "tool_params", "passed": False, "taxonomy": "invented_tool_param",
                   "severity": "critical" if rng.random() < 0.2 else "major"}] if failed else []
        first = Record(id=new_id("att_"), request_id=rid, attempt=1, attempt_reason="primary",
                       endpoint="chat.completions", route="bot", variant=variant, provider="mock",
                       model_requested=f"gpt-{variant}", started_at=t, served=True, status=200,
                       episode_id=episode, latency_ms=rng.uniform(50, 900), ttft_ms=rng.uniform(10, 100),
                       usage={"prompt_tokens": rng.randint(10, 90), "completion_tokens": rng.randint(5, 50)},
                       cost_usd=rng.uniform(0, 0.01), model_served=f"gpt-{variant}-2024", guards=guards,
                       system_fingerprint="fp_a" if i < n // 2 else "fp_b",
                       request={"model": "bot", "messages": [{"role": "user", "content": _question(i)}]})
        rows.append(first)
        if rng.random() < 0.05:  # the first attempt failed over
            first.served, first.status, first.outcome = False, 503, "upstream_error"
            rows.append(Record(id=new_id("att_"), request_id=rid, attempt=2, attempt_reason="fallback",
                               endpoint="chat.completions", route="bot", variant="prod", provider="mock",
                               model_requested="gpt-prod", started_at=t + 1, served=True, status=200,
                               latency_ms=rng.uniform(50, 900), episode_id=episode))
        if rng.random() < 0.3:  # a shadow copy
            rows.append(Record(id=new_id("att_"), request_id=rid, attempt=0, attempt_reason="shadow",
                               endpoint="chat.completions", route="bot", variant="next", provider="mock",
                               model_requested="gpt-next", started_at=t + 2, served=False, status=200,
                               guards=guards if rng.random() < 0.5 else []))
        value = 1.0 if rng.random() < (0.6 if variant == "prod" else 0.7) else 0.0
        rows.append(Outcome(id=new_id("out_"), metric="resolved", value=value, level="inference",
                            received_at=t + 60, request_id=rid))
        if rng.random() < 0.1:  # corrected later: the latest counts
            rows.append(Outcome(id=new_id("out_"), metric="resolved", value=1.0 - value, level="inference",
                                received_at=t + 120, request_id=rid))
        if i % 3 == 2:
            rows.append(Outcome(id=new_id("out_"), metric="task_success", value=float(rng.random() < 0.5),
                                level="episode", received_at=t + 90, episode_id=episode))
        if rng.random() < 0.4:
            rows.append(score_row(Score(record_id=first.id, request_id=rid, scorer="helpful", kind="llm_judge",
                                        label="pass" if rng.random() < 0.8 else "fail", cost_usd=0.0002,
                                        prompt_tokens=120, completion_tokens=8)))
    return rows


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 (the two engines sum in different orders)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


async def test_the_report_is_the_same_on_both_backends(both) -> None:
    from proxy.reports import build_report, score_section, shadow_section

    rows = traffic()
    for store in both:
        assert await store.write_records(rows) == len(rows)
    reports = []
    for store in both:
        report = await build_report(store, metrics={"resolved": {"type": "boolean", "level": "inference"},
                                                    "task_success": {"type": "boolean", "level": "episode"}})
        report.pop("generated_at"), report.pop("timings")
        reports.append({"report": report, "scores": await score_section(store),
                        "shadows": await shadow_section(store)})
    _close(reports[0], reports[1])
    arms = {a["variant"]: a for a in reports[1]["report"]["routes"][0]["arms"]}
    assert arms["cand"]["guards"]["requests_failed"] > 0 and arms["prod"]["fallbacks"] >= 0
    assert reports[1]["shadows"][0]["shadowed"] > 0


async def test_writes_are_idempotent_and_rows_come_back(both) -> None:
    rows = traffic(n=20)
    for store in both:
        await store.write_records(rows)
        assert await store.write_records([r for r in rows if isinstance(r, Record)]) == 0  # same ids: skipped
    a, b = [await store.query_records(route="bot") for store in both]
    assert [r["id"] for r in a] == [r["id"] for r in b] and a[0]["request"] == b[0]["request"]
    assert await both[0].count_records() == await both[1].count_records()


async def test_a_replaced_row_kind_keeps_the_latest(both) -> None:
    from proxy.canary._state import decision_rows, read_stages

    for store in both:
        await store.write_records(decision_rows("bot", action="promote", from_stage=1, to_stage=5, status="running",
                                                rule="non_inferior", reason="ok", figures={"n": 3}))
        await store.write_records(decision_rows("bot", action="rollback", from_stage=5, to_stage=0,
                                                status="rolled_back", rule="manual", reason="no"))
    assert [await read_stages(s) for s in both] == [{"bot": (0.0, "rolled_back")}] * 2


async def test_tail_reads_in_commit_order_and_never_skips_a_late_commit(pg_url: str) -> None:
    import asyncpg

    store = open_store(pg_url)
    await store.open()
    try:
        first = traffic(n=5)
        await store.write_records([r for r in first if isinstance(r, Record)])
        rows, cursor = await store.tail("records", "id", "served = 1", 0, 100)
        assert len(rows) == 5
        # a slow writer: its transaction began before the next one, but commits after it
        schema = pg_url.rsplit("=", 1)[1]
        slow = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
        tx = slow.transaction()
        await tx.start()
        await slow.execute("INSERT INTO records (id, served, started_at, data) VALUES ('late', 1, 0, '{}')")
        await store.write_records([r for r in traffic(seed=9, n=3) if isinstance(r, Record)])
        rows, after = await store.tail("records", "id", "served = 1", cursor, 100)
        assert rows == [] and after == cursor  # held back behind the open transaction
        await tx.commit()
        await slow.close()
        rows, _ = await store.tail("records", "id", "served = 1", cursor, 100)
        assert [r[0] for r in rows][0] == "late" and len(rows) == 4
    finally:
        await store.close()


async def test_one_lease_holder_until_its_connection_goes(pg_url: str) -> None:
    a, b = open_store(pg_url), open_store(pg_url)
    await a.open()
    await b.open()
    try:
        assert await a.try_lease("canary-controller", "a", ttl_s=1)
        assert not await b.try_lease("canary-controller", "b", ttl_s=1)
        assert await a.try_lease("canary-controller", "a", ttl_s=1)  # renewing is free
        await a.close()  # the process died: PostgreSQL frees the lock with the session
        assert await b.try_lease("canary-controller", "b", ttl_s=1)
    finally:
        await b.close()


async def test_the_url_never_shows_the_password() -> None:
    store = open_store("postgresql://sg:s3cret@127.0.0.1:5432/sluice?schema=prod")
    assert "s3cret" not in store.url and store.url == "postgresql://sg@127.0.0.1:5432/sluice?schema=prod"
    with pytest.raises(ValueError, match="unknown PostgreSQL URL parameter"):
        open_store("postgresql://127.0.0.1/x?sslmode=require&bogus=1")


async def test_the_output_cache_works_on_postgres(pg_url: str) -> None:
    from proxy.server._cache import ResponseCache

    store = open_store(pg_url)
    await store.open()

    class Direct:
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def submit(self, row: Any) -> None:
            self.rows.append(row)

    try:
        writer = Direct()
        cache = ResponseCache(store, writer, lookup_timeout_s=5.0)
        cache.put("k1", route="bot", variant="prod", model="m", answer={"id": "x"}, ttl_s=60)
        await store.write_records(writer.rows)
        fresh = ResponseCache(store, writer, lookup_timeout_s=5.0)
        assert await fresh.get("k1") == {"id": "x"} and await fresh.get("k2") is None
    finally:
        await store.close()


async def test_a_corpus_built_from_either_backend_is_the_same(both, tmp_path: Path) -> None:
    from proxy.corpus import BuildOptions, build_corpus, read_corpus

    rows = traffic(seed=5, n=300)
    for store in both:
        await store.write_records(rows)
    corpora = []
    for n, store in enumerate(both):
        header = await build_corpus(store, BuildOptions(route="bot", size=60, per_class_quota=10),
                                    tmp_path / f"c{n}.jsonl")
        corpora.append((header.counts, read_corpus(tmp_path / f"c{n}.jsonl")[1]))
    (counts_a, items_a), (counts_b, items_b) = corpora
    assert counts_a == counts_b and counts_a.selected == 60
    assert [i.record_id for i in items_a] == [i.record_id for i in items_b]
    _close([i.to_dict() for i in items_a], [i.to_dict() for i in items_b])


async def test_judge_calibration_pairs_and_spend_are_the_same(both) -> None:
    from proxy.scoring import Score
    from proxy.scoring._trust import judge_pairs, judge_spent_today
    from proxy.scoring._worker import review_row, score_row

    rng = random.Random(1)
    rows: list[Any] = []
    for i in range(50):
        record = Record(id=f"att_{i}", request_id=f"req_{i}", attempt=1, attempt_reason="primary",
                        endpoint="chat.completions", route="bot", variant="prod", provider="mock",
                        model_requested="m", started_at=T0 + i, served=True)
        judged = "pass" if rng.random() < 0.7 else "fail"
        rows += [record, score_row(Score(record_id=record.id, request_id=record.request_id, scorer="helpful",
                                         kind="llm_judge", label=judged, cost_usd=0.001))]
        if i % 2 == 0:
            entry = review_row("review", record, "rate" if i % 4 == 0 else "judge_low_confidence")
            rows += [entry, score_row(Score(record_id=record.id, request_id=record.request_id, scorer="review",
                                            kind="human", label=judged if rng.random() < 0.9 else "fail"))]
    for store in both:
        await store.write_records(rows)
    pairs = [sorted(await judge_pairs(s, "helpful")) for s in both]
    assert pairs[0] == pairs[1] and len(pairs[0]) == 13
    spent = [await judge_spent_today(s, now=T0 + 100) for s in both]
    assert spent[0] == pytest.approx(spent[1]) == pytest.approx(0.05)
