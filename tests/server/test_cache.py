"""The exact-match output cache: identical requests hit (no upstream call), different params miss,
entries expire, survive a restart (they live in the store), stream hits are valid SSE, failed answers
are never cached, a slow store is a miss, and hits stay out of latency and cost figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from proxy.config import PolicyError, parse_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.reports import build_report
from proxy.server import Settings, create_app
from tests._spec import SPEC_PATH

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod, price: {input_per_mtok: 1, output_per_mtok: 2}}
routes:
  bot: {model: prod, capture: full, cache: {mode: exact, ttl: TTL}, guards: [tool_params]}
"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path, ttl: str = "1h", mock: Any = None):
    mock = mock or create_mock(MockConfig(default=MockModel()))
    app = create_app(Settings(policy=parse_policy(POLICY.replace("TTL", ttl)), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway, mock


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "bot", "messages": [{"role": "user", "content": content}], **extra}


def upstream_calls(mock: Any) -> int:
    return len(mock.state.mock.requests)


async def test_an_identical_request_is_answered_from_the_cache(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, gw, mock):
        first = await client.post("/v1/chat/completions", json=chat(user="u1"))
        # `user` and `metadata` cannot change the answer: not part of the key
        second = await client.post("/v1/chat/completions", json=chat(user="u2", metadata={"k": "v"}))
        await gw.recorder.flush()
        records = await gw.store.query_records()
        ready = (await client.get("/readyz")).json()
    assert ready["cache"]["hits"] == 1 and ready["cache"]["misses"] == 1
    assert first.headers["x-sluicegate-cache"] == "miss" and second.headers["x-sluicegate-cache"] == "hit"
    assert second.json() == first.json() and upstream_calls(mock) == 1
    hit = next(r for r in records if r["cache_hit"])
    assert hit["served"] and hit["cost_usd"] == 0.0 and hit["response"] == first.json()
    assert gw.cache.stats()["hits"] == 1


async def test_different_params_or_messages_miss(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, gw, mock):
        await client.post("/v1/chat/completions", json=chat())
        other_params = await client.post("/v1/chat/completions", json=chat(temperature=0.7))
        other_text = await client.post("/v1/chat/completions", json=chat("hello"))
    assert other_params.headers["x-sluicegate-cache"] == other_text.headers["x-sluicegate-cache"] == "miss"
    assert upstream_calls(mock) == 3


async def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    async with running(tmp_path, ttl="0.3") as (client, gw, mock):
        await client.post("/v1/chat/completions", json=chat())
        assert (await client.post("/v1/chat/completions", json=chat())).headers["x-sluicegate-cache"] == "hit"
        await asyncio.sleep(0.4)
        late = await client.post("/v1/chat/completions", json=chat())
    assert late.headers["x-sluicegate-cache"] == "miss" and upstream_calls(mock) == 2


async def test_the_cache_survives_a_restart_because_it_lives_in_the_store(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, gw, mock):
        before = (await client.post("/v1/chat/completions", json=chat())).json()
    async with running(tmp_path) as (client, gw, mock):  # a new process: empty memory, same store
        after = await client.post("/v1/chat/completions", json=chat())
        assert gw.cache.stats()["in_memory"] == 1  # taken from the store, now remembered
    assert after.headers["x-sluicegate-cache"] == "hit" and after.json() == before
    assert upstream_calls(mock) == 0


async def test_a_stream_hit_is_valid_sse_and_a_streamed_miss_fills_the_cache(tmp_path: Path) -> None:
    spec = json.loads(SPEC_PATH.read_text())
    schema = {"$ref": "#/components/schemas/CreateChatCompletionStreamResponse", "components": spec["components"]}
    async with running(tmp_path) as (client, gw, mock):
        streamed = await client.post("/v1/chat/completions", json=chat(stream=True))
        assert streamed.headers["x-sluicegate-cache"] == "miss"
        plain = await client.post("/v1/chat/completions", json=chat())
        hit = await client.post("/v1/chat/completions",
                                json=chat(stream=True, stream_options={"include_usage": True}))
    assert plain.headers["x-sluicegate-cache"] == hit.headers["x-sluicegate-cache"] == "hit"
    assert upstream_calls(mock) == 1
    events = [line[6:] for line in hit.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        jsonschema.Draft202012Validator(schema).validate(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain.json()["usage"]


async def test_an_answer_that_failed_a_guard_is_not_cached(tmp_path: Path) -> None:
    mock = create_mock(MockConfig(default=MockModel(tool_call_fault="invented_param")))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": False}}}]
    async with running(tmp_path, mock=mock) as (client, gw, _):
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=chat("weather in Paris?", tools=tools))
            assert r.headers["x-sluicegate-guards"] != "pass" and r.headers["x-sluicegate-cache"] == "miss"
    assert upstream_calls(mock) == 2 and gw.cache.stats()["stored"] == 0


async def test_a_slow_store_is_a_counted_miss_not_a_failed_request(tmp_path: Path) -> None:
    class SlowLookups:  # the real store, with look-ups that take longer than the cache waits
        def __init__(self, store: Any) -> None:
            self.store = store

        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(1.0)
            return await self.store.fetch(*args, **kwargs)

    async with running(tmp_path) as (client, gw, mock):
        await client.post("/v1/chat/completions", json=chat())
        gw.cache._memory.clear()
        gw.cache._store = SlowLookups(gw.store)
        r = await client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and r.headers["x-sluicegate-cache"] == "miss"
    assert gw.cache.stats()["lookup_timeouts"] == 1 and upstream_calls(mock) == 2


async def test_hits_count_as_requests_but_not_in_latency_tokens_or_cost(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, gw, mock):
        for _ in range(4):
            await client.post("/v1/chat/completions", json=chat())
        await gw.recorder.flush()
        report = await build_report(gw.store)
        paid = next(r for r in await gw.store.query_records() if not r["cache_hit"])
    arm, = report["routes"][0]["arms"]
    assert arm["requests"] == 4 and arm["served"] == 4
    assert arm["latency_ms"]["n"] == 1 and arm["cost"]["attempts_with_cost"] == 1
    assert arm["tokens"]["prompt"] == paid["usage"]["prompt_tokens"]


def test_a_refs_only_route_cannot_cache() -> None:
    with pytest.raises(PolicyError, match=r"routes\.bot\.cache: .*refs_only"):
        parse_policy(POLICY.replace("TTL", "1h").replace("capture: full", "capture: refs_only"))
    with pytest.raises(PolicyError, match="not a duration"):
        parse_policy(POLICY.replace("TTL", "soon"))
