"""The mock upstream behaves like the OpenAI API, and each configured fault really happens."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.mock_upstream import MockConfig, MockModel, MockServer, load_config, synthesize
from tests._mock_client import Client, client, make_client  # noqa: F401 (fixtures)
from tests._spec import SPEC_PATH

ROOT = Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def check_spec(spec: dict[str, Any], name: str, doc: Any) -> None:
    """Raise if `doc` does not validate against `#/components/schemas/<name>` of the OpenAI spec."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(doc)


def errors(schema: dict[str, Any], value: Any) -> list[jsonschema.ValidationError]:
    return list(jsonschema.Draft202012Validator(schema).iter_errors(value))


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order; every event must be a single `data:` line."""
    assert text.endswith("\n\n")
    out = []
    for event in text[:-2].split("\n\n"):
        assert event.startswith("data: "), event
        assert "\n" not in event
        out.append(event[len("data: "):])
    return out


def chat(content: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": extra.pop("model", "gpt-test"),
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
            **extra}


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
NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "items": {"type": "array", "minItems": 2, "uniqueItems": True,
                          "items": {"type": "object",
                                    "properties": {"sku": {"type": "string", "minLength": 12},
                                                   "qty": {"type": "integer", "exclusiveMinimum": 0}},
                                    "required": ["sku", "qty"]}},
                "priority": {"type": "string", "enum": ["low", "high"]},
                "gift": {"type": "boolean"},
                "price": {"type": "number", "exclusiveMinimum": 2, "multipleOf": 0.25},
            },
            "required": ["id", "items", "priority"],
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
        "when": {"type": "string", "format": "date-time"},
    },
    "required": ["order", "tags"],
}
REFS: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "address": {"type": "object",
                    "properties": {"street": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]+$"}},
                    "required": ["street"], "additionalProperties": False},
        "node": {"type": "object", "properties": {"name": {"type": "string"},
                                                  "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                 "required": ["name"]},
    },
    "properties": {
        "home": {"$ref": "#/$defs/address"},
        "contact": {"anyOf": [{"type": "null"}, {"type": "string", "format": "email"}]},
        "level": {"oneOf": [{"type": "integer", "minimum": 5}, {"type": "string", "const": "max"}]},
        "mode": {"type": ["string", "null"], "enum": ["fast", "slow", None]},
        "size": {"allOf": [{"type": "object", "properties": {"w": {"type": "number"}}, "required": ["w"]},
                           {"properties": {"h": {"type": "number", "maximum": 0}}, "required": ["h"]}]},
        "tree": {"$ref": "#/$defs/node"},
    },
    "required": ["home", "contact", "level", "mode", "size", "tree"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {"weather": WEATHER, "nested": NESTED, "refs": REFS}


def tool(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": f"tool {name}", "parameters": params}}


# --- chat completions -----------------------------------------------------------------------

async def test_chat_completion_is_openai_shaped(make_client: Client, spec: dict[str, Any]) -> None:
    c = await make_client(MockConfig(models={"prod": MockModel(served_model="gpt-mock-2024-08-06",
                                                               system_fingerprint="fp_prod1")}))
    r = await c.post("/v1/chat/completions", json=chat("Where is Paris?", model="prod"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    check_spec(spec, "CreateChatCompletionResponse", doc)
    parsed = ChatCompletion.model_validate(doc)
    assert parsed.id.startswith("chatcmpl-")
    assert parsed.object == "chat.completion"
    assert parsed.model == "gpt-mock-2024-08-06"
    assert parsed.system_fingerprint == "fp_prod1"
    assert abs(parsed.created - time.time()) < 5
    choice = parsed.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Mock answer from prod: Where is Paris?"
    assert doc["choices"][0]["message"]["refusal"] is None
    assert parsed.usage is not None
    assert parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens
    assert parsed.usage.prompt_tokens > 0 and parsed.usage.completion_tokens > 0

    # any model name works, with the defaults; ids are unique; content is deterministic
    r2 = (await c.post("/v1/chat/completions", json=chat("Where is Paris?", model="whatever-7b"))).json()
    r3 = (await c.post("/v1/chat/completions", json=chat("Where is Paris?", model="whatever-7b"))).json()
    assert r2["model"] == "whatever-7b" and r2["system_fingerprint"] == "fp_mock"
    assert r2["id"] != r3["id"]
    assert r2["choices"] == r3["choices"]


async def test_reply_mentions_last_user_message_and_configured_reply(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"fixed": MockModel(reply="[{model}] you said {last_user}")}))
    body = {"model": "m", "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question"}]},
    ]}
    doc = (await c.post("/v1/chat/completions", json=body)).json()
    assert doc["choices"][0]["message"]["content"] == "Mock answer from m: second question"
    doc = (await c.post("/v1/chat/completions", json={**body, "model": "fixed"})).json()
    assert doc["choices"][0]["message"]["content"] == "[fixed] you said second question"


async def test_max_tokens_truncates_with_finish_reason_length(client: httpx.AsyncClient) -> None:
    full = (await client.post("/v1/chat/completions", json=chat("one two three four five six"))).json()
    for key in ("max_tokens", "max_completion_tokens"):
        doc = (await client.post("/v1/chat/completions", json=chat("one two three four five six", **{key: 3}))).json()
        choice = doc["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"] == "Mock answer from"
        assert full["choices"][0]["message"]["content"].startswith(choice["message"]["content"])
        assert doc["usage"]["completion_tokens"] == 3
    doc = (await client.post("/v1/chat/completions", json=chat("hi", max_tokens=500))).json()
    assert doc["choices"][0]["finish_reason"] == "stop"


async def test_invalid_requests_get_openai_errors(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    for body, param in [({"messages": [{"role": "user", "content": "x"}]}, "model"),
                        ({"model": "m", "messages": []}, "messages"),
                        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
                         "max_tokens")]:
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400
        check_spec(spec, "ErrorResponse", r.json())
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["param"] == param
    r = await client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = await client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


# --- streaming --------------------------------------------------------------------------------

async def test_stream_chunks_match_spec_and_sdk(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    plain = (await client.post("/v1/chat/completions", json=chat("Stream me please"))).json()
    r = await client.post("/v1/chat/completions", json=chat("Stream me please", stream=True))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        check_spec(spec, "CreateChatCompletionStreamResponse", ch)
        ChatCompletionChunk.model_validate(ch)
        assert "usage" not in ch
        assert ch["object"] == "chat.completion.chunk"
    assert len({ch["id"] for ch in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    content = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-1]]
    assert len(content) == 5  # default MockModel.chunks
    assert "".join(content) == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(ch["choices"][0]["finish_reason"] is None for ch in chunks[:-1])


async def test_stream_include_usage(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    body = chat("count my tokens", stream=True, stream_options={"include_usage": True})
    data = sse_data((await client.post("/v1/chat/completions", json=body)).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        check_spec(spec, "CreateChatCompletionStreamResponse", ch)
        ChatCompletionChunk.model_validate(ch)
    last = chunks[-1]
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert all("usage" in ch and ch["usage"] is None for ch in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stream_chunk_count_from_config_and_header(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"three": MockModel(chunks=3)}))
    data = sse_data((await c.post("/v1/chat/completions", json=chat("a b c d e f g", model="three",
                                                                     stream=True))).text)
    assert len(data) == 1 + 3 + 1 + 1  # role, content pieces, finish, [DONE]
    r = await c.post("/v1/chat/completions", json=chat("a b c d e f g", model="three", stream=True),
                     headers={"x-mock-chunks": "7"})
    assert len(sse_data(r.text)) == 1 + 7 + 1 + 1


# --- tool calls ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_tool_call_arguments_validate(client: httpx.AsyncClient, spec: dict[str, Any], name: str) -> None:
    params = SCHEMAS[name]
    r = await client.post("/v1/chat/completions", json=chat("call it", tools=[tool(name, params)]))
    doc = r.json()
    check_spec(spec, "CreateChatCompletionResponse", doc)
    parsed = ChatCompletion.model_validate(doc)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == name
    args = json.loads(call.function.arguments)
    assert errors(params, args) == []
    assert set(args) == set(params["properties"])  # every declared property is filled


def test_synthesize_respects_keywords() -> None:
    assert synthesize(WEATHER)["unit"] == "celsius"
    assert 3 <= synthesize(WEATHER)["days"] <= 10
    nested = synthesize(NESTED)
    assert len(nested["order"]["items"]) == 2
    assert nested["order"]["price"] > 2 and (nested["order"]["price"] / 0.25).is_integer()
    refs = synthesize(REFS)
    assert refs["contact"] == "mock@example.com"
    assert refs["level"] == 5
    assert errors(REFS, refs) == []
    assert synthesize({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]}) == [1, True]


async def test_tool_choice_and_parallel_calls(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"par": MockModel(tool_calls="all")}))
    tools = [tool("weather", WEATHER), tool("nested", NESTED)]

    async def called(**extra: Any) -> list[str] | None:
        doc = (await c.post("/v1/chat/completions", json=chat("x", tools=tools, **extra))).json()
        calls = doc["choices"][0]["message"].get("tool_calls")
        return None if calls is None else [tc["function"]["name"] for tc in calls]

    assert await called() == ["weather"]
    assert await called(tool_choice="required") == ["weather"]
    assert await called(tool_choice={"type": "function", "function": {"name": "nested"}}) == ["nested"]
    assert await called(tool_choice="none") is None
    assert await called(model="par") == ["weather", "nested"]
    assert await called(model="par", parallel_tool_calls=False) == ["weather"]
    r = await c.post("/v1/chat/completions",
                     json=chat("x", tools=tools, tool_choice={"type": "function", "function": {"name": "nope"}}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    doc = (await c.post("/v1/chat/completions", json=chat("x", tools=tools, tool_choice="none"))).json()
    assert doc["choices"][0]["finish_reason"] == "stop" and doc["choices"][0]["message"]["content"]


async def test_tool_call_stream_deltas(make_client: Client, spec: dict[str, Any]) -> None:
    c = await make_client(MockConfig(default=MockModel(tool_calls="all", chunks=4)))
    tools = [tool("weather", WEATHER), tool("refs", REFS)]
    plain = (await c.post("/v1/chat/completions", json=chat("x", tools=tools))).json()
    data = sse_data((await c.post("/v1/chat/completions", json=chat("x", tools=tools, stream=True))).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        check_spec(spec, "CreateChatCompletionStreamResponse", ch)
        ChatCompletionChunk.model_validate(ch)
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    args: dict[int, str] = {}
    names: dict[int, str] = {}
    for ch in chunks[:-1]:
        for tc in ch["choices"][0]["delta"]["tool_calls"]:
            i = tc["index"]
            if i not in args:  # the first delta of a call carries its id, type, name and empty arguments
                assert tc["id"].startswith("call_") and tc["type"] == "function"
                assert tc["function"]["arguments"] == ""
                names[i] = tc["function"]["name"]
                args[i] = ""
            else:
                assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
                args[i] += tc["function"]["arguments"]
    assert names == {0: "weather", 1: "refs"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert errors(WEATHER, json.loads(args[0])) == [] and errors(REFS, json.loads(args[1])) == []
    plain_args = [tc["function"]["arguments"] for tc in plain["choices"][0]["message"]["tool_calls"]]
    assert [args[0], args[1]] == plain_args


async def first_call(c: httpx.AsyncClient, params: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = await c.post("/v1/chat/completions", json=chat("x", tools=[tool("weather", params)]), headers=headers)
    assert r.status_code == 200
    call: dict[str, Any] = r.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    return call


async def test_tool_call_faults(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"invent": MockModel(tool_call_fault="invented_param")}))
    ok = await first_call(c, WEATHER)
    assert errors(WEATHER, json.loads(ok["arguments"])) == []

    r = await c.post("/v1/chat/completions", json=chat("x", model="invent", tools=[tool("weather", WEATHER)]))
    args = json.loads(r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert set(args) - set(WEATHER["properties"])  # an argument the schema does not declare
    assert [e.validator for e in errors(WEATHER, args)] == ["additionalProperties"]

    args = json.loads((await first_call(c, WEATHER, **{"x-mock-tool-call-fault": "missing_required"}))["arguments"])
    errs = errors(WEATHER, args)
    assert [e.validator for e in errs] == ["required"]
    assert not set(WEATHER["required"]) <= set(args)

    for params in (WEATHER, NESTED, REFS):
        args = json.loads((await first_call(c, params, **{"x-mock-tool-call-fault": "wrong_type"}))["arguments"])
        assert "type" in {e.validator for e in errors(params, args)}, params

    call = await first_call(c, WEATHER, **{"x-mock-tool-call-fault": "unknown_tool"})
    assert call["name"] != "weather"
    assert errors(WEATHER, json.loads(call["arguments"])) == []

    call = await first_call(c, WEATHER, **{"x-mock-tool-call-fault": "bad_json"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["arguments"])


async def test_legacy_functions(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    body = chat("x", functions=[{"name": "weather", "parameters": WEATHER}, {"name": "nested", "parameters": NESTED}])
    doc = (await client.post("/v1/chat/completions", json=body)).json()
    check_spec(spec, "CreateChatCompletionResponse", doc)
    ChatCompletion.model_validate(doc)
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "function_call" and choice["message"]["content"] is None
    assert choice["message"]["function_call"]["name"] == "weather"
    assert errors(WEATHER, json.loads(choice["message"]["function_call"]["arguments"])) == []
    doc = (await client.post("/v1/chat/completions", json={**body, "function_call": {"name": "nested"}})).json()
    assert doc["choices"][0]["message"]["function_call"]["name"] == "nested"
    data = sse_data((await client.post("/v1/chat/completions", json={**body, "stream": True})).text)
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        check_spec(spec, "CreateChatCompletionStreamResponse", ch)
    assert chunks[0]["choices"][0]["delta"]["function_call"] == {"name": "weather", "arguments": ""}
    streamed = "".join(ch["choices"][0]["delta"]["function_call"]["arguments"] for ch in chunks[1:-1])
    assert errors(WEATHER, json.loads(streamed)) == []
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


# --- structured output ----------------------------------------------------------------------

def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_json_schema_response_validates(client: httpx.AsyncClient, name: str) -> None:
    doc = (await client.post("/v1/chat/completions",
                             json=chat("x", response_format=json_schema_format(SCHEMAS[name])))).json()
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert errors(SCHEMAS[name], json.loads(doc["choices"][0]["message"]["content"])) == []


async def test_json_object_and_json_faults(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"fenced": MockModel(json_fault="fenced")}))
    doc = (await c.post("/v1/chat/completions", json=chat("hi there", response_format={"type": "json_object"}))).json()
    assert json.loads(doc["choices"][0]["message"]["content"]) == {"answer": "Mock answer from gpt-test: hi there"}

    async def content(fault: str | None, model: str = "gpt-test") -> str:
        headers = {"x-mock-json-fault": fault} if fault else {}
        r = await c.post("/v1/chat/completions", headers=headers,
                         json=chat("x", model=model, response_format=json_schema_format(WEATHER)))
        text: str = r.json()["choices"][0]["message"]["content"]
        return text

    with pytest.raises(json.JSONDecodeError):
        json.loads(await content("invalid_json"))
    bad = json.loads(await content("schema_violation"))
    assert errors(WEATHER, bad)
    fenced = await content(None, model="fenced")
    assert fenced.startswith("```json\n") and fenced.endswith("\n```")
    assert errors(WEATHER, json.loads(fenced[len("```json\n"):-len("\n```")])) == []
    # the header beats the model configuration
    assert errors(WEATHER, json.loads(await content("none", model="fenced"))) == []
    # json_object mode can be broken too
    r = await c.post("/v1/chat/completions", headers={"x-mock-json-fault": "schema_violation"},
                     json=chat("x", response_format={"type": "json_object"}))
    assert not isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


# --- faults -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault,status,type_", [
    ("http_500", 500, "server_error"),
    ("http_503", 503, "server_error"),
    ("http_400", 400, "invalid_request_error"),
    ("http_429", 429, "rate_limit_exceeded"),
])
async def test_http_faults(make_client: Client, spec: dict[str, Any], fault: Any, status: int, type_: str) -> None:
    c = await make_client(MockConfig(models={"bad": MockModel(fault=fault, retry_after=0.25)}))
    for path, body in [("/v1/chat/completions", chat("x", model="bad")),
                       ("/v1/chat/completions", chat("x", model="bad", stream=True)),
                       ("/v1/completions", {"model": "bad", "prompt": "x"}),
                       ("/v1/embeddings", {"model": "bad", "input": "x"})]:
        r = await c.post(path, json=body)
        assert r.status_code == status, path
        check_spec(spec, "ErrorResponse", r.json())
        assert r.json()["error"]["type"] == type_
    if fault == "http_429":
        assert r.headers["retry-after"] == "1"
        assert r.headers["retry-after-ms"] == "250"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    else:
        assert "retry-after" not in r.headers
    # other models are not affected
    assert (await c.post("/v1/chat/completions", json=chat("x"))).status_code == 200


async def test_fault_count_then_behave(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"flaky": MockModel(fault="http_503", fault_count=2)}))
    statuses = [(await c.post("/v1/chat/completions", json=chat("x", model="flaky"))).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    # replacing the model through the control API restarts the count; -1 means always
    await c.put("/_mock/models/flaky", json={"fault": "http_500", "fault_count": -1})
    statuses = [(await c.post("/v1/chat/completions", json=chat("x", model="flaky"))).status_code for _ in range(3)]
    assert statuses == [500, 500, 500]
    assert (await c.get("/_mock/stats")).json()["faults"] == {"http_503": 2, "http_500": 3}


async def test_header_overrides_beat_config(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"down": MockModel(fault="http_500")}))
    assert (await c.post("/v1/chat/completions", json=chat("x", model="down"))).status_code == 500
    r = await c.post("/v1/chat/completions", json=chat("x", model="down"), headers={"x-mock-fault": "none"})
    assert r.status_code == 200
    r = await c.post("/v1/chat/completions", json=chat("x"), headers={"x-mock-fault": "http_429"})
    assert r.status_code == 429
    t0 = time.perf_counter()
    r = await c.post("/v1/chat/completions", json=chat("x"), headers={"x-mock-latency-ms": "150"})
    assert r.status_code == 200 and time.perf_counter() - t0 >= 0.15
    for header, value in [("x-mock-fault", "explode"), ("x-mock-chunks", "0"), ("x-mock-latency-ms", "soon"),
                          ("x-mock-typo", "1")]:
        r = await c.post("/v1/chat/completions", json=chat("x"), headers={header: value})
        assert r.status_code == 400 and r.json()["error"]["param"] == header, header


async def test_model_latency(make_client: Client) -> None:
    c = await make_client(MockConfig(default=MockModel(latency_ms=120), models={"fast": MockModel(latency_ms=0)}))
    t0 = time.perf_counter()
    await c.post("/v1/chat/completions", json=chat("x"))
    t1 = time.perf_counter()
    await c.post("/v1/chat/completions", json=chat("x", model="fast"))
    t2 = time.perf_counter()
    assert t1 - t0 >= 0.12
    assert t2 - t1 < 0.1


async def test_malformed_json_and_sse(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=chat("x"), headers={"x-mock-fault": "malformed_json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.text.startswith('{"id":"chatcmpl-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    r = await client.post("/v1/chat/completions", json=chat("x", stream=True),
                          headers={"x-mock-fault": "malformed_sse"})
    assert r.status_code == 200
    data = sse_data(r.text)
    assert data[-1] == "[DONE]"
    bad = []
    for i, d in enumerate(data[:-1]):
        try:
            json.loads(d)
        except json.JSONDecodeError:
            bad.append(i)
    assert len(bad) == 1 and 0 < bad[0] < len(data) - 2  # in the middle, valid chunks before and after


async def test_reset_in_process_raises_remote_protocol_error(client: httpx.AsyncClient) -> None:
    for fault, stream in [("reset", False), ("reset", True), ("reset_mid_stream", True)]:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/chat/completions", json=chat("x", stream=stream), headers={"x-mock-fault": fault})


async def test_timeout_fault_does_not_answer(client: httpx.AsyncClient) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/v1/chat/completions", json=chat("x"),
                                           headers={"x-mock-fault": "timeout"}), 0.3)


# --- real server: what a client sees on the wire -------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(MockConfig(models={"slow": MockModel(chunks=5, chunk_delay_ms=80)})) as s:
        yield s


async def test_server_reset_cuts_body(server: MockServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
        for stream in (False, True):
            received = b""
            with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection without sending complete"):
                async with c.stream("POST", "/v1/chat/completions", json=chat("x", stream=stream),
                                    headers={"x-mock-fault": "reset"}) as r:
                    assert r.status_code == 200
                    declared = int(r.headers["content-length"])
                    async for part in r.aiter_bytes():
                        received += part
            assert 0 < len(received) < declared
        # the server keeps serving afterwards
        assert (await c.post("/v1/chat/completions", json=chat("x"))).status_code == 200


async def test_server_reset_mid_stream(server: MockServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", "/v1/chat/completions", json=chat("x", stream=True),
                                headers={"x-mock-fault": "reset_mid_stream"}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                async for line in r.aiter_lines():
                    if line:
                        lines.append(line)
        assert len(lines) >= 2
        assert all(json.loads(line[len("data: "):])["object"] == "chat.completion.chunk" for line in lines)
        assert "data: [DONE]" not in lines


async def test_server_chunks_arrive_paced(server: MockServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
        arrivals: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        async with c.stream("POST", "/v1/chat/completions", json=chat("pace me", model="slow", stream=True)) as r:
            async for line in r.aiter_lines():
                if line:
                    arrivals.append((time.perf_counter() - t0, line))
        assert arrivals[-1][1] == "data: [DONE]"
        assert len(arrivals) == 8  # role, 5 content pieces, finish, [DONE]
        first_content = arrivals[1][0]
        done = arrivals[-1][0]
        assert done - first_content >= 6 * 0.08 * 0.9  # earlier chunks arrived well before the stream ended
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.05


async def test_server_timeout_fault(server: MockServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as c:
        t0 = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/v1/chat/completions", json=chat("x"), headers={"x-mock-fault": "timeout"})
        assert time.perf_counter() - t0 < 2


def test_openai_sdk_against_server(server: MockServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == "Mock answer from slow: hello"
    calls = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                           tools=[tool("weather", WEATHER)])  # type: ignore[list-item]
    assert calls.choices[0].message.tool_calls is not None
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Mock answer from m: hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    emb = client.embeddings.create(model="e", input=["a", "b"], dimensions=16)  # the SDK asks for base64
    assert [len(d.embedding) for d in emb.data] == [16, 16]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-mock-fault": "http_429"})
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-mock-fault": "reset"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_runs_uvicorn_with_yaml_config(tmp_path: Path) -> None:
    cfg = tmp_path / "mock.yaml"
    cfg.write_text("models:\n  gpt-4o-2024-08-06: {system_fingerprint: fp_yaml}\n")
    port = free_port()
    code = ("import asyncio, sys; from proxy.mock_upstream import serve, load_config; "
            f"asyncio.run(serve('127.0.0.1', {port}, load_config(sys.argv[1])))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert [m["id"] for m in r.json()["data"]] == ["gpt-4o-2024-08-06"]
        doc = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                         json=chat("x", model="gpt-4o-2024-08-06")).json()
        assert doc["system_fingerprint"] == "fp_yaml"
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat("x"),
                       headers={"x-mock-fault": "reset"})
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert b"Exception in ASGI application" not in stderr  # injected cuts are not logged as errors


# --- control API ------------------------------------------------------------------------------

async def test_control_api_request_log(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat("logged", model="a"),
                      headers={"authorization": "Bearer sk-abc", "x-custom": "1"})
    await client.post("/v1/embeddings", json={"model": "b", "input": "x"})
    log = (await client.get("/_mock/requests")).json()["data"]
    assert [(e["path"], e["model"]) for e in log] == [("/v1/chat/completions", "a"), ("/v1/embeddings", "b")]
    assert log[0]["headers"]["authorization"] == "Bearer sk-abc"
    assert log[0]["headers"]["x-custom"] == "1"
    assert log[0]["body"] == chat("logged", model="a")
    assert log[0]["method"] == "POST"
    only_b = (await client.get("/_mock/requests", params={"model": "b"})).json()["data"]
    assert [e["path"] for e in only_b] == ["/v1/embeddings"]
    assert (await client.delete("/_mock/requests")).json() == {"deleted": 2}
    assert (await client.get("/_mock/requests")).json()["data"] == []
    for i in range(205):
        await client.post("/v1/embeddings", json={"model": "m", "input": str(i)})
    log = (await client.get("/_mock/requests")).json()["data"]
    assert len(log) == 200 and log[-1]["body"]["input"] == "204" and log[0]["body"]["input"] == "5"


async def test_control_api_models_and_stats(make_client: Client, spec: dict[str, Any]) -> None:
    c = await make_client(MockConfig(default=MockModel(system_fingerprint="fp_default"),
                                     models={"prod": MockModel(served_model="gpt-4o-2024-08-06")}))
    models = (await c.get("/v1/models")).json()
    check_spec(spec, "ListModelsResponse", models)
    assert [m["id"] for m in models["data"]] == ["prod"]
    assert (await c.get("/v1/models/anything")).json()["id"] == "anything"

    r = await c.put("/_mock/models/org/cand", json={"served_model": "cand-v2", "reply": "fixed"})
    assert r.status_code == 200
    doc = (await c.post("/v1/chat/completions", json=chat("x", model="org/cand"))).json()
    assert doc["model"] == "cand-v2" and doc["choices"][0]["message"]["content"] == "fixed"
    assert doc["system_fingerprint"] == "fp_default"  # unset fields inherit the default
    assert "org/cand" in [m["id"] for m in (await c.get("/v1/models")).json()["data"]]

    r = await c.put("/_mock/models/org/cand", json={"fault": "kaboom"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = await c.put("/_mock/models/org/cand", json={"unknown_field": 1})
    assert r.status_code == 400

    assert (await c.delete("/_mock/models/org/cand")).json() == {"deleted": True}
    doc = (await c.post("/v1/chat/completions", json=chat("x", model="org/cand"))).json()
    assert doc["model"] == "org/cand" and doc["choices"][0]["message"]["content"] != "fixed"

    await c.post("/v1/chat/completions", json=chat("x", model="prod"))
    stats = (await c.get("/_mock/stats")).json()
    assert stats["models"] == {"org/cand": 2, "prod": 1}
    assert stats["total"] == 3 and stats["paths"] == {"/v1/chat/completions": 3}

    await c.put("/_mock/default", json={"fault": "http_503"})
    assert (await c.post("/v1/chat/completions", json=chat("x", model="other"))).status_code == 503
    await c.post("/_mock/reset")
    assert (await c.get("/_mock/stats")).json()["total"] == 0
    assert (await c.post("/v1/chat/completions", json=chat("x", model="other"))).status_code == 200


# --- embeddings and legacy completions ----------------------------------------------------

async def test_embeddings(client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    r = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello world"})
    doc = r.json()
    check_spec(spec, "CreateEmbeddingResponse", doc)
    CreateEmbeddingResponse.model_validate(doc)
    vec = doc["data"][0]["embedding"]
    assert len(vec) == 8
    assert math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-9)
    assert doc["usage"]["prompt_tokens"] == doc["usage"]["total_tokens"] == 2

    again = (await client.post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                        "input": ["hello world", "other", "hello world"]})).json()
    vecs = [d["embedding"] for d in again["data"]]
    assert [d["index"] for d in again["data"]] == [0, 1, 2]
    assert vecs[0] == vecs[2] == vec and vecs[1] != vec

    wide = (await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello world",
                                                       "dimensions": 64})).json()["data"][0]["embedding"]
    assert len(wide) == 64
    b64 = (await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello world",
                                                      "encoding_format": "base64"})).json()["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(b64))
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, vec, strict=True))
    tokens = (await client.post("/v1/embeddings", json={"model": "e", "input": [[1, 2, 3], [4]]})).json()
    assert len(tokens["data"]) == 2 and tokens["usage"]["prompt_tokens"] == 4
    r = await client.post("/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


async def test_embedding_dims_from_config(make_client: Client) -> None:
    c = await make_client(MockConfig(models={"big": MockModel(embedding_dims=32, served_model="big-v1")}))
    doc = (await c.post("/v1/embeddings", json={"model": "big", "input": "x"})).json()
    assert len(doc["data"][0]["embedding"]) == 32 and doc["model"] == "big-v1"


async def test_legacy_completions(client: httpx.AsyncClient) -> None:
    doc = (await client.post("/v1/completions", json={"model": "davinci-mock", "prompt": "Say hi"})).json()
    parsed = Completion.model_validate(doc)
    assert parsed.object == "text_completion" and parsed.id.startswith("cmpl-")
    assert parsed.choices[0].text == " Mock answer from davinci-mock: Say hi"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and parsed.usage.total_tokens > 0
    doc = (await client.post("/v1/completions", json={"model": "m", "prompt": ["a", "b"], "max_tokens": 2})).json()
    assert [(c["index"], c["finish_reason"]) for c in doc["choices"]] == [(0, "length"), (1, "length")]

    data = sse_data((await client.post("/v1/completions", json={"model": "m", "prompt": "Say hi", "stream": True,
                                                                "stream_options": {"include_usage": True}})).text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks[:-1]:
        assert ch["object"] == "text_completion" and ch["id"] == chunks[0]["id"] and ch["usage"] is None
    for ch in chunks[:-2]:  # as OpenAI streams them: finish_reason null until the last choice chunk
        assert ch["choices"][0]["finish_reason"] is None
    Completion.model_validate(chunks[-2])
    assert "".join(ch["choices"][0]["text"] for ch in chunks if ch["choices"]) == " Mock answer from m: Say hi"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


# --- configuration ----------------------------------------------------------------------------

def test_config_inheritance_and_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "mock.yaml"
    cfg_file.write_text(
        "default: {latency_ms: 20, system_fingerprint: fp_base}\n"
        "models:\n"
        "  flaky: {fault: http_429, fault_count: 3, retry_after: 2}\n"
        "  quick: {latency_ms: 0, fault_count: null}\n"
    )
    cfg = load_config(cfg_file)
    flaky = cfg.effective("flaky")
    assert (flaky.latency_ms, flaky.system_fingerprint, flaky.fault, flaky.fault_count) == (20, "fp_base",
                                                                                            "http_429", 3)
    assert cfg.effective("quick").latency_ms == 0
    assert cfg.effective("unlisted").latency_ms == 20
    assert cfg.effective("unlisted").chunks == 5
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == MockConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x: {fault: meltdown}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        load_config(bad)
    with pytest.raises(ValueError):
        MockModel.model_validate({"chunks": 0})


async def test_tool_call_fault_rate_hits_that_share_of_requests_reproducibly():
    import json as _json

    import httpx as _httpx

    from proxy.mock_upstream import MockConfig, MockModel, create_app as _create

    app = _create(MockConfig(models={"m": MockModel(tool_call_fault="invented_param", tool_call_fault_rate=0.25)}))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}]

    async def faulty(i: int) -> bool:
        body = {"model": "m", "tools": tools, "messages": [{"role": "user", "content": f"question {i}"}]}
        response = await client.post("/v1/chat/completions", json=body)
        args = _json.loads(response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        return "mock_invented_param" in args

    async with _httpx.AsyncClient(transport=_httpx.ASGITransport(app=app), base_url="http://m") as client:
        draws = [await faulty(i) for i in range(800)]
        assert 0.20 < sum(draws) / len(draws) < 0.30
        assert [await faulty(i) for i in range(40)] == draws[:40]
