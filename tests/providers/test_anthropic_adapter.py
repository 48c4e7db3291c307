"""An Anthropic variant behind the OpenAI API, through the gateway: the app (the openai SDK) sees
OpenAI shapes, streaming included; the mock's Anthropic mode sees exact Messages requests; an A/B
route mixing an OpenAI-compatible and an Anthropic variant records both, with guards."""

from __future__ import annotations

import contextlib
import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.server import Settings, create_app

POLICY = """\
providers:
  oa: {kind: openai, base_url: "http://mock.test/v1", api_key: sk-oa-test-key}
  an: {kind: anthropic, base_url: "http://mock.test", api_key: sk-ant-test-key-123}
models:
  gpt: {provider: oa, model: gpt-mock-prod}
  claude: {provider: an, model: claude-mock, params: {max_tokens: 300},
           price: {input_per_mtok: 1, output_per_mtok: 5}}
routes:
  claude-only: {model: claude, capture: full, guards: [tool_params], fallbacks: [gpt]}
  ab: {split: {gpt: 50, claude: 50}, capture: full, guards: [tool_params]}
"""

TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]


@contextlib.asynccontextmanager
async def running(tmp_path, models: dict | None = None):
    mock = create_mock(MockConfig(models=models or {}))
    transport = httpx.ASGITransport(app=mock)
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"oa": transport, "an": transport}))
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1")
        client = openai.AsyncOpenAI(api_key="caller-key", base_url="http://localhost/v1", http_client=http, max_retries=0)
        yield client, app.state.gateway, mock
        await http.aclose()


async def sent_to(mock) -> list[dict]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock), base_url="http://mock.test") as c:
        return (await c.get("/_mock/requests")).json()["data"]


async def test_a_chat_request_becomes_an_exact_messages_request_and_comes_back_openai_shaped(tmp_path) -> None:
    async with running(tmp_path) as (client, gw, mock):
        answer = await client.chat.completions.create(
            model="claude-only", temperature=0.5, stop=["END"],
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"}])
        sent, = await sent_to(mock)
        await gw.recorder.flush()
        record, = await gw.store.query_records()
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop" and answer.usage.completion_tokens > 0
    assert sent["path"] == "/v1/messages"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-api-key"] == "sk-ant-test-key-123" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers  # the caller's key never goes upstream
    assert sent["body"] == {"model": "claude-mock", "max_tokens": 300, "system": "Be brief.",
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]}],
                            "temperature": 0.5, "stop_sequences": ["END"]}
    assert record["provider"] == "an" and record["served"] and record["cost_usd"] > 0
    assert "sk-ant-test-key-123" not in json.dumps(record)


async def test_streamed_text_and_tool_calls_arrive_incrementally_and_assemble_like_the_plain_answer(tmp_path) -> None:
    messages = [{"role": "user", "content": "Tell me about order 42 in detail please"}]
    async with running(tmp_path, {"claude-mock": MockModel(chunks=6, chunk_delay_ms=1)}) as (client, gw, _):
        plain = await client.chat.completions.create(model="claude-only", messages=messages)
        text_chunks = []
        async with await client.chat.completions.create(model="claude-only", messages=messages, stream=True) as s:
            async for chunk in s:
                if chunk.choices and chunk.choices[0].delta.content:
                    text_chunks.append(chunk.choices[0].delta.content)
        assert len(text_chunks) > 1  # incremental, not one blob
        assert "".join(text_chunks) == plain.choices[0].message.content

        tool_plain = await client.chat.completions.create(model="claude-only", messages=messages, tools=TOOLS,
                                                          tool_choice="required")
        call = tool_plain.choices[0].message.tool_calls[0]
        args: dict[int, str] = {}
        names: dict[int, str] = {}
        finish = None
        async with await client.chat.completions.create(model="claude-only", messages=messages, tools=TOOLS,
                                                        tool_choice="required", stream=True) as s:
            async for chunk in s:
                if not chunk.choices:
                    continue
                for tc in chunk.choices[0].delta.tool_calls or []:
                    if tc.function.name:
                        names[tc.index] = tc.function.name
                    args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
                finish = chunk.choices[0].finish_reason or finish
    assert call.function.name == "get_order" and tool_plain.choices[0].finish_reason == "tool_calls"
    assert names == {0: "get_order"} and finish == "tool_calls"
    assert json.loads(args[0]) == json.loads(call.function.arguments)


async def test_an_unsupported_parameter_is_a_400_naming_it(tmp_path) -> None:
    async with running(tmp_path) as (client, _, mock):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="claude-only", logprobs=True,
                                                 messages=[{"role": "user", "content": "hi"}])
        assert await sent_to(mock) == []  # refused before anything went upstream
    assert info.value.status_code == 400 and info.value.body["param"] == "logprobs"


async def test_anthropic_overloaded_falls_back_and_is_recorded_with_its_529(tmp_path) -> None:
    async with running(tmp_path, {"claude-mock": MockModel(fault="overloaded")}) as (client, gw, _):
        answer = await client.chat.completions.create(model="claude-only",
                                                      messages=[{"role": "user", "content": "hi"}])
        await gw.recorder.flush()
        rows = sorted(await gw.store.query_records(), key=lambda r: r["attempt"])
    assert answer.model.startswith("gpt-mock-prod")
    assert [(r["provider"], r["upstream_status"], r["attempt_reason"]) for r in rows] == [
        ("an", 529, "primary"), ("oa", 200, "fallback")]


async def test_an_ab_route_across_families_records_both_variants_with_guards(tmp_path) -> None:
    async with running(tmp_path) as (client, gw, _):
        seen = set()
        for i in range(24):
            r = await client.chat.completions.with_raw_response.create(
                model="ab", messages=[{"role": "user", "content": "order 7?"}], tools=TOOLS, tool_choice="required",
                extra_headers={"x-sluicegate-episode": f"ep-{i}"})
            seen.add(r.headers["x-sluicegate-variant"])
            assert r.headers["x-sluicegate-guards"] == "pass"
            assert r.parse().choices[0].message.tool_calls
        await gw.recorder.flush()
        rows = await gw.store.query_records(route="ab")
    assert seen == {"gpt", "claude"}
    assert {r["provider"] for r in rows} == {"oa", "an"} and all(r["guards"] == [] for r in rows)
    assert all(r["tool_calls"] for r in rows)
