"""Guards through a real server: one variant returns bad tool calls; flag, retry and block act on it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import attempts, serve_policy

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  good: {kind: openai, base_url: '{mock}'}
  bad:  {kind: openai, base_url: '{mock}', headers: {x-mock-tool-call-fault: invented_param}}
models:
  prod:      {provider: good, model: gpt-mock-prod}
  candidate: {provider: bad, model: gpt-mock-candidate}
routes:
  flagged:
    model: candidate
    guards: [tool_params, json_schema]
  retried:
    split: {candidate: 100, prod: 0}
    guards: [tool_params]
    on_guard_failure: {tool_params: retry_other_variant}
  blocked:
    model: candidate
    guards: [tool_params]
    on_guard_failure: {major: block}
  buffered:
    model: candidate
    guards: [tool_params]
    stream_guard: buffer
    on_guard_failure: {tool_params: block}
  streamed:
    model: candidate
    guards: [tool_params]
"""

TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "strict": True,
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                   "required": ["order_id"], "additionalProperties": False}}}]
BODY = {"messages": [{"role": "user", "content": "where is order 42?"}], "tools": TOOLS}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_upstream):
    yield from serve_policy(tmp_path_factory.mktemp("guards"), POLICY, mock_upstream)


def test_flag_returns_the_answer_sets_the_header_and_records_the_failure(gateway):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "flagged", **BODY}, timeout=10)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["tool_calls"]
    assert response.headers["x-sluicegate-guards"] == "tool_params:invented_tool_param"
    record, = attempts(gateway, response.headers["x-sluicegate-request-id"], 1)
    failure, = record["guards"]
    assert failure["guard"] == "tool_params" and failure["taxonomy"] == "invented_tool_param"
    assert failure["severity"] == "major" and "mock_invented_param" in failure["detail"]


def test_retry_other_variant_returns_the_valid_answer_and_records_both(gateway):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "retried", **BODY}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-sluicegate-variant"] == "prod"
    assert response.headers["x-sluicegate-guards"] == "pass"
    first, second = attempts(gateway, response.headers["x-sluicegate-request-id"], 2)
    assert (first["variant"], first["outcome"], first["served"]) == ("candidate", "guard_failed", False)
    assert first["guards"][0]["taxonomy"] == "invented_tool_param"
    assert (second["variant"], second["attempt_reason"], second["served"], second["guards"]) == \
        ("prod", "retry", True, [])


def test_block_returns_422_naming_the_guard_and_records_the_answer(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="blocked", **BODY)
    error = caught.value.body
    assert error["code"] == "guard_failed"
    assert "tool_params" in error["message"] and "invented_tool_param" in error["message"]
    request_id = caught.value.response.headers["x-sluicegate-request-id"]
    record, = attempts(gateway, request_id, 1)
    assert record["outcome"] == "guard_blocked" and record["status"] == 422
    assert record["response"]["choices"][0]["message"]["tool_calls"]  # the answer itself is recorded


def test_buffered_stream_is_judged_before_it_is_sent(gateway):
    response = httpx.post(f"{gateway.url}/v1/chat/completions",
                          json={"model": "buffered", "stream": True, **BODY}, timeout=10)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "guard_failed"


def test_flagged_stream_is_sent_then_judged_into_the_record(gateway):
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions",
                      json={"model": "streamed", "stream": True, **BODY}, timeout=10) as response:
        assert response.headers["x-sluicegate-guards"] == "deferred"
        body = response.read()
    assert b"[DONE]" in body
    record, = attempts(gateway, response.headers["x-sluicegate-request-id"], 1)
    assert [g["taxonomy"] for g in record["guards"]] == ["invented_tool_param"]
