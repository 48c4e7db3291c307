"""Compiled JSON-schema validators (jsonschema-rs, draft 2020-12), cached by schema hash.

The key is the sha256 of the schema's canonical JSON (sorted keys), so the same schema sent on every
request compiles once per process. Remote `$ref`s are never fetched (`offline=True`): the schemas
come from callers' requests.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import jsonschema_rs
import orjson

from proxy._jsontypes import json_type

__all__ = ["SchemaCache", "SCHEMAS", "close_schema", "SchemaError"]


class SchemaError(ValueError):
    """The schema itself does not compile."""


_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_ONE_KEYWORDS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
                 "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties", "allOf", "anyOf",
                  "oneOf", "$ref", "$dynamicRef")


def close_schema(schema: Any) -> Any:
    """A copy in which every object schema that lists `properties` (and says nothing else about extra
    properties, and is not composed with allOf/anyOf/oneOf/$ref) gets `additionalProperties: false`."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _MAP_KEYWORDS and isinstance(value, dict):
            out[key] = {k: close_schema(v) for k, v in value.items()}
        elif key in _ONE_KEYWORDS:
            out[key] = close_schema(value)
        elif key in _LIST_KEYWORDS and isinstance(value, list):
            out[key] = [close_schema(v) for v in value]
        else:
            out[key] = value
    if "properties" in out and not any(k in out for k in _OPEN_KEYWORDS):
        out["additionalProperties"] = False
    return out


class SchemaCache:
    """A small thread-safe LRU of compiled validators."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(schema: Any, closed: bool) -> bytes:
        digest = hashlib.sha256(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).digest()
        return digest + (b"c" if closed else b"o")

    def get(self, schema: Any, closed: bool = False) -> Any:
        """The validator for `schema` (closed: see `close_schema`). Raises SchemaError if it does not compile.
        A schema that fails to compile is cached too (as its error)."""
        key = self.key(schema, closed)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
        if found is None:
            self.misses += 1
            try:
                found = jsonschema_rs.Draft202012Validator(close_schema(schema) if closed else schema, offline=True)
            except (jsonschema_rs.ValidationError, ValueError, TypeError) as exc:
                found = SchemaError(str(exc).split("\n", 1)[0])
            with self._lock:
                self._items[key] = found
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        if isinstance(found, SchemaError):
            raise found
        return found

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


SCHEMAS = SchemaCache()


def kind_name(error: Any) -> str:
    return type(error.kind).__name__


def schema_at(schema: Any, path: Any) -> Any:
    """The sub-schema at a validation error's schema path (best effort; None if it passes through a $ref)."""
    node = schema
    for token in path:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and isinstance(token, int) and 0 <= token < len(node):
            node = node[token]
        else:
            return None
    return node


class Finding:
    """One schema error, flattened: additional/unevaluated properties give one finding per property."""

    __slots__ = ("kind", "path", "message", "instance", "expected")

    def __init__(self, kind: str, path: list[Any], message: str, instance: Any, expected: Any = None) -> None:
        self.kind = kind          # Required | Additional | Type | Enum | Other
        self.path = path          # instance path of the offending value (for Required/Additional: incl. the name)
        self.message = message
        self.instance = instance
        self.expected = expected  # declared names / types / options


def findings(validator: Any, schema: Any, value: Any, limit: int) -> list[Finding]:
    """All errors of `value` against the compiled `validator` (at most `limit`), in the library's order."""
    if validator.is_valid(value):
        return []
    out: list[Finding] = []
    for err in validator.iter_errors(value):
        kind = kind_name(err)
        path = list(err.instance_path)
        if kind == "Required":
            prop = err.kind.property
            out.append(Finding("Required", path + [prop], err.message, None))
        elif kind in ("AdditionalProperties", "UnevaluatedProperties"):
            node = schema_at(schema, list(err.schema_path)[:-1])
            declared = sorted(node["properties"]) if isinstance(node, dict) and isinstance(node.get("properties"), dict) else None
            for prop in err.kind.unexpected:
                out.append(Finding("Additional", path + [prop], err.message, None, declared))
        elif kind == "Type":
            out.append(Finding("Type", path, err.message, err.instance, list(err.kind.types)))
        elif kind == "Enum":
            out.append(Finding("Enum", path, err.message, err.instance, list(err.kind.options)))
        elif kind == "Constant":
            out.append(Finding("Enum", path, err.message, err.instance, [err.kind.expected_value]))
        else:
            out.append(Finding("Other", path, err.message, err.instance))
        if len(out) >= limit:
            break
    return out[:limit]


def dotted(path: list[Any]) -> str:
    """`["address", "lines", 0]` -> `address.lines[0]` (for details a person reads)."""
    text = ""
    for token in path:
        text += f"[{token}]" if isinstance(token, int) else (f".{token}" if text else str(token))
    return text or "(root)"
