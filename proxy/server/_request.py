"""Reading and checking the client's request: size limit, JSON, required fields."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request

from proxy.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

__all__ = ["MAX_DEPTH", "read_json_body", "check_fields", "REQUIRED"]

MAX_DEPTH = 254  # orjson encodes at most this many levels (it parses 1024)

# What each endpoint cannot do without, and the type it must have.
REQUIRED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "chat.completions": (("model", str), ("messages", list)),
    "completions": (("model", str), ("prompt", (str, list))),
    "embeddings": (("model", str), ("input", (str, list))),
}


async def read_json_body(request: Request, limit: int, timeout: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """The body as JSON. `timeout`: seconds the client may take to send it (a slow client holds a
    connection and a task: 408 past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit} bytes")
    try:
        async with asyncio.timeout(timeout):
            raw = await _read(request, limit)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # only then can it be nested too deep: check
        try:
            orjson.dumps(body)  # the upstream call encodes with orjson, which stops at 254 levels
        except orjson.JSONEncodeError:
            raise InvalidRequest(f"request body is nested more than {MAX_DEPTH} levels deep",
                                 code="nesting_too_deep") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return raw, body


async def _read(request: Request, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_fields(endpoint: str, body: dict[str, Any], limits: Any = None) -> None:
    """Required fields and their types; with `limits` (the policy's `server:`), counts too."""
    for field, kind in REQUIRED[endpoint]:
        value = body.get(field)
        if value is None:
            raise InvalidRequest(f"missing required field '{field}'", param=field, code="missing_required_parameter")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise InvalidRequest(f"field '{field}' must be of type {expected}", param=field, code="invalid_type")
    if endpoint == "chat.completions" and not body["messages"]:
        raise InvalidRequest("field 'messages' must not be empty", param="messages", code="invalid_value")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("field 'stream' must be a boolean", param="stream", code="invalid_type")
    for field in ("stream_options", "metadata"):
        value = body.get(field)
        if value is not None and not isinstance(value, dict):
            raise InvalidRequest(f"field '{field}' must be an object", param=field, code="invalid_type")
    if limits is not None:
        _counts(body, limits)


def _counts(body: dict[str, Any], limits: Any) -> None:
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise InvalidRequest(f"{len(messages)} messages; this gateway takes at most {limits.max_messages} "
                             "(server.max_messages)", param="messages", code="too_many_messages")
    for field in ("tools", "functions"):
        declared = body.get(field)
        if isinstance(declared, list) and len(declared) > limits.max_tools:
            raise InvalidRequest(f"{len(declared)} {field}; this gateway takes at most {limits.max_tools} "
                                 "(server.max_tools)", param=field, code="too_many_tools")
