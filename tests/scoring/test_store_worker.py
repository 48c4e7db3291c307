"""`sluicegate worker`'s loop: scores what the store holds after its cursor, in one transaction per
batch — a worker killed mid-batch loses nothing and counts nothing twice."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest

from proxy.config import load_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.providers import build_provider
from proxy.records import Record, SQLiteStore, new_id
from proxy.scoring import JudgeBudget, Scoring, StoreWorker, build_scorers

ROOT = Path(__file__).resolve().parents[2]
MARKER = "(mock: this answer is deliberately wrong)"

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1", api_key: sk-test-not-a-real-key}
models:
  answerer: {provider: mock, model: answerer}
  judge: {provider: mock, model: judge, family: mockjudge}
routes:
  bot: {model: answerer, capture: full, sampling: {default: 1.0}, scorers: [scope, helpful]}
  other: {model: answerer, capture: full}
scorers:
  scope: {kind: rule, regex: 'deliberately wrong', taxonomy: out_of_scope_answer}
  helpful: {kind: llm_judge, model: judge, rubric: rubric.md}
"""


def record(i: int, route: str = "bot") -> Record:
    text = f"answer {i}" + (f" {MARKER}" if i % 3 == 0 else "")
    return Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                  endpoint="chat.completions", route=route, variant="answerer", provider="mock",
                  model_requested="answerer", started_at=time.time(), served=True, capture="full",
                  request={"model": "answerer", "messages": [{"role": "user", "content": f"q {i}"}]},
                  response={"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": "stop"}]})


@pytest.fixture
async def setup(tmp_path: Path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", tmp_path / "rubric.md")
    policy = load_policy(tmp_path / "policy.yaml")
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    judge_latency = {"ms": 0.0}
    mock = create_mock(MockConfig(models={"judge": MockModel(judge_error_rate=0.0)}))
    provider = build_provider("mock", policy.providers["mock"], httpx.ASGITransport(app=mock))

    def make_worker() -> StoreWorker:
        scorers = build_scorers(policy, {"mock": provider}, JudgeBudget(None))
        return StoreWorker(lambda sink: Scoring(policy, scorers, sink), store, batch_size=10)

    yield store, make_worker, mock, judge_latency
    await provider.close()
    await store.close()


async def test_worker_scores_each_sampled_record_once_and_moves_its_cursor(setup) -> None:
    store, make_worker, _, _ = setup
    await store.write_records([record(i) for i in range(25)] + [record(99, route="other")])
    worker = make_worker()
    while await worker.run_once():
        pass
    rows = await store.fetch("SELECT scorer, label, count(*) FROM scores GROUP BY 1, 2 ORDER BY 1, 2")
    assert rows == [("helpful", "fail", 9), ("helpful", "pass", 16), ("scope", "fail", 9), ("scope", "pass", 16)]
    (last,), = await store.fetch("SELECT max(rowid) FROM records")
    assert await worker.cursor() == last
    # the `other` route has no scorers: read, never scored
    assert worker.records_seen == 26


async def test_a_worker_killed_mid_batch_loses_nothing_and_counts_nothing_twice(setup) -> None:
    store, make_worker, mock, _ = setup
    await store.write_records([record(i) for i in range(10)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock), base_url="http://mock.test") as c:
        await c.put("/_mock/models/judge", json={"judge_error_rate": 0.0, "latency_ms": 200})
    doomed = asyncio.create_task(make_worker().run_once())
    await asyncio.sleep(0.5)  # a few judge calls done, the batch not finished
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await store.fetch("SELECT count(*) FROM scores") == [(0,)]  # nothing of the batch was written
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock), base_url="http://mock.test") as c:
        await c.put("/_mock/models/judge", json={"judge_error_rate": 0.0, "latency_ms": 0})
    worker = make_worker()
    assert await worker.run_once() == 10
    assert await store.fetch("SELECT count(*), count(DISTINCT id) FROM scores") == [(20, 20)]
    # delivered again (a cursor reset: at-least-once): replaced, not added
    await store.write_records([{"row": "cursor", "id": "default", "value": 0, "updated_at": time.time()}])
    assert await make_worker().run_once() == 10
    assert await store.fetch("SELECT count(*) FROM scores") == [(20,)]


LATE_POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  answerer: {provider: mock, model: answerer}
routes:
  bot:
    model: answerer
    capture: full
    sampling: {default: 0.0, rules: [{feedback: negative, rate: 1.0}]}
    scorers: [scope]
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
  user_corrected: {type: boolean, level: inference, goal: minimize}
scorers:
  scope: {kind: rule, regex: 'deliberately wrong', taxonomy: out_of_scope_answer}
"""


async def test_negative_feedback_arriving_later_gets_a_request_scored_once(tmp_path: Path) -> None:
    from proxy.config import parse_policy
    from proxy.records import Outcome

    policy = parse_policy(LATE_POLICY)
    store = SQLiteStore(tmp_path / "late.db")
    await store.open()
    try:
        records = [record(i) for i in range(4)]
        await store.write_records(records)

        def make_worker() -> StoreWorker:
            return StoreWorker(lambda sink: Scoring(policy, build_scorers(policy, {}, None), sink), store,
                               metrics=policy.metrics)

        worker = make_worker()
        while await worker.run_once():
            pass
        assert await store.fetch("SELECT count(*) FROM scores") == [(0,)]  # default rate 0: nothing sampled

        def outcome(r: Record, metric: str, value: float) -> Outcome:
            return Outcome(id=new_id("out_"), metric=metric, value=value, level="inference",
                           received_at=time.time(), request_id=r.request_id)

        await store.write_records([
            outcome(records[0], "task_success", 0.0),  # negative: scored
            outcome(records[1], "task_success", 1.0),  # positive: not
            outcome(records[2], "user_corrected", 1.0),  # negative for a `minimize` metric: scored
            outcome(records[0], "user_corrected", 1.0),  # second negative for the same request: still once
        ])
        while await worker.run_once():
            pass
        scored = {rid for (rid,) in await store.fetch("SELECT request_id FROM scores")}
        assert scored == {records[0].request_id, records[2].request_id}
        assert await store.fetch("SELECT count(*) FROM scores") == [(2,)]
        # a restarted worker starts from its cursors: nothing again
        again = make_worker()
        while await again.run_once():
            pass
        assert again.scoring.stats()["sampled_late"] == 0
    finally:
        await store.close()
