"""Small readings of JSON values shared across the package: a value's JSON Schema type name (guards,
the mock), and the text of an OpenAI message's content (scorers, the judge, the corpus)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["content_text", "json_type"]


def content_text(content: Any, sep: str = "\n") -> str:
    """A message's content: a string, or the text parts of a list of content parts (others skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
