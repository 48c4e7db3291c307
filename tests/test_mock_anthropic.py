"""The mock upstream's Anthropic Messages mode (`POST /v1/messages`) behaves like Anthropic's API."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from proxy.mock_upstream import MockConfig, MockModel, MockServer
from tests._mock_client import Client, client, make_client  # noqa: F401 (fixtures)

HEADERS = {"x-api-key": "sk-ant-mock", "anthropic-version": "2023-06-01"}
PATH = "/v1/messages"

def msg(content: Any = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 256, "system": "Be brief.",
                            "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


async def post(c: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await c.post(PATH, json=body, headers={**HEADERS, **(headers or {})})


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of an Anthropic SSE body; every event is `event:` + one `data:` line."""
    assert text.endswith("\n\n")
    out = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0][len("event: "):], json.loads(lines[1][len("data: "):])
        assert data["type"] == name
        out.append((name, data))
    return out


def joined(evs: list[tuple[str, dict[str, Any]]], index: int, kind: str) -> str:
    key = "text" if kind == "text_delta" else "partial_json"
    parts = [d["delta"][key] for n, d in evs if n == "content_block_delta" and d["index"] == index]
    assert all(d["delta"]["type"] == kind for n, d in evs if n == "content_block_delta" and d["index"] == index)
    return "".join(parts)


def check_error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    doc: dict[str, Any] = r.json()
    assert doc["type"] == "error"
    assert set(doc["error"]) == {"type", "message"}
    assert doc["error"]["type"] == type_ and isinstance(doc["error"]["message"], str)
    assert doc["request_id"].startswith("req_") and r.headers["request-id"] == doc["request_id"]
    return doc


WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3, "maximum": 10},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "items": {"type": "array", "minItems": 2,
                  "items": {"type": "object", "properties": {"sku": {"type": "string", "minLength": 12},
                                                             "qty": {"type": "integer", "exclusiveMinimum": 0}},
                            "required": ["sku", "qty"]}},
        "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    },
    "required": ["id", "items", "code"],
}
TOOLS = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER},
    {"name": "place_order", "input_schema": ORDER},
]


# --- non-streaming ----------------------------------------------------------------------------

async def test_text_message_shape(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"claude-alias": MockModel(served_model="claude-x-20250101")}))
    r = await post(c, msg("Hello there"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert doc["id"].startswith("msg_") and doc["type"] == "message" and doc["role"] == "assistant"
    assert doc["model"] == "claude-test"
    assert doc["content"] == [{"type": "text", "text": "Mock answer from claude-test: Hello there"}]
    assert doc["stop_reason"] == "end_turn" and doc["stop_sequence"] is None
    usage = doc["usage"]
    assert set(usage) == {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0
    assert r.headers["request-id"].startswith("req_")
    # the served model is reported
    assert (await post(c, msg("x", model="claude-alias"))).json()["model"] == "claude-x-20250101"


async def test_content_blocks_and_multi_turn(client: httpx.AsyncClient) -> None:
    body = msg(system=[{"type": "text", "text": "Be brief."}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                                     {"type": "text", "text": "Summarise it"}]},
    ])
    doc = (await post(client, body)).json()
    assert doc["content"][0]["text"] == "Mock answer from claude-test: sunny Summarise it"


async def test_max_tokens_and_stop_sequences(client: httpx.AsyncClient) -> None:
    doc = (await post(client, msg("one two three four five", max_tokens=3))).json()
    assert doc["stop_reason"] == "max_tokens" and doc["stop_sequence"] is None
    assert doc["content"][0]["text"] == "Mock answer from" and doc["usage"]["output_tokens"] == 3
    doc = (await post(client, msg("one two three four five", stop_sequences=["four", "three"]))).json()
    assert doc["stop_reason"] == "stop_sequence" and doc["stop_sequence"] == "three"
    assert doc["content"][0]["text"] == "Mock answer from claude-test: one two "
    # max_tokens is reached before the stop sequence
    doc = (await post(client, msg("one two three", max_tokens=2, stop_sequences=["three"]))).json()
    assert doc["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("choice", [None, {"type": "auto"}, {"type": "any"}])
async def test_tool_use_input_validates(client: httpx.AsyncClient, choice: Any) -> None:
    extra = {"tool_choice": choice} if choice else {}
    doc = (await post(client, msg("Weather in Paris?", tools=TOOLS, **extra))).json()
    assert doc["stop_reason"] == "tool_use"
    [block] = doc["content"]
    assert set(block) == {"type", "id", "name", "input"}
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_") and block["name"] == "get_weather"
    jsonschema.Draft202012Validator(WEATHER).validate(block["input"])
    assert doc["usage"]["output_tokens"] > 0


async def test_forced_tool_parallel_and_none(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"many": MockModel(tool_calls="all")}))
    doc = (await post(c, msg("order", tools=TOOLS, tool_choice={"type": "tool", "name": "place_order"}))).json()
    [block] = doc["content"]
    assert block["name"] == "place_order" and doc["stop_reason"] == "tool_use"
    jsonschema.Draft202012Validator(ORDER, format_checker=jsonschema.FormatChecker()).validate(block["input"])
    # a forced tool is the only call even for a model that calls every tool
    forced = msg("x", model="many", tools=TOOLS, tool_choice={"type": "tool", "name": "place_order"})
    assert [b["name"] for b in (await post(c, forced)).json()["content"]] == ["place_order"]
    doc = (await post(c, msg("x", model="many", tools=TOOLS))).json()
    assert [b["name"] for b in doc["content"]] == ["get_weather", "place_order"]
    assert len({b["id"] for b in doc["content"]}) == 2
    serial = msg("x", model="many", tools=TOOLS, tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert [b["name"] for b in (await post(c, serial)).json()["content"]] == ["get_weather"]
    doc = (await post(c, msg("x", tools=TOOLS, tool_choice={"type": "none"}))).json()
    assert doc["content"][0]["type"] == "text" and doc["stop_reason"] == "end_turn"
    # server tools are never called
    doc = (await post(c, msg("x", tools=[{"type": "web_search_20250305", "name": "web_search"}]))).json()
    assert doc["content"][0]["type"] == "text"
    r = await post(c, msg("x", tools=TOOLS, tool_choice={"type": "tool", "name": "nope"}))
    check_error(r, 400, "invalid_request_error")


async def test_tool_call_faults(make_client: Client) -> None:
    c = await make_client()
    one = msg("x", tools=TOOLS[:1])
    block = (await post(c, one, {"x-mock-tool-call-fault": "invented_param"})).json()["content"][0]
    assert "mock_invented_param" in block["input"]
    block = (await post(c, one, {"x-mock-tool-call-fault": "missing_required"})).json()["content"][0]
    assert "city" not in block["input"]
    block = (await post(c, one, {"x-mock-tool-call-fault": "unknown_tool"})).json()["content"][0]
    assert block["name"] == "mock_unknown_tool"
    # bad_json: the object cannot be broken, so it is wrapped; a stream carries the broken text itself
    block = (await post(c, one, {"x-mock-tool-call-fault": "bad_json"})).json()["content"][0]
    assert set(block["input"]) == {"INVALID_JSON"}
    broken = block["input"]["INVALID_JSON"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    evs = events((await post(c, {**one, "stream": True}, {"x-mock-tool-call-fault": "bad_json"})).text)
    assert joined(evs, 0, "input_json_delta") == broken
    # per-model configuration, as in the OpenAI mode
    c = await make_client(MockConfig(models={"sloppy": MockModel(tool_call_fault="wrong_type")}))
    block = (await post(c, msg("x", model="sloppy", tools=TOOLS[:1]))).json()["content"][0]
    assert list(jsonschema.Draft202012Validator(WEATHER).iter_errors(block["input"]))


async def test_structured_output(make_client: Client) -> None:
    c = await make_client()
    for key, value in [("output_config", {"format": {"type": "json_schema", "schema": WEATHER}}),
                       ("output_format", {"type": "json_schema", "schema": WEATHER})]:
        doc = (await post(c, msg("x", **{key: value}))).json()
        jsonschema.Draft202012Validator(WEATHER).validate(json.loads(doc["content"][0]["text"]))
    c = await make_client(MockConfig(models={"judge": MockModel(judge_error_rate=0.0)}))
    doc = (await post(c, msg("Judge this answer", model="judge"))).json()
    assert json.loads(doc["content"][0]["text"])["label"] == "pass"


# --- streaming --------------------------------------------------------------------------------

def check_stream_order(evs: list[tuple[str, dict[str, Any]]], n_blocks: int) -> None:
    """message_start; per block start, deltas, stop (a ping after the first start); message_delta; message_stop."""
    names = [n for n, _ in evs]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[2] == "ping" and names.count("ping") == 1
    rest = [(n, d) for n, d in evs[1:-2] if n != "ping"]
    i = 0
    for index in range(n_blocks):
        assert rest[i][0] == "content_block_start" and rest[i][1]["index"] == index
        i += 1
        while rest[i][0] == "content_block_delta":
            assert rest[i][1]["index"] == index
            i += 1
        assert rest[i] == ("content_block_stop", {"type": "content_block_stop", "index": index})
        i += 1
    assert i == len(rest)


@pytest.mark.parametrize("chunks", [1, 3, 7])
async def test_stream_text_matches_non_stream(client: httpx.AsyncClient, chunks: int) -> None:
    body = msg("Tell me about Paris and its museums")
    ref = (await post(client, body)).json()
    r = await post(client, {**body, "stream": True}, {"x-mock-chunks": str(chunks)})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"].startswith("req_")
    evs = events(r.text)
    check_stream_order(evs, 1)
    start = evs[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert start["model"] == "claude-test" and start["role"] == "assistant" and start["type"] == "message"
    assert start["usage"]["input_tokens"] == ref["usage"]["input_tokens"]
    assert evs[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [d for n, d in evs if n == "content_block_delta"]
    assert len(deltas) == chunks
    assert joined(evs, 0, "text_delta") == ref["content"][0]["text"]
    final = evs[-2][1]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert final["usage"]["output_tokens"] == ref["usage"]["output_tokens"]
    assert evs[-1][1] == {"type": "message_stop"}


async def test_stream_tool_use_matches_non_stream(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"many": MockModel(tool_calls="all", chunks=4)}))
    body = msg("x", model="many", tools=TOOLS)
    ref = (await post(c, body)).json()
    evs = events((await post(c, {**body, "stream": True})).text)
    check_stream_order(evs, 2)
    starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
    for i, (start, block) in enumerate(zip(starts, ref["content"], strict=True)):
        assert start["type"] == "tool_use" and start["name"] == block["name"] and start["input"] == {}
        assert start["id"].startswith("toolu_")
        pieces = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta" and d["index"] == i]
        assert pieces[0] == "" and len(pieces) >= 3  # an empty first fragment, then several pieces
        assert json.loads(joined(evs, i, "input_json_delta")) == block["input"]
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert evs[-2][1]["usage"]["output_tokens"] == ref["usage"]["output_tokens"]


async def test_stream_max_tokens_and_stop_sequence(client: httpx.AsyncClient) -> None:
    for extra, reason in [({"max_tokens": 3}, "max_tokens"), ({"stop_sequences": ["two"]}, "stop_sequence")]:
        body = msg("one two three", **extra)
        ref = (await post(client, body)).json()
        evs = events((await post(client, {**body, "stream": True})).text)
        assert joined(evs, 0, "text_delta") == ref["content"][0]["text"]
        assert evs[-2][1]["delta"] == {"stop_reason": reason, "stop_sequence": ref["stop_sequence"]}


async def test_latency_and_chunk_delay(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"slow": MockModel(latency_ms=100, chunks=4, chunk_delay_ms=20)}))
    t0 = time.perf_counter()
    r = await post(c, msg("x", model="slow", stream=True))
    elapsed = time.perf_counter() - t0
    n = len(events(r.text))
    assert n == 1 + 1 + 1 + 4 + 1 + 2  # start, block start, ping, 4 deltas, block stop, delta, stop
    assert elapsed >= 0.1 + (n - 1) * 0.02 * 0.9


# --- errors and faults ------------------------------------------------------------------------

async def test_header_and_body_validation(client: httpx.AsyncClient) -> None:
    r = await client.post(PATH, json=msg(), headers={"anthropic-version": "2023-06-01"})
    assert "x-api-key" in check_error(r, 401, "authentication_error")["error"]["message"]
    r = await client.post(PATH, json=msg(), headers={"authorization": "Bearer sk", "anthropic-version": "2023-06-01"})
    check_error(r, 401, "authentication_error")
    r = await client.post(PATH, json=msg(), headers={"x-api-key": "k"})
    assert "anthropic-version" in check_error(r, 400, "invalid_request_error")["error"]["message"]
    r = await client.post(PATH, json=msg(), headers={"x-api-key": "k", "anthropic-version": "2099-01-01"})
    check_error(r, 400, "invalid_request_error")
    body = msg()
    del body["max_tokens"]
    assert check_error(await post(client, body), 400, "invalid_request_error")["error"]["message"] == \
        "max_tokens: Field required"
    body = msg()
    del body["model"]
    assert "model" in check_error(await post(client, body), 400, "invalid_request_error")["error"]["message"]
    bad: list[tuple[dict[str, Any], str]] = [
        (msg(max_tokens=0), "max_tokens"),
        (msg(max_tokens="100"), "max_tokens"),
        (msg(messages=[]), "messages"),
        (msg(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]), "system"),
        (msg(temperature=1.5), "temperature"),
        (msg(n=2), "n: Extra inputs are not permitted"),
        (msg(response_format={"type": "json_object"}), "response_format"),
        (msg(stop_sequences="END"), "stop_sequences"),
        (msg(tools=[{"name": "f", "parameters": {}}]), "input_schema"),
        (msg(tool_choice="auto", tools=TOOLS), "tool_choice"),
    ]
    for b, needle in bad:
        assert needle in check_error(await post(client, b), 400, "invalid_request_error")["error"]["message"], needle
    r = await client.post(PATH, content=b"{not json", headers={**HEADERS, "content-type": "application/json"})
    check_error(r, 400, "invalid_request_error")
    r = await post(client, msg(), {"x-mock-fault": "explode"})
    assert "x-mock-fault" in check_error(r, 400, "invalid_request_error")["error"]["message"]


@pytest.mark.parametrize("fault,status,type_", [
    ("http_429", 429, "rate_limit_error"),
    ("http_500", 500, "api_error"),
    ("http_503", 529, "overloaded_error"),
    ("overloaded", 529, "overloaded_error"),
    ("http_400", 400, "invalid_request_error"),
])
async def test_http_faults(make_client: Client, fault: Any, status: int, type_: str) -> None:
    c = await make_client(MockConfig(models={"bad": MockModel(fault=fault, retry_after=1.5)}))
    for stream in (False, True):
        r = await post(c, msg("x", model="bad", stream=stream))
        check_error(r, status, type_)
        if fault == "http_429":
            assert r.headers["retry-after"] == "2"
            assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
        else:
            assert "retry-after" not in r.headers
        r = await post(c, msg("x", stream=stream), {"x-mock-fault": fault})  # the header works for any model
        check_error(r, status, type_)
    assert (await post(c, msg("x"))).status_code == 200
    stats = (await c.get("/_mock/stats")).json()
    assert stats["faults"] == {fault: 4} and stats["paths"] == {PATH: 5}


async def test_fault_count_then_behave(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"flaky": MockModel(fault="overloaded", fault_count=2)}))
    statuses = [(await post(c, msg("x", model="flaky"))).status_code for _ in range(4)]
    assert statuses == [529, 529, 200, 200]


async def test_error_event_mid_stream(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"shaky": MockModel(fault="error_event_mid_stream", chunks=6)}))
    r = await post(c, msg("tell me a long story", model="shaky", stream=True))
    assert r.status_code == 200
    evs = events(r.text)
    assert evs[0][0] == "message_start" and len(evs) >= 4
    assert evs[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "message_stop" not in [n for n, _ in evs] and "message_delta" not in [n for n, _ in evs]
    # without a stream there is no stream to break: the request is answered with the overload
    check_error(await post(c, msg("x", model="shaky")), 529, "overloaded_error")


async def test_transport_faults(client: httpx.AsyncClient) -> None:
    for fault, stream in [("reset", False), ("reset", True), ("reset_mid_stream", True), ("reset_mid_stream", False)]:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, msg("x", stream=stream), {"x-mock-fault": fault})
    r = await post(client, msg("x"), {"x-mock-fault": "malformed_json"})
    assert r.status_code == 200 and r.text.startswith('{"id":"msg_')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    r = await post(client, msg("x", stream=True), {"x-mock-fault": "malformed_sse"})
    blocks = r.text[:-2].split("\n\n")
    bad = []
    for i, block in enumerate(blocks):
        try:
            json.loads(block.split("\n")[1][len("data: "):])
        except json.JSONDecodeError:
            bad.append(i)
    assert len(bad) == 1 and 0 < bad[0] < len(blocks) - 1
    assert blocks[-1].startswith("event: message_stop")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(post(client, msg("x"), {"x-mock-fault": "timeout"}), 0.3)


async def test_openai_mode_plays_the_new_faults(client: httpx.AsyncClient) -> None:
    chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
    for fault in ("overloaded", "error_event_mid_stream"):
        r = await client.post("/v1/chat/completions", json=chat, headers={"x-mock-fault": fault})
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    r = await client.post("/v1/chat/completions", json={**chat, "stream": True},
                          headers={"x-mock-fault": "error_event_mid_stream"})
    assert r.status_code == 200
    data = [json.loads(e[len("data: "):]) for e in r.text[:-2].split("\n\n")]
    assert data[0]["object"] == "chat.completion.chunk" and "[DONE]" not in r.text
    assert set(data[-1]) == {"error"} and data[-1]["error"]["type"] == "server_error"


# --- request log ------------------------------------------------------------------------------

async def test_request_log(client: httpx.AsyncClient) -> None:
    body = msg("logged", tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"}, temperature=0.2,
               metadata={"user_id": "u1"})
    await post(client, body)
    await post(client, {**body, "max_tokens": None})  # rejected requests are logged as well
    await client.post("/v1/chat/completions", json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]})
    log = (await client.get("/_mock/requests", params={"path": PATH})).json()["data"]
    assert len(log) == 2
    first = log[0]
    assert first["method"] == "POST" and first["path"] == PATH and first["model"] == "claude-test"
    assert first["body"] == body
    assert first["headers"]["anthropic-version"] == "2023-06-01" and first["headers"]["x-api-key"] == "sk-ant-mock"
    assert log[1]["body"]["max_tokens"] is None
    assert len((await client.get("/_mock/requests", params={"model": "claude-test"})).json()["data"]) == 2


# --- over a socket ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(models={"slow": MockModel(chunks=4, chunk_delay_ms=60)})) as s:
        yield s


async def test_server_stream_is_paced_and_cut(server: MockServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=HEADERS) as c:
        arrivals: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        async with c.stream("POST", PATH, json=msg("pace me", model="slow", stream=True)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    arrivals.append((time.perf_counter() - t0, line[len("event: "):]))
        assert [a[1] for a in arrivals][-2:] == ["message_delta", "message_stop"]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.04
        seen: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", PATH, json=msg("x", stream=True),
                                headers={"x-mock-fault": "reset_mid_stream"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        seen.append(line)
        assert seen and "event: message_stop" not in seen
