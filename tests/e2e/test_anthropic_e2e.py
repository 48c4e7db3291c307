"""An Anthropic variant through real processes (the gateway's aiohttp transport, the mock's
Anthropic mode over a socket): plain and streamed answers with the openai SDK, and an error event
in the middle of a stream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.e2e.conftest import attempts

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  an: {kind: anthropic, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}'}
  an_cut: {kind: anthropic, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}',
           headers: {x-mock-fault: error_event_mid_stream}}
models:
  claude: {provider: an, model: claude-mock}
  claude_cut: {provider: an_cut, model: claude-mock}
routes:
  claude: {model: claude, capture: full}
  claude-cut: {model: claude_cut, capture: full}
"""


def test_plain_and_streamed_answers_from_an_anthropic_variant(start_gateway) -> None:
    gateway = start_gateway(POLICY)
    client = openai.OpenAI(api_key="caller", base_url=gateway.url + "/v1", max_retries=0)
    messages = [{"role": "user", "content": "What is the status of order 12?"}]
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=messages)
    plain = raw.parse()
    parts = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="claude", messages=messages, stream=True, stream_options={"include_usage": True})
        if c.choices and c.choices[0].delta.content]
    assert plain.choices[0].message.content and "".join(parts) == plain.choices[0].message.content
    record, = attempts(gateway, raw.headers["x-sluicegate-request-id"], 1)
    assert record["provider"] == "an" and record["usage"]["completion_tokens"] > 0


def test_an_error_event_mid_stream_reaches_the_client_as_an_sse_error_and_is_recorded(start_gateway) -> None:
    gateway = start_gateway(POLICY)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", timeout=10,
                      json={"model": "claude-cut", "stream": True,
                            "messages": [{"role": "user", "content": "a long answer please"}]}) as r:
        request_id = r.headers["x-sluicegate-request-id"]
        body = r.read().decode()
    events = [e[6:] for e in body.split("\n\n") if e.startswith("data: ")]
    assert events and "[DONE]" not in events
    error = json.loads(events[-1])["error"]
    assert "an_cut" in error["message"]  # names the upstream
    record, = attempts(gateway, request_id, 1)
    assert record["outcome"] == "stream_cut"
