"""Sealing a record: applying its capture mode, once, when it is first encoded.

The request path hands the recorder a `Record` holding the raw request and answer, and never pays
for redaction or hashing itself. Whoever first turns the record into bytes — the store's thread,
or the spill writer — encodes the sealed form, so no unredacted text ever reaches the store or
the spill file. The `Record` object itself is never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.records._capture import capture_request, capture_response, request_hash
from proxy.records._model import Record
from proxy.records._redact import redact_text, redact_value

__all__ = ["encode_row", "seal"]

_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def _tool_calls(calls: list[dict[str, Any]] | None, mode: str) -> list[dict[str, Any]] | None:
    if not calls or mode == "full":
        return calls
    if mode == "redacted":
        return redact_value(calls)
    out = []
    for call in calls:
        function = call.get("function") or {} if isinstance(call, dict) else {}
        arguments = function.get("arguments") or ""
        out.append({"name": function.get("name"), "arguments_chars": len(arguments)})
    return out


def seal(record: Record) -> dict[str, Any]:
    """The record as it may be stored: the dict of its fields with the capture mode applied."""
    row = {name: getattr(record, name) for name in _FIELDS}
    mode = record.capture
    if record.request is not None and record.request_hash is None:
        row["request_hash"] = request_hash(record.request)
    row["request"] = capture_request(record.request, mode)
    row["response"] = capture_response(record.response, mode, record.endpoint)
    row["tool_calls"] = _tool_calls(record.tool_calls, mode)
    if mode != "full" and record.error:
        row["error"] = redact_text(record.error)
    return row


def encode_row(row: Record | Mapping[str, Any]) -> bytes:
    """JSON bytes of a row; a `Record` is sealed first (dicts are rows already sealed)."""
    return orjson.dumps(seal(row) if isinstance(row, Record) else row)
