"""Realistic faulty answers from proxy.mock_upstream (in process), checked by the guards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.assembly import StreamAssembler
from proxy.guards import build_guards
from proxy.mock_upstream import create_app
from tests.guards._helpers import WEATHER

REQUEST: dict[str, Any] = {"model": "gpt-mock", "messages": [{"role": "user", "content": "weather in Paris?"}],
                           "tools": [WEATHER], "tool_choice": "required"}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
          "required": ["answer", "score"], "additionalProperties": False}
JSON_REQUEST: dict[str, Any] = {"model": "gpt-mock", "messages": [{"role": "user", "content": "rate it"}],
                                "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}
CHAIN = build_guards(["tool_params", "json_schema"])


async def _ask(body: dict[str, Any], headers: dict[str, str], stream: bool = False) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app()), base_url="http://mock") as client:
        if not stream:
            r = await client.post("/v1/chat/completions", json=body, headers=headers)
            r.raise_for_status()
            return r.json()
        assembler = StreamAssembler()
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as r:
            import orjson
            async for line in r.aiter_lines():
                if line.startswith("data: ") and line[6:].strip() != "[DONE]":
                    assembler.add(orjson.loads(line[6:]))
        return assembler.result()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault,expected", [
    ("none", set()),
    ("invented_param", {"invented_tool_param"}),
    ("missing_required", {"missing_required_param"}),
    ("wrong_type", {"wrong_param_type"}),
    ("unknown_tool", {"unknown_tool"}),
    ("bad_json", {"invalid_tool_arguments"}),
])
async def test_mock_tool_call_faults(fault: str, expected: set[str], stream: bool) -> None:
    headers = {} if fault == "none" else {"x-mock-tool-call-fault": fault}
    answer = await _ask(REQUEST, headers, stream)
    results = CHAIN.run(REQUEST, answer)
    assert {r.taxonomy for r in results} == expected, [r.detail for r in results]
    assert all(r.pointer.startswith("/choices/0/message/tool_calls/0/function/") for r in results)


@pytest.mark.parametrize("fault,expected", [
    ("none", set()),
    ("invalid_json", {"invalid_json_output"}),
    ("schema_violation", {"schema_violation"}),
    ("fenced", {"schema_fenced_output"}),
])
async def test_mock_json_faults(fault: str, expected: set[str]) -> None:
    headers = {} if fault == "none" else {"x-mock-json-fault": fault}
    answer = await _ask(JSON_REQUEST, headers)
    results = CHAIN.run(JSON_REQUEST, answer)
    assert {r.taxonomy for r in results} == expected, [r.detail for r in results]
