"""The gateway and workers on a REAL Redis stream: `--scoring external --queue redis://…` offers the
sampled jobs and a worker scores exactly those; `--scoring inprocess --queue redis://…` consumes its
own; negative feedback travels the stream too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel
from proxy.mock_upstream import create_app as create_mock
from proxy.records import SQLiteStore
from proxy.scoring import QueueWorker, Scoring, build_scorers, open_queue
from proxy.server import Settings, create_app

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1", api_key: sk-test-not-a-real-key}
models:
  answerer: {provider: mock, model: answerer}
routes:
  bot: {model: answerer, capture: full, sampling: {default: 0.5}, scorers: [scope]}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
scorers:
  scope: {kind: rule, regex: 'deliberately wrong', taxonomy: out_of_scope_answer}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, policy: Any, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    mock = create_mock(MockConfig(models={"answerer": MockModel(bad_answer_rate=0.3)}))
    app = create_app(Settings(policy=policy, store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, **settings))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client, app.state.gateway


async def ask(client: httpx.AsyncClient, i: int) -> str:
    body = {"model": "bot", "messages": [{"role": "user", "content": f"question {i}: where is my order?"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-sluicegate-request-id"]


@contextlib.asynccontextmanager
async def worker(tmp_path: Path, policy: Any, url: str, stream: str) -> AsyncIterator[QueueWorker]:
    """`sluicegate worker --queue redis://…` in this process: its own store connection and consumer."""
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    queue = open_queue(url, policy, stream=stream, consumer="worker-1")
    assert queue is not None
    await queue.start()
    try:
        yield QueueWorker(lambda sink, flush: Scoring(policy, build_scorers(policy, {}, None), sink, queue=queue,
                                                      store=store, flush=flush), store)
    finally:
        await queue.close(timeout=1.0)
        await store.close()


async def drain(w: QueueWorker, jobs: int) -> None:
    async with asyncio.timeout(10):
        acked = 0
        while acked < jobs:
            acked += await w.run_once(wait_s=0.2)


async def test_the_gateway_offers_to_redis_and_a_worker_scores_exactly_the_sampled_records(
        tmp_path: Path, redis_url: str, redis_stream: str) -> None:
    policy = parse_policy(POLICY)
    async with gateway(tmp_path, policy, scoring="external", queue_url=redis_url,
                       queue_options={"stream": redis_stream}) as (client, gw):
        for i in range(30):
            await ask(client, i)
        sampled = gw.scoring.stats()["sampled"]
        assert 0 < sampled < 30
        assert await gw.scoring.queue.flush(2.0)
        queue = (await client.get("/readyz")).json()["scoring"]["queue"]
        assert (queue["backend"], queue["stream"], queue["consumer"]) == ("redis", redis_stream, None)
        assert queue["offered"] == sampled and queue["dropped"] == 0
        async with worker(tmp_path, policy, redis_url, redis_stream) as w:
            await drain(w, sampled)
            assert w.scoring.stats()["scored"] == sampled
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        rows = [orjson.loads(data) for (data,) in await store.fetch("SELECT data FROM records WHERE served = 1")]
        judge = Scoring(policy, build_scorers(policy, {}, None), lambda row: None)
        expected = {row["id"] for row in rows if judge.decide(SimpleNamespace(**row)).sampled}
        scored = [r for (r,) in await store.fetch("SELECT record_id FROM scores")]
    finally:
        await store.close()
    assert len(rows) == 30 and len(expected) == sampled
    assert sorted(scored) == sorted(expected)  # exactly the sampled records, each once


async def test_inprocess_scoring_consumes_its_own_redis_stream(tmp_path: Path, redis_url: str,
                                                              redis_stream: str) -> None:
    policy = parse_policy(POLICY.replace("default: 0.5", "default: 1.0"))
    async with gateway(tmp_path, policy, queue_url=redis_url, queue_options={"stream": redis_stream}) as (client, gw):
        for i in range(10):
            await ask(client, i)
        async with asyncio.timeout(10):
            while gw.scoring.stats()["queue"]["acked"] < 10:
                await asyncio.sleep(0.02)
        stats = gw.scoring.stats()
        snap = await gw.scoring.queue.refresh_stats()
        rows = await gw.store.fetch("SELECT count(DISTINCT record_id) FROM scores")  # written before the XACK
    assert stats["scored"] == 10 and stats["errors"] == 0 and stats["queue"]["consumer"]
    assert snap["pending"] == 0 and snap["lag"] == 0
    assert rows == [(10,)]


async def test_negative_feedback_travels_the_stream_and_the_worker_scores_that_request(
        tmp_path: Path, redis_url: str, redis_stream: str) -> None:
    policy = parse_policy(POLICY.replace("sampling: {default: 0.5}",
                                         "sampling: {default: 0.0, rules: [{feedback: negative, rate: 1.0}]}"))
    async with gateway(tmp_path, policy, scoring="external", queue_url=redis_url,
                       queue_options={"stream": redis_stream}) as (client, gw):
        ids = [await ask(client, i) for i in range(3)]
        for request_id, value in ((ids[0], False), (ids[1], True)):
            r = await client.post("/v1/feedback", json={"request_id": request_id, "metric": "task_success",
                                                        "value": value})
            assert r.status_code == 202
        assert await gw.scoring.queue.flush(2.0)
        async with worker(tmp_path, policy, redis_url, redis_stream) as w:
            await drain(w, 1)
            rows = await w.scoring._store.fetch("SELECT DISTINCT request_id FROM scores")
    assert rows == [(ids[0],)]
