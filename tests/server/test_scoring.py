"""Scoring in the server: sampled answers are scored in the background by rule and judge scorers,
scores and review entries reach the store, and no request waits for a judge."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson

from proxy.config import load_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.mock_upstream._judge import BAD_ANSWER_MARKER
from proxy.server import Settings, create_app

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1", api_key: sk-test-not-a-real-key}
models:
  answerer: {provider: mock, model: answerer, family: openai}
  judge: {provider: mock, model: judge, family: mockjudge}
routes:
  bot:
    model: answerer
    capture: full
    sampling: {default: 1.0}
    scorers: [scope, helpful, review]
scorers:
  scope: {kind: rule, regex: 'deliberately wrong', taxonomy: out_of_scope_answer}
  helpful: {kind: llm_judge, model: judge, rubric: rubric.md}
  review: {kind: human, rate: 0.0, also: [judge_disagrees_with_rule]}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, judge: MockModel) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", tmp_path / "rubric.md")
    mock = create_mock(MockConfig(models={"answerer": MockModel(bad_answer_rate=0.3), "judge": judge}))
    app = create_app(Settings(policy=load_policy(tmp_path / "policy.yaml"), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway


async def ask(client: httpx.AsyncClient, i: int) -> httpx.Response:
    body = {"model": "bot", "messages": [{"role": "user", "content": f"question {i}: where is my order?"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response


async def wait_for(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_sampled_answers_are_scored_by_rule_and_judge_and_disagreements_go_to_review(tmp_path: Path) -> None:
    n = 40
    async with gateway(tmp_path, MockModel(judge_error_rate=0.2)) as (client, gw):
        answers = {}
        for i in range(n):
            response = await ask(client, i)
            text = response.json()["choices"][0]["message"]["content"]
            answers[response.headers["x-sluicegate-request-id"]] = text
        await wait_for(lambda: gw.scoring.stats()["scored"] >= 2 * n)
        await gw.recorder.flush()
        rows = await gw.store.fetch("SELECT request_id, scorer, kind, label, data FROM scores")
        reviews = await gw.store.fetch("SELECT request_id, scorer, reason FROM reviews")
        stats = gw.scoring.stats()
    assert stats["sampled"] == n and stats["errors"] == 0 and stats["queue"]["acked"] == n
    assert len(rows) == 2 * n  # one score per (record, scorer), nothing twice
    by = {(r[0], r[1]): r for r in rows}
    disagreements = set()
    for request_id, text in answers.items():
        bad = BAD_ANSWER_MARKER in text
        rule = by[(request_id, "scope")]
        assert rule[2] == "rule" and rule[3] == ("fail" if bad else "pass")
        judge = by[(request_id, "helpful")]
        assert judge[2] == "llm_judge" and judge[3] in ("pass", "fail")
        data = orjson.loads(judge[4])
        assert data["prompt_tokens"] > 0 and data["judge_model"] == "judge"
        if judge[3] != rule[3]:
            disagreements.add(request_id)
    assert {r[0] for r in reviews} == disagreements
    assert all(r[1] == "review" and r[2] == "judge_disagrees_with_rule" for r in reviews)


async def test_no_request_waits_for_a_slow_judge(tmp_path: Path) -> None:
    async with gateway(tmp_path, MockModel(judge_error_rate=0.0, latency_ms=5000)) as (client, gw):
        for i in range(5):
            await ask(client, i)
        # every answer is back while the judge has not answered once: the requests never waited
        assert gw.scoring.stats()["sampled"] == 5
        assert not any(s == "helpful" for (s,) in await gw.store.fetch("SELECT scorer FROM scores"))


async def test_negative_feedback_posted_later_gets_the_request_scored(tmp_path: Path) -> None:
    policy = POLICY.replace("sampling: {default: 1.0}",
                            "sampling: {default: 0.0, rules: [{feedback: negative, rate: 1.0}]}")
    policy += "metrics:\n  task_success: {type: boolean, level: inference, goal: maximize}\n"
    (tmp_path / "policy.yaml").write_text(policy)
    shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", tmp_path / "rubric.md")
    mock = create_mock(MockConfig(models={"answerer": MockModel(), "judge": MockModel(judge_error_rate=0.0)}))
    app = create_app(Settings(policy=load_policy(tmp_path / "policy.yaml"), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            gw = app.state.gateway
            ids = [(await ask(client, i)).headers["x-sluicegate-request-id"] for i in range(3)]
            assert gw.scoring.stats()["sampled"] == 0
            for request_id, value in ((ids[0], False), (ids[1], True)):
                r = await client.post("/v1/feedback", json={"request_id": request_id, "metric": "task_success",
                                                            "value": value})
                assert r.status_code == 202
            await wait_for(lambda: gw.scoring.stats()["scored"] >= 2)
            await gw.recorder.flush()
            rows = await gw.store.fetch("SELECT DISTINCT request_id FROM scores")
    assert rows == [(ids[0],)]
