"""Reading and checking the client's request: size limit, JSON, required fields."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from proxy.errors import InvalidRequest, PayloadTooLarge

__all__ = ["read_json_body", "check_fields", "REQUIRED"]

# What each endpoint cannot do without, and the type it must have.
REQUIRED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "chat.completions": (("model", str), ("messages", list)),
    "completions": (("model", str), ("prompt", (str, list))),
    "embeddings": (("model", str), ("input", (str, list))),
}


async def read_json_body(request: Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return raw, body


def check_fields(endpoint: str, body: dict[str, Any]) -> None:
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
