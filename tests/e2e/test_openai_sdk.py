"""An app that only changes its base_url keeps working: the official openai SDK against a real server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.e2e.conftest import CALLER_KEY, attempts, free_port, records, serve_policy
from tests.e2e.policy import e2e_policy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_upstream):
    yield from serve_policy(tmp_path_factory.mktemp("sdk"), e2e_policy(free_port()), mock_upstream)


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CALLER_KEY, max_retries=0, timeout=20)


def test_non_streaming_chat_parses_and_carries_sluicegate_headers(client, gateway):
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", messages=[{"role": "user", "content": "Where is my order?"}],
        extra_headers={"x-sluicegate-episode": "ep-1", "x-sluicegate-template": "support/answer@v3",
                       "x-sluicegate-retrieval-ids": "doc1, doc2", "x-sluicegate-tags": "vip",
                       "x-sluicegate-correlation-id": "corr-1"})
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert "Where is my order?" in completion.choices[0].message.content
    request_id = raw.headers["x-sluicegate-request-id"]
    assert raw.headers["x-sluicegate-route"] == "support-bot"
    assert raw.headers["x-sluicegate-variant"] in ("prod", "candidate")
    assert raw.headers["x-sluicegate-guards"] == "pass"
    rows = attempts(gateway, request_id, 1)
    assert len(rows) == 1
    record = rows[0]
    assert record["served"] and record["attempt"] == 1 and record["attempt_reason"] == "primary"
    assert record["episode_id"] == "ep-1" and record["correlation_id"] == "corr-1"
    assert record["template_ref"] == "support/answer@v3" and record["retrieval_ids"] == ["doc1", "doc2"]
    assert record["tags"] == ["vip"]
    assert record["variant"] == raw.headers["x-sluicegate-variant"]
    assert record["model_requested"] in ("gpt-mock-prod", "gpt-mock-candidate")
    assert record["model_served"] == completion.model
    assert record["system_fingerprint"] == completion.system_fingerprint
    assert record["usage"]["total_tokens"] == completion.usage.total_tokens
    assert record["finish_reason"] == "stop" and record["upstream_status"] == 200
    assert record["latency_ms"] > 0 and record["request_hash"]
    if record["variant"] == "prod":
        assert record["params"]["temperature"] == 0  # the pinned param was applied


def test_streaming_chunks_arrive_before_the_upstream_finishes(client):
    started = time.perf_counter()
    arrivals = []
    stream = client.chat.completions.create(model="slow-stream", stream=True,
                                            messages=[{"role": "user", "content": "count slowly please"}])
    for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        arrivals.append(time.perf_counter() - started)
    # the mock waits 250 ms between 5 content chunks: if the proxy buffered, all would arrive together
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 0.75
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(gap >= 0.15 for gap in gaps) >= 3


def test_stream_usage_is_recorded_but_the_extra_chunk_is_not_relayed(client, gateway):
    raw = client.chat.completions.with_raw_response.create(
        model="support-bot", stream=True, messages=[{"role": "user", "content": "hello stream"}])
    request_id = raw.headers["x-sluicegate-request-id"]
    chunks = list(raw.parse())
    assert all(chunk.choices for chunk in chunks), "the usage-only chunk we asked for must not reach the client"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    rows = attempts(gateway, request_id, 1)
    record = rows[0]
    assert record["stream"] and record["outcome"] == "ok"
    assert record["usage"]["completion_tokens"] > 0
    assert record["response"]["choices"][0]["message"]["content"] == text
    assert record["ttft_ms"] is not None


def test_stream_with_usage_requested_by_client_keeps_usage_chunk(client):
    chunks = list(client.chat.completions.create(
        model="support-bot", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}]))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_tool_calls_pass_through(client):
    tools = [{"type": "function", "function": {
        "name": "lookup_order", "description": "Find an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"},
                                                         "include_items": {"type": "boolean"}},
                       "required": ["order_id"], "additionalProperties": False}}}]
    completion = client.chat.completions.create(model="support-bot", tools=tools,
                                                messages=[{"role": "user", "content": "status of order 42?"}])
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup_order"
    assert "order_id" in json.loads(call.function.arguments)


def test_streamed_tool_calls_assemble(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    chunks = list(client.chat.completions.create(model="support-bot", tools=tools, stream=True,
                                                 messages=[{"role": "user", "content": "weather?"}]))
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices and c.choices[0].delta.tool_calls
                   for tc in c.choices[0].delta.tool_calls)
    assert "city" in json.loads(args)


def test_structured_output(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    completion = client.chat.completions.create(
        model="support-bot", messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}})
    parsed = json.loads(completion.choices[0].message.content)
    assert set(parsed) == {"answer", "confidence"}


def test_embeddings(client, gateway):
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one", "two"])
    result = raw.parse()
    assert isinstance(result, CreateEmbeddingResponse)
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    request_id = raw.headers["x-sluicegate-request-id"]
    rows = attempts(gateway, request_id, 1)
    assert rows[0]["endpoint"] == "embeddings"
    assert "embedding" not in json.dumps(rows[0]["response"])  # vectors are never stored


def test_legacy_completions(client):
    completion = client.completions.create(model="support-bot", prompt="Say hi")
    assert completion.choices[0].text


def test_models_lists_the_routes(client):
    ids = {m.id for m in client.models.list()}
    assert {"support-bot", "embed", "slow-stream"} <= ids


def test_same_key_same_variant_across_two_server_processes(gateway, tmp_path, mock_upstream):
    from tests.e2e.conftest import Gateway

    policy = tmp_path / "policy.yaml"
    policy.write_text(e2e_policy(free_port()).replace("{mock}", mock_upstream + "/v1"))
    second = Gateway(policy, tmp_path / "second.db", tmp_path / "second.log")
    try:
        body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=10) as http:
            for i in range(60):
                headers = {"x-sluicegate-episode": f"episode-{i}"}
                one = http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
                two = http.post(f"{second.url}/v1/chat/completions", json=body, headers=headers)
                again = http.post(f"{second.url}/v1/chat/completions", json=body, headers=headers)
                assert one.headers["x-sluicegate-variant"] == two.headers["x-sluicegate-variant"]
                assert two.headers["x-sluicegate-variant"] == again.headers["x-sluicegate-variant"]
    finally:
        second.stop()
