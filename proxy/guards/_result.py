"""The result of one guard finding, and JSON-pointer helpers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["GuardResult", "pointer", "escape"]


@dataclass(frozen=True, slots=True)
class GuardResult:
    """One finding of one guard. Guards return failures only (`passed=False`); an empty list is a pass.

    `severity` is left empty by the guard and filled from the policy's taxonomy by `GuardChain.run`.
    `pointer` is an RFC 6901 JSON pointer into the answer; it continues into the parsed JSON of a
    string field (tool-call `arguments`, JSON `content`), e.g.
    `/choices/0/message/tool_calls/1/function/arguments/address/city`.
    """

    guard: str
    passed: bool
    taxonomy: str
    severity: str
    detail: str
    pointer: str

    def to_dict(self) -> dict[str, Any]:
        return {"guard": self.guard, "passed": self.passed, "taxonomy": self.taxonomy,
                "severity": self.severity, "detail": self.detail, "pointer": self.pointer}


def escape(token: Any) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(base: str, path: Iterable[Any] = ()) -> str:
    """`base` (already a pointer) extended by the unescaped tokens of `path`."""
    return base + "".join("/" + escape(t) for t in path)


def fail(guard: str, taxonomy: str, detail: str, ptr: str) -> GuardResult:
    return GuardResult(guard=guard, passed=False, taxonomy=taxonomy, severity="", detail=detail, pointer=ptr)
