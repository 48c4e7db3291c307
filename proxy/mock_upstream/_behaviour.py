"""Per-request behaviour: the model's settings as a plain frozen dataclass, with `x-mock-*` header overrides.

Pydantic stays at the configuration boundary; a request only reads this dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from proxy.mock_upstream._config import FAULTS, JSON_FAULTS, TOOL_CALL_FAULTS, MockModel

__all__ = ["Behaviour", "HeaderError", "header_overrides", "HEADER_FAULT"]

HEADER_FAULT = "x-mock-fault"


@dataclass(frozen=True, slots=True)
class Behaviour:
    served_model: str | None
    system_fingerprint: str | None
    reply: str | None
    latency_ms: float
    chunks: int
    chunk_delay_ms: float
    tool_calls: str
    tool_call_fault: str
    tool_call_fault_rate: float
    json_fault: str
    fault: str
    fault_count: int | None
    retry_after: float
    embedding_dims: int
    bad_answer_rate: float = 0.0
    judge_error_rate: float | None = None

    @classmethod
    def from_model(cls, m: MockModel) -> Behaviour:
        return cls(
            served_model=m.served_model,
            system_fingerprint=m.system_fingerprint,
            reply=m.reply,
            latency_ms=m.latency_ms,
            chunks=m.chunks,
            chunk_delay_ms=m.chunk_delay_ms,
            tool_calls=m.tool_calls,
            tool_call_fault=m.tool_call_fault,
            tool_call_fault_rate=m.tool_call_fault_rate,
            json_fault=m.json_fault,
            fault=m.fault,
            fault_count=m.fault_count,
            retry_after=m.retry_after,
            embedding_dims=m.embedding_dims,
            bad_answer_rate=m.bad_answer_rate,
            judge_error_rate=m.judge_error_rate,
        )

    def with_overrides(self, overrides: dict[str, Any]) -> Behaviour:
        return dataclasses.replace(self, **overrides) if overrides else self


class HeaderError(ValueError):
    """An `x-mock-*` header has a value the mock does not understand (answered with a 400)."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(f"{header}: {message}")
        self.header = header


def _number(header: str, value: str, *, integer: bool, minimum: float) -> float | int:
    try:
        n: float | int = int(value) if integer else float(value)
    except ValueError:
        raise HeaderError(header, f"expected {'an integer' if integer else 'a number'}, got {value!r}") from None
    if n < minimum:
        raise HeaderError(header, f"must be >= {minimum:g}, got {value!r}")
    return n


def _choice(header: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise HeaderError(header, f"unknown value {value!r}; one of {', '.join(sorted(allowed))}")
    return value


def header_overrides(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Behaviour fields set by `x-mock-*` request headers (header beats model configuration).

    `fault` from `x-mock-fault` is returned under the key "fault"; it bypasses `fault_count`.
    Raises `HeaderError` for a value that cannot be used.
    """
    out: dict[str, Any] = {}
    for raw_name, raw_value in raw_headers:
        if not raw_name.startswith(b"x-mock-"):
            continue
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1").strip()
        if name == HEADER_FAULT:
            out["fault"] = _choice(name, value, FAULTS)
        elif name == "x-mock-latency-ms":
            out["latency_ms"] = _number(name, value, integer=False, minimum=0)
        elif name == "x-mock-chunk-delay-ms":
            out["chunk_delay_ms"] = _number(name, value, integer=False, minimum=0)
        elif name == "x-mock-chunks":
            out["chunks"] = _number(name, value, integer=True, minimum=1)
        elif name == "x-mock-tool-call-fault":
            out["tool_call_fault"] = _choice(name, value, TOOL_CALL_FAULTS)
        elif name == "x-mock-json-fault":
            out["json_fault"] = _choice(name, value, JSON_FAULTS)
        else:
            raise HeaderError(name, "unknown x-mock header; known: x-mock-fault, x-mock-latency-ms, "
                              "x-mock-chunk-delay-ms, x-mock-chunks, x-mock-tool-call-fault, x-mock-json-fault")
    return out
