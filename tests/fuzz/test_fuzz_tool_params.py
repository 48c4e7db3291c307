"""The `tool_params` guard on generated tool declarations and generated arguments.

- It never raises, whatever the declarations, `tool_choice` and answer (junk included); every
  finding is one of its classes.
- Arguments generated to match the declared schema pass. (They come from `from_schema` below, which
  covers the schema subset these tests declare: hypothesis-jsonschema 0.23 does not work with the
  hypothesis this suite uses.)
- The same arguments plus an undeclared key fail with `invented_tool_param` at that key's pointer
  when the schema says `additionalProperties: false` or the function is `strict: true` (and with
  `forbid_undeclared: true` for any schema); an open schema lets the key through.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.guards._chain import build_guards
from proxy.guards._result import escape
from proxy.guards.tool_params import ToolParamsGuard
from tests.fuzz._gateway import fuzz

NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)

LEAF_SCHEMA = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
              st.integers(0, 3), st.integers(0, 8)),
    st.just({"type": "integer"}),
    st.builds(lambda lo, extra: {"type": "integer", "minimum": lo, "maximum": lo + extra},
              st.integers(-100, 100), st.integers(0, 100)),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.lists(TEXT, min_size=1, max_size=4, unique=True).map(lambda values: {"type": "string", "enum": values}),
    st.just({"type": ["string", "null"]}),
)


def _object(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        props = draw(st.dictionaries(NAME, children, max_size=4))
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if props:
            schema["required"] = draw(st.lists(st.sampled_from(sorted(props)), unique=True, max_size=len(props)))
        closed = draw(st.sampled_from([None, False, True]))
        if closed is not None:
            schema["additionalProperties"] = not closed
        return schema

    return build()


SCHEMA = st.recursive(LEAF_SCHEMA, lambda inner: _object(inner)
                      | inner.map(lambda items: {"type": "array", "items": items, "maxItems": 3}), max_leaves=8)
PARAMETERS = _object(SCHEMA)


def closed(schema: Any) -> Any:
    """Every object schema with additionalProperties: false (what OpenAI's strict mode requires)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k == "items" else v for k, v in schema.items()}
    if "properties" in out:
        out["properties"] = {k: closed(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    return out


def request(name: str, parameters: Any, strict: bool | None = None, **extra: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "parameters": parameters}
    if strict is not None:
        fn["strict"] = strict
    return {"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": fn}], **extra}


def answer(name: Any, arguments: Any) -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)  # any int size
    return {"id": "c", "object": "chat.completion", "model": "m", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": name, "arguments": raw}}]}}]}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against a schema built by SCHEMA / PARAMETERS (and `closed`)."""
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == ["string", "null"]:
        return st.none() | TEXT
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 12)
        return st.text(st.characters(exclude_categories=("Cs",)), min_size=lo, max_size=hi)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=schema.get("maxItems", 3))
    assert kind == "object", schema
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                  optional={k: from_schema(v) for k, v in props.items() if k not in required})
    if schema.get("additionalProperties") is False:
        return fixed
    # open: undeclared keys are allowed, and generated now and then
    extra = st.dictionaries(NAME.filter(lambda k: k not in props), JUNK, max_size=2)
    return st.tuples(fixed, extra).map(lambda t: {**t[1], **t[0]})


ARGS_POINTER = "/choices/0/message/tool_calls/0/function/arguments"


# --------------------------------------------------------------------------- never raises

JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)
JUNK_SCHEMA = SCHEMA | JUNK | st.dictionaries(st.sampled_from(
    ["type", "properties", "required", "additionalProperties", "items", "enum", "$ref", "pattern", "anyOf",
     "minimum", "format", "$defs"]), JUNK, max_size=4)
TOOLS = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["function", "custom"]) | JUNK},
                                       optional={"function": st.fixed_dictionaries(
                                           {"name": NAME | JUNK}, optional={"parameters": JUNK_SCHEMA,
                                                                            "strict": JUNK}) | JUNK,
                                           "custom": JUNK}) | JUNK, max_size=3)
CHOICE = st.none() | st.sampled_from(["auto", "none", "required"]) | JUNK | st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "allowed_tools"])},
    optional={"function": st.fixed_dictionaries({"name": NAME | JUNK}) | JUNK, "allowed_tools": JUNK})
CALL = st.fixed_dictionaries({}, optional={"id": JUNK, "type": st.sampled_from(["function", "custom"]) | JUNK,
                                           "function": st.fixed_dictionaries({}, optional={
                                               "name": NAME | JUNK, "arguments": TEXT | JUNK.map(
                                                   lambda v: json.dumps(v)) | JUNK}) | JUNK,
                                           "custom": JUNK}) | JUNK
MESSAGE = st.fixed_dictionaries({}, optional={"role": JUNK, "content": JUNK, "tool_calls": st.lists(CALL, max_size=3)
                                              | JUNK, "function_call": JUNK}) | JUNK
ANSWER = st.fixed_dictionaries({}, optional={"choices": st.lists(st.fixed_dictionaries(
    {}, optional={"message": MESSAGE, "finish_reason": JUNK, "text": JUNK}) | JUNK, max_size=2) | JUNK}) | JUNK


@fuzz(200)
@given(tools=TOOLS | JUNK, choice=CHOICE, functions=st.none() | JUNK, answer_=ANSWER,
       forbid=st.booleans(), max_errors=st.integers(1, 60))
def test_never_raises(tools: Any, choice: Any, functions: Any, answer_: Any, forbid: bool, max_errors: int) -> None:
    req: dict[str, Any] = {"model": "m", "messages": [], "tools": tools}
    if choice is not None:
        req["tool_choice"] = choice
    if functions is not None:
        req["functions"] = functions
    guard = ToolParamsGuard(forbid_undeclared=forbid, max_errors=max_errors)
    results = guard.check(req, answer_)
    assert len(results) <= max_errors
    for result in results:
        assert result.taxonomy in ToolParamsGuard.classes and result.detail and result.pointer.startswith("/")
    # and through the chain, as the gateway runs it (a crash there would be a `guard_error`)
    chain = build_guards([{"tool_params": {"forbid_undeclared": forbid}}], {})
    chained = chain.run(req, answer_ if isinstance(answer_, dict) else {"choices": answer_})
    assert all(r.taxonomy != "guard_error" for r in chained), [r.detail for r in chained]


# --------------------------------------------------------------------------- valid and invented


@fuzz(150)
@given(name=NAME, parameters=PARAMETERS, strict=st.sampled_from([None, False, True]), forbid=st.booleans(),
       data=st.data())
def test_arguments_that_match_the_schema_pass(name: str, parameters: dict[str, Any], strict: bool | None,
                                              forbid: bool, data: Any) -> None:
    schema = closed(parameters) if strict or forbid else parameters
    arguments = data.draw(from_schema(schema), label="arguments")
    results = ToolParamsGuard(forbid_undeclared=forbid).check(request(name, parameters, strict), answer(name, arguments))
    assert results == [], [r.detail for r in results]


@fuzz(150)
@given(name=NAME, parameters=PARAMETERS, how=st.sampled_from(["additionalProperties", "strict", "forbid", "open"]),
       extra=st.from_regex(r"[a-z_]{1,10}", fullmatch=True) | TEXT.filter(bool), value=JUNK, data=st.data())
def test_an_undeclared_key_is_an_invented_param_where_the_schema_is_closed(
        name: str, parameters: dict[str, Any], how: str, extra: str, value: Any, data: Any) -> None:
    assume(extra not in parameters["properties"])
    params = dict(parameters)
    if how == "additionalProperties":
        params["additionalProperties"] = False
    else:  # strict and forbid_undeclared close a schema that says nothing about extra properties
        params.pop("additionalProperties", None)
    strict = True if how == "strict" else None
    forbid = how == "forbid"
    valid = data.draw(from_schema(closed(params) if how in ("strict", "forbid") else params), label="arguments")
    arguments = {**valid, extra: value}
    results = ToolParamsGuard(forbid_undeclared=forbid).check(request(name, params, strict), answer(name, arguments))
    invented = [r for r in results if r.taxonomy == "invented_tool_param"]
    if how == "open":
        assert results == [], [r.detail for r in results]
        return
    assert [r.pointer for r in invented] == [f"{ARGS_POINTER}/{escape(extra)}"], [r.detail for r in results]
    assert extra in invented[0].detail
    assert all(r.taxonomy == "invented_tool_param" for r in results), [r.detail for r in results]


@fuzz(100)
@given(name=NAME, parameters=PARAMETERS, data=st.data())
def test_a_tool_that_was_not_declared_is_an_unknown_tool(name: str, parameters: dict[str, Any], data: Any) -> None:
    arguments = data.draw(from_schema(parameters), label="arguments")
    results = ToolParamsGuard().check(request(name, parameters), answer(name + "_other", arguments))
    assert [r.taxonomy for r in results] == ["unknown_tool"]
