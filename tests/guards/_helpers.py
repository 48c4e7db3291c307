"""Builders for requests and answers used by the guard tests."""

from __future__ import annotations

from typing import Any

import orjson


def tool(name: str, props: dict[str, Any] | None = None, required: list[str] | None = None, *,
         closed: bool | None = True, strict: bool | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    if params is None:
        params = {"type": "object", "properties": props or {}}
        if required:
            params["required"] = required
        if closed is not None:
            params["additionalProperties"] = not closed
    fn: dict[str, Any] = {"name": name, "parameters": params}
    if strict is not None:
        fn["strict"] = strict
    return {"type": "function", "function": fn}


WEATHER = tool("get_weather", {"city": {"type": "string"},
                               "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                               "days": {"type": "integer", "minimum": 1, "maximum": 14}}, ["city"])
TICKET = tool("create_ticket", {
    "title": {"type": "string"},
    "priority": {"type": "string", "enum": ["low", "high"]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "contact": {"type": "object", "properties": {"email": {"type": "string"},
                                                  "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                                                              "required": ["city"], "additionalProperties": False}},
                "required": ["email"], "additionalProperties": False},
    "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                                         "required": ["sku", "qty"], "additionalProperties": False}},
}, ["title", "priority"])
OPEN = tool("search", {"query": {"type": "string"}, "limit": {"type": "integer"}}, ["query"], closed=None)
STRICT = tool("refund", {"order_id": {"type": "string"}, "amount": {"type": "number"}}, ["order_id", "amount"],
              closed=None, strict=True)
NOARGS = tool("ping", params={"type": "object", "properties": {}})
TOOLS = [WEATHER, TICKET, OPEN, STRICT, NOARGS]


def call(name: str, args: Any, j: int = 0) -> dict[str, Any]:
    raw = args if isinstance(args, str) else orjson.dumps(args).decode()
    return {"id": f"call_{j}", "type": "function", "function": {"name": name, "arguments": raw}}


def answer_calls(*calls: dict[str, Any], finish: str = "tool_calls", content: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def answer_text(content: Any, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}]}


def found(results: list[Any]) -> list[tuple[str, str]]:
    return [(r.taxonomy, r.pointer) for r in results]
