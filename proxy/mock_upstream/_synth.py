"""Values synthesized from a JSON schema (tool-call arguments, structured output), and ways to break them.

`synthesize(schema)` returns a deterministic value that validates against the schema for the usual
shapes: objects (every declared property), strings (`enum`, `const`, common `format`s, length
bounds), integers / numbers (bounds, `multipleOf`), booleans, arrays (`minItems`, `prefixItems`,
`uniqueItems`), `anyOf` / `oneOf` (first non-null branch), `allOf` (merged), and local `$ref`s
(`#/$defs/...`, `#/definitions/...`, `#`). A string `pattern` is honoured for regular expressions
built from literals, classes, groups, alternation and quantifiers (the result is checked with `re`;
when generation fails the usual placeholder is used).

The `break_*` helpers make the value wrong in one specific way, for fault injection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from re import _parser as _sre_parse  # type: ignore[attr-defined]  # the parser behind `re` (3.11+)
from typing import Any
from proxy._jsontypes import json_type as _json_type

__all__ = [
    "synthesize",
    "invent_param",
    "drop_required",
    "wrong_type",
    "violate",
    "INVENTED_PARAM",
]

Schema = Mapping[str, Any]

INVENTED_PARAM = "mock_invented_param"
_MAX_DEPTH = 16
_OPTIONAL_DEPTH = 4  # below this depth only required properties are filled (recursive schemas end)

_FORMATS: dict[str, str] = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "12:00:00",
    "duration": "PT1H",
    "email": "mock@example.com",
    "idn-email": "mock@example.com",
    "uri": "https://example.com/mock",
    "url": "https://example.com/mock",
    "iri": "https://example.com/mock",
    "uri-reference": "/mock",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "regex": "^mock$",
}


def synthesize(schema: Any, name: str = "value") -> Any:
    """A value that validates against `schema` (a JSON schema as parsed JSON)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _synth(schema, root, name, 0)


# --- synthesis --------------------------------------------------------------------------

def _resolve_ref(root: Schema, ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _deref(s: Any, root: Schema) -> Any:
    """`s` with its `$ref` (followed repeatedly) merged under its own sibling keywords."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(s, Mapping) or "$ref" not in s:
            return s
        target = _resolve_ref(root, s["$ref"])
        siblings = {k: v for k, v in s.items() if k != "$ref"}
        if not isinstance(target, Mapping):
            return siblings
        s = {**target, **siblings}
    return s


def _is_null_branch(s: Any) -> bool:
    return isinstance(s, Mapping) and s.get("type") == "null"


def _merge_all_of(s: Schema, root: Schema) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in s.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for sub in s["allOf"]:
        sub = _deref(sub, root)
        if not isinstance(sub, Mapping):
            continue
        if "allOf" in sub:
            sub = _merge_all_of(sub, root)
        for k, v in sub.items():
            if k == "properties":
                props.update(v)
            elif k == "required":
                required.extend(r for r in v if r not in required)
            else:
                merged.setdefault(k, v)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _main_type(s: Schema) -> str | None:
    t = s.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return non_null[0] if non_null else ("null" if t else None)
    if isinstance(t, str):
        return t
    if "properties" in s or "required" in s or "additionalProperties" in s:
        return "object"
    if "items" in s or "prefixItems" in s:
        return "array"
    if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    if any(k in s for k in ("minLength", "maxLength", "format", "pattern")):
        return "string"
    return None


def _synth(s: Any, root: Schema, name: str, depth: int) -> Any:
    if s is True or s is None:
        return f"mock {name}"
    if not isinstance(s, Mapping) or depth > _MAX_DEPTH:
        return None
    s = _deref(s, root)
    if not isinstance(s, Mapping):
        return None
    if "const" in s:
        return s["const"]
    enum = s.get("enum")
    if isinstance(enum, list) and enum:
        non_null = [e for e in enum if e is not None]
        return non_null[0] if non_null else enum[0]
    if isinstance(s.get("allOf"), list):
        return _synth(_merge_all_of(s, root), root, name, depth + 1)
    for key in ("anyOf", "oneOf"):
        branches = s.get(key)
        if isinstance(branches, list) and branches:
            chosen = next((b for b in branches if not _is_null_branch(b)), branches[0])
            rest = {k: v for k, v in s.items() if k not in ("anyOf", "oneOf")}
            chosen = _deref(chosen, root)
            merged = {**rest, **chosen} if isinstance(chosen, Mapping) else rest
            return _synth(merged, root, name, depth + 1)
    t = _main_type(s)
    if t == "object":
        return _object(s, root, depth)
    if t == "array":
        return _array(s, root, name, depth)
    if t == "string":
        return _string(s, name)
    if t == "integer":
        return _integer(s)
    if t == "number":
        return _number(s)
    if t == "boolean":
        return True
    if t == "null":
        return None
    return f"mock {name}"


def _object(s: Schema, root: Schema, depth: int) -> dict[str, Any]:
    props = s.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = [r for r in (s.get("required") or []) if isinstance(r, str)]
    out: dict[str, Any] = {}
    for key, sub in props.items():
        if depth >= _OPTIONAL_DEPTH and key not in required:
            continue
        out[key] = _synth(sub, root, key, depth + 1)
    extra = s.get("additionalProperties")
    for key in required:
        if key not in out:
            out[key] = _synth(extra if isinstance(extra, Mapping) else True, root, key, depth + 1)
    min_props = s.get("minProperties")
    if isinstance(min_props, int) and len(out) < min_props and extra is not False:
        for i in range(len(out), min_props):
            key = f"mock_{i}"
            out[key] = _synth(extra if isinstance(extra, Mapping) else True, root, key, depth + 1)
    return out


def _vary(value: Any, i: int) -> Any:
    if i == 0:
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + i
    if isinstance(value, float):
        return value + i
    if isinstance(value, str):
        return f"{value} {i}"
    if isinstance(value, dict):  # best effort: vary one leaf, a number first (strings may carry an enum)
        for kinds in ((int, float), (str,), (dict,)):
            for k, v in value.items():
                if isinstance(v, kinds) and not isinstance(v, bool):
                    return {**value, k: _vary(v, i)}
    return value


def _array(s: Schema, root: Schema, name: str, depth: int) -> list[Any]:
    raw_min, raw_max, raw_prefix = s.get("minItems"), s.get("maxItems"), s.get("prefixItems")
    min_items: int = raw_min if isinstance(raw_min, int) else 0
    max_items: int | None = raw_max if isinstance(raw_max, int) else None
    prefix: list[Any] = raw_prefix if isinstance(raw_prefix, list) else []
    n = max(1, min_items, len(prefix))
    if max_items is not None:
        n = min(n, max_items)
    items = s.get("items", True)
    unique = bool(s.get("uniqueItems"))
    item_name = name[:-1] if name.endswith("s") and len(name) > 1 else name
    out: list[Any] = []
    for i in range(n):
        if i < len(prefix):
            out.append(_synth(prefix[i], root, f"{item_name} {i}", depth + 1))
        elif items is False:
            break
        else:
            v = _synth(items, root, item_name, depth + 1)
            out.append(_vary(v, i) if unique else v)
    return out


def _string(s: Schema, name: str) -> str:
    fmt = s.get("format")
    value = _FORMATS.get(fmt, f"mock {name}") if isinstance(fmt, str) else f"mock {name}"
    min_len = s.get("minLength")
    max_len = s.get("maxLength")
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        matched = _from_pattern(pattern, value)
        if matched is not None:
            value = matched
            if isinstance(min_len, int) and len(value) < min_len:
                padded = _from_pattern(pattern, value, min_len=min_len)
                value = padded if padded is not None else value
            return value
    if isinstance(min_len, int) and len(value) < min_len:
        value = value + "x" * (min_len - len(value))
    if isinstance(max_len, int) and len(value) > max_len:
        value = value[:max_len]
    return value


# --- strings from a regular expression -----------------------------------------------------

_CATEGORY_CHAR = {"CATEGORY_DIGIT": "0", "CATEGORY_NOT_DIGIT": "a", "CATEGORY_WORD": "a",
                  "CATEGORY_NOT_WORD": "-", "CATEGORY_SPACE": " ", "CATEGORY_NOT_SPACE": "a"}
_PREFERRED = "a0A-_ .x1"


def _from_pattern(pattern: str, current: str, min_len: int = 0) -> str | None:
    """A string matching `pattern` (`current` if it already does), or None when one cannot be made."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    if min_len <= len(current) and compiled.search(current):
        return current
    try:
        parsed = _sre_parse.parse(pattern)
        out = _gen(parsed, [0])
        extra = 1
        while len(out) < min_len and extra <= 2 * min_len:  # stretch open repeats to reach minLength
            out = _gen(parsed, [extra])
            extra += 1
    except (ValueError, TypeError, IndexError, RecursionError, StopIteration):
        return None
    return out if compiled.search(out) else None


def _class_char(items: list[Any]) -> str:
    negate = bool(items) and str(items[0][0]) == "NEGATE"
    if negate:
        for ch in _PREFERRED:
            if not any(_in_item(item, ch) for item in items[1:]):
                return ch
        raise ValueError("no character outside the class")
    op, av = items[0]
    op = str(op)
    if op == "LITERAL":
        return chr(av)
    if op == "RANGE":
        lo, hi = av
        for ch in _PREFERRED:
            if lo <= ord(ch) <= hi:
                return ch
        return chr(lo)
    if op == "CATEGORY":
        return _CATEGORY_CHAR.get(str(av), "a")
    raise ValueError(op)


def _in_item(item: Any, ch: str) -> bool:
    op, av = item
    op = str(op)
    if op == "LITERAL":
        return bool(ord(ch) == av)
    if op == "RANGE":
        return bool(av[0] <= ord(ch) <= av[1])
    if op == "CATEGORY":
        return re.fullmatch(_CATEGORY_RE.get(str(av), "."), ch) is not None
    return False


_CATEGORY_RE = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w",
                "CATEGORY_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S"}


def _gen(parsed: Any, extra: list[int], depth: int = 0) -> str:
    """A string for a parsed regex; `extra[0]` more repetitions are spread over open repeats, in order."""
    if depth > 20:
        raise ValueError("pattern too deep")
    out: list[str] = []
    for op, av in parsed:
        op = str(op)
        if op == "LITERAL":
            out.append(chr(av))
        elif op == "NOT_LITERAL":
            out.append(next(ch for ch in _PREFERRED if ord(ch) != av))
        elif op == "ANY":
            out.append("a")
        elif op == "IN":
            out.append(_class_char(list(av)))
        elif op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = av
            add = min(int(hi) - lo, extra[0])
            extra[0] -= add
            out.append("".join(_gen(sub, extra, depth + 1) for _ in range(lo + add)))
        elif op == "SUBPATTERN":
            out.append(_gen(av[-1], extra, depth + 1))
        elif op == "ATOMIC_GROUP":
            out.append(_gen(av, extra, depth + 1))
        elif op == "BRANCH":
            out.append(_gen(av[1][0], extra, depth + 1))
        elif op in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise ValueError(op)
    return "".join(out)


# --- numbers --------------------------------------------------------------------------------

def _bounds(s: Schema, integer: bool) -> tuple[float | None, float | None]:
    step = 1 if integer else 0.5
    lo = s.get("minimum")
    hi = s.get("maximum")
    ex_lo = s.get("exclusiveMinimum")
    ex_hi = s.get("exclusiveMaximum")
    if isinstance(ex_lo, (int, float)) and not isinstance(ex_lo, bool):
        cand = (math.floor(ex_lo) + 1) if integer else ex_lo + step
        lo = cand if lo is None else max(lo, cand)
    if isinstance(ex_hi, (int, float)) and not isinstance(ex_hi, bool):
        cand = (math.ceil(ex_hi) - 1) if integer else ex_hi - step
        hi = cand if hi is None else min(hi, cand)
    return lo, hi


def _integer(s: Schema) -> int:
    lo, hi = _bounds(s, integer=True)
    v = 1
    if lo is not None and v < lo:
        v = math.ceil(lo)
    if hi is not None and v > hi:
        v = math.floor(hi)
    mult = s.get("multipleOf")
    if isinstance(mult, int) and mult > 0 and v % mult:
        v = math.ceil(v / mult) * mult
        if hi is not None and v > hi:
            v -= mult
    return int(v)


def _number(s: Schema) -> float:
    lo, hi = _bounds(s, integer=False)
    v = 1.5
    if lo is not None and v < lo:
        v = float(lo)
    if hi is not None and v > hi:
        v = float(hi)
    mult = s.get("multipleOf")
    if isinstance(mult, (int, float)) and mult > 0:
        v = math.ceil(v / mult) * mult
        if hi is not None and v > hi:
            v -= mult
        v = float(round(v, 10))
    return v


# --- faults -------------------------------------------------------------------------------

def _root_object(schema: Any) -> Schema:
    root = schema if isinstance(schema, Mapping) else {}
    s = _deref(root, root)
    if isinstance(s, Mapping) and isinstance(s.get("allOf"), list):
        s = _merge_all_of(s, root)
    return s if isinstance(s, Mapping) else {}


def invent_param(value: Any, schema: Any) -> Any:
    """The value with one argument the schema does not declare."""
    props = _root_object(schema).get("properties") or {}
    key = INVENTED_PARAM
    while key in props:
        key += "_x"
    if isinstance(value, dict):
        return {**value, key: "surprise"}
    return {key: "surprise"}


def drop_required(value: Any, schema: Any) -> Any:
    """The value without its first required argument (without its first argument if none is required)."""
    if not isinstance(value, dict) or not value:
        return value
    required = [r for r in (_root_object(schema).get("required") or []) if r in value]
    victim = required[0] if required else next(iter(value))
    return {k: v for k, v in value.items() if k != victim}


_WRONG_CANDIDATES: tuple[tuple[frozenset[str], Any], ...] = (
    (frozenset({"integer", "number"}), 12345),
    (frozenset({"string"}), "mock wrong type"),
    (frozenset({"boolean"}), True),
    (frozenset({"array"}), ["mock wrong type"]),
    (frozenset({"object"}), {"mock": "wrong type"}),
)


def _allowed_types(s: Any, root: Schema, depth: int = 0) -> set[str] | None:
    """JSON types a schema accepts, or None when unknown / anything."""
    s = _deref(s, root)
    if not isinstance(s, Mapping) or depth > _MAX_DEPTH:
        return None
    if "const" in s:
        return {_json_type(s["const"])}
    if isinstance(s.get("enum"), list):
        return {_json_type(e) for e in s["enum"]}
    for key in ("anyOf", "oneOf"):
        if isinstance(s.get(key), list):
            out: set[str] = set()
            for b in s[key]:
                t = _allowed_types(b, root, depth + 1)
                if t is None:
                    return None
                out |= t
            return out
    t = s.get("type")
    if isinstance(t, list):
        return set(t)
    if isinstance(t, str):
        return {t}
    main = _main_type(s)
    return {main} if main else None


def _wrong_value(prop_schema: Any, root: Schema) -> tuple[bool, Any]:
    allowed = _allowed_types(prop_schema, root)
    if allowed is None:
        return False, None
    for types, candidate in _WRONG_CANDIDATES:
        if not (types & allowed):
            return True, candidate
    return False, None


def wrong_type(value: Any, schema: Any) -> Any:
    """The value with one argument of a type its schema does not allow (or a non-object if none can be)."""
    root = schema if isinstance(schema, Mapping) else {}
    obj = _root_object(schema)
    props = obj.get("properties") or {}
    if isinstance(value, dict):
        required = [r for r in (obj.get("required") or []) if r in value]
        order = required + [k for k in value if k not in required]
        for key in order:
            ok, bad = _wrong_value(props.get(key), root)
            if ok:
                return {**value, key: bad}
        return ["mock wrong type"]
    ok, bad = _wrong_value(obj, root)
    return bad if ok else value


def violate(value: Any, schema: Any) -> Any:
    """A value that no longer validates against `schema` (used for the `schema_violation` JSON fault)."""
    obj = _root_object(schema)
    if isinstance(value, dict):
        required = [r for r in (obj.get("required") or []) if r in value]
        if required:
            return drop_required(value, schema)
        if obj.get("additionalProperties") is False:
            return invent_param(value, schema)
        return wrong_type(value, schema)
    return wrong_type(value, schema)
