"""The request path in-process: the mock upstream plugged into the provider's transport slot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from proxy.config import parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.server import Settings, create_app

PROVIDER_KEY = "sk-inproc-PROVIDER-abcdef123456"
CALLER_KEY = "sk-inproc-CALLER-654321fedcba"

POLICY = f"""
providers:
  mock: {{kind: openai, base_url: 'http://mock.test/v1', api_key: '{PROVIDER_KEY}',
          headers: {{x-extra: 'yes'}}}}
  slow: {{kind: openai, base_url: 'http://mock.test/v1', headers: {{x-mock-latency-ms: '2000'}}}}
models:
  prod: {{provider: mock, model: gpt-mock-prod, params: {{temperature: 0, seed: 7}}}}
  sleepy: {{provider: slow, model: gpt-mock-slow}}
routes:
  support-bot: {{model: prod, capture: full}}
  deadline: {{model: sleepy, timeout: 0.3}}
passthrough: {{provider: mock}}
"""


@contextlib.asynccontextmanager
async def running(tmp_path, policy_text: str = POLICY) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    mock = create_mock()
    transport = httpx.ASGITransport(app=mock)
    app = create_app(Settings(policy=parse_policy(policy_text), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": transport, "slow": transport}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, mock


async def upstream_requests(mock) -> list[dict]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock), base_url="http://mock.test") as c:
        return (await c.get("/_mock/requests")).json()["data"]


async def test_upstream_gets_pinned_model_and_params_provider_key_and_no_caller_key(tmp_path):
    async with running(tmp_path) as (client, mock):
        body = {"model": "support-bot", "temperature": 0.9, "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"x-sluicegate-episode": "ep-9", "app_key": "kept"}}
        response = await client.post("/v1/chat/completions", json=body,
                                     headers={"authorization": f"Bearer {CALLER_KEY}"})
        assert response.status_code == 200
        sent, = await upstream_requests(mock)
    assert sent["body"]["model"] == "gpt-mock-prod"
    assert sent["body"]["temperature"] == 0 and sent["body"]["seed"] == 7  # pinned params win
    assert sent["body"]["metadata"] == {"app_key": "kept"}  # Sluicegate's own keys stripped
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert headers["x-extra"] == "yes"
    assert CALLER_KEY not in orjson.dumps(sent).decode()


async def test_stream_asks_upstream_for_usage_when_client_did_not(tmp_path):
    async with running(tmp_path) as (client, mock):
        body = {"model": "support-bot", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        response = await client.post("/v1/chat/completions", json=body)
        sent, = await upstream_requests(mock)
    assert sent["body"]["stream_options"] == {"include_usage": True}
    events = [e for e in response.text.split("\n\n") if e.startswith("data: {")]
    assert all(orjson.loads(e[6:])["choices"] for e in events)
    assert response.text.rstrip().endswith("data: [DONE]")


async def test_route_deadline_gives_504_naming_the_provider(tmp_path):
    async with running(tmp_path) as (client, _):
        response = await client.post("/v1/chat/completions",
                                     json={"model": "deadline", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 504
    assert "'slow'" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "upstream_timeout"


async def test_passthrough_forwards_unknown_model_unchanged(tmp_path):
    async with running(tmp_path) as (client, mock):
        response = await client.post("/v1/chat/completions",
                                     json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        sent, = await upstream_requests(mock)
    assert response.status_code == 200
    assert response.headers["x-sluicegate-variant"] == "passthrough"
    assert sent["body"]["model"] == "gpt-4o-mini"


async def test_unknown_model_without_passthrough_is_404_listing_routes(tmp_path):
    policy = POLICY.replace("passthrough: {provider: mock}", "")
    async with running(tmp_path, policy) as (client, _):
        response = await client.post("/v1/chat/completions",
                                     json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    assert "support-bot" in response.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["full", "redacted", "refs_only"])
async def test_capture_modes_reach_the_store(tmp_path, mode):
    secret_text = "mail me at jane.doe@example.com or call +1 415 555 0100"
    async with running(tmp_path, POLICY.replace("capture: full", f"capture: {mode}")) as (client, _):
        app_response = await client.post("/v1/chat/completions",
                                         json={"model": "support-bot",
                                               "messages": [{"role": "user", "content": secret_text}]})
        assert app_response.status_code == 200
        gateway = client._transport.app.state.gateway  # type: ignore[attr-defined]
        await gateway.recorder.flush()
        record, = await gateway.store.query_records()
    stored = orjson.dumps(record).decode()
    assert record["capture"] == mode and record["request_hash"]
    if mode == "full":
        assert "jane.doe@example.com" in stored
    else:
        assert "jane.doe@example.com" not in stored and "555 0100" not in stored
    if mode == "refs_only":
        assert "mail me" not in stored and "Mock answer" not in stored
