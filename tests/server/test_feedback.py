"""The outcome API: validation, idempotency, batch, and rows in the store."""

from __future__ import annotations

import orjson
import pytest

from tests.server.test_inference import POLICY, running

METRICS = """
metrics:
  task_success:   {type: boolean, level: episode, goal: maximize}
  user_corrected: {type: boolean, level: inference, goal: minimize}
  csat:           {type: float, level: inference, goal: maximize}
"""
CHAT = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}


async def served(client, episode: str = "ep-1") -> str:
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"x-sluicegate-episode": episode})
    assert response.status_code == 200
    return response.headers["x-sluicegate-request-id"]


async def stored_outcomes(client) -> list[tuple]:
    gateway = client._transport.app.state.gateway
    await gateway.recorder.flush()
    return await gateway.store.fetch(
        "SELECT metric, value, level, request_id, episode_id, source FROM outcomes ORDER BY received_at")


async def test_outcomes_by_request_and_by_episode_are_stored(tmp_path):
    async with running(tmp_path, POLICY + METRICS) as (client, _):
        request_id = await served(client)
        one = await client.post("/v1/feedback", json={"request_id": request_id, "metric": "user_corrected",
                                                      "value": True, "source": "app"})
        two = await client.post("/v1/feedback", json={"episode_id": "ep-1", "metric": "task_success",
                                                      "value": False})
        three = await client.post("/v1/feedback", json={"request_id": request_id, "metric": "csat", "value": 4.5})
        assert (one.status_code, two.status_code, three.status_code) == (202, 202, 202)
        assert one.json()["verified"] is True and one.json()["request_id"] == request_id
        rows = await stored_outcomes(client)
    assert rows == [("user_corrected", 1.0, "inference", request_id, None, "app"),
                    ("task_success", 0.0, "episode", None, "ep-1", None),
                    ("csat", 4.5, "inference", request_id, None, None)]


async def test_same_idempotency_key_is_stored_once(tmp_path):
    async with running(tmp_path, POLICY + METRICS) as (client, _):
        await served(client, "ep-2")
        body = {"episode_id": "ep-2", "metric": "task_success", "value": True, "idempotency_key": "ticket-7:done"}
        first = await client.post("/v1/feedback", json=body)
        second = await client.post("/v1/feedback", json=body)
        assert first.json()["id"] == second.json()["id"]
        assert len(await stored_outcomes(client)) == 1


@pytest.mark.parametrize("body,status,param,fragment", [
    ({"episode_id": "ep-1", "metric": "nope", "value": True}, 400, "metric", "unknown metric 'nope'"),
    ({"episode_id": "ep-1", "metric": "task_success", "value": 1}, 400, "value", "true or false"),
    ({"episode_id": "ep-1", "metric": "csat", "value": 3}, 400, "request_id", "per request"),
    ({"request_id": "req_1", "metric": "csat", "value": "good"}, 400, "value", "must be a number"),
    ({"request_id": "req_missing", "metric": "csat", "value": 3}, 404, "request_id", "no request or episode"),
    ({"episode_id": "ep-missing", "metric": "task_success", "value": True}, 404, "episode_id", "ep-missing"),
    ({"metric": "task_success", "value": True}, 400, "episode_id", "per episode"),
    ({"episode_id": "ep-1", "metric": "task_success", "value": True, "extra": 1}, 400, "extra", "unknown field"),
])
async def test_bad_feedback_is_a_clear_4xx(tmp_path, body, status, param, fragment):
    async with running(tmp_path, POLICY + METRICS) as (client, _):
        await served(client)
        response = await client.post("/v1/feedback", json=body)
        assert await stored_outcomes(client) == []
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]


async def test_feedback_for_a_request_already_in_the_store_after_restart(tmp_path):
    async with running(tmp_path, POLICY + METRICS) as (client, _):
        request_id = await served(client)
    async with running(tmp_path, POLICY + METRICS) as (client, _):  # a new process: memory is empty
        response = await client.post("/v1/feedback", json={"request_id": request_id, "metric": "csat", "value": 2})
        assert response.status_code == 202 and response.json()["verified"] is True


@pytest.mark.parametrize("as_lines", [False, True])
async def test_batch_accepts_array_or_json_lines_and_reports_each_error(tmp_path, as_lines):
    async with running(tmp_path, POLICY + METRICS) as (client, _):
        await served(client, "ep-b")
        items = [{"episode_id": "ep-b", "metric": "task_success", "value": True},
                 {"episode_id": "ep-b", "metric": "bogus", "value": True},
                 {"episode_id": "ep-b", "metric": "task_success", "value": False, "idempotency_key": "k"}]
        content = b"\n".join(orjson.dumps(i) for i in items) if as_lines else orjson.dumps(items)
        response = await client.post("/v1/feedback/batch", content=content,
                                     headers={"content-type": "application/x-ndjson" if as_lines else "application/json"})
        assert len(await stored_outcomes(client)) == 2
    body = response.json()
    assert response.status_code == 202
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert body["errors"][0]["index"] == 1 and "bogus" in body["errors"][0]["error"]["message"]
