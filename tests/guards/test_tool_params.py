"""Table-driven cases for the tool_params guard: exact class and pointer of every finding."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.assembly import StreamAssembler
from proxy.guards import build_guards
from proxy.guards.tool_params import ToolParamsGuard
from tests.guards._helpers import NOARGS, TOOLS, WEATHER, answer_calls, answer_text, call, found, tool

A = "/choices/0/message/tool_calls/{}/function/arguments"
N = "/choices/0/message/tool_calls/{}/function/name"
REQ = {"model": "m", "messages": [], "tools": TOOLS}


def a(j: int, *path: str) -> str:
    return A.format(j) + "".join("/" + p for p in path)


# (id, request overrides, answer, expected [(class, pointer)], guard options)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[tuple[str, str]], dict[str, Any]]] = [
    ("valid_simple", {}, answer_calls(call("get_weather", {"city": "Paris", "units": "celsius"})), [], {}),
    ("valid_nested", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low", "tags": ["a"],
                                                               "contact": {"email": "e", "address": {"city": "c"}},
                                                               "items": [{"sku": "x", "qty": 1}]})), [], {}),
    ("valid_no_calls", {}, answer_text("hello"), [], {}),
    ("valid_empty_args_noargs_tool", {}, answer_calls(call("ping", "")), [], {}),
    ("invented_param_closed", {}, answer_calls(call("get_weather", {"city": "Paris", "country": "FR"})),
     [("invented_tool_param", a(0, "country"))], {}),
    ("two_invented_params", {}, answer_calls(call("get_weather", {"city": "P", "country": "FR", "lang": "fr"})),
     [("invented_tool_param", a(0, "country")), ("invented_tool_param", a(0, "lang"))], {}),
    ("invented_param_open_schema_allowed", {}, answer_calls(call("search", {"query": "q", "extra": 1})), [], {}),
    ("invented_param_open_schema_forbid_undeclared", {}, answer_calls(call("search", {"query": "q", "extra": 1})),
     [("invented_tool_param", a(0, "extra"))], {"forbid_undeclared": True}),
    ("invented_param_strict", {}, answer_calls(call("refund", {"order_id": "o", "amount": 3, "note": "x"})),
     [("invented_tool_param", a(0, "note"))], {}),
    ("invented_nested_param", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low",
                                                                       "contact": {"email": "e", "fax": "1"}})),
     [("invented_tool_param", a(0, "contact", "fax"))], {}),
    ("invented_deeply_nested_param", {}, answer_calls(call("create_ticket", {
        "title": "t", "priority": "low", "contact": {"email": "e", "address": {"city": "c", "street": "s"}}})),
     [("invented_tool_param", a(0, "contact", "address", "street"))], {}),
    ("invented_param_in_array_item", {}, answer_calls(call("create_ticket", {
        "title": "t", "priority": "low", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2, "color": "red"}]})),
     [("invented_tool_param", a(0, "items", "1", "color"))], {}),
    ("missing_required", {}, answer_calls(call("get_weather", {"units": "celsius"})),
     [("missing_required_param", a(0, "city"))], {}),
    ("missing_two_required", {}, answer_calls(call("create_ticket", {"tags": []})),
     [("missing_required_param", a(0, "title")), ("missing_required_param", a(0, "priority"))], {}),
    ("missing_required_nested", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low", "contact": {}})),
     [("missing_required_param", a(0, "contact", "email"))], {}),
    ("missing_required_in_array_item", {}, answer_calls(call("create_ticket", {
        "title": "t", "priority": "low", "items": [{"sku": "a"}]})),
     [("missing_required_param", a(0, "items", "0", "qty"))], {}),
    ("empty_args_missing_required", {}, answer_calls(call("get_weather", "")),
     [("missing_required_param", a(0, "city"))], {}),
    ("wrong_type_string_for_int", {}, answer_calls(call("get_weather", {"city": "P", "days": "3"})),
     [("wrong_param_type", a(0, "days"))], {}),
    ("wrong_type_int_for_string", {}, answer_calls(call("get_weather", {"city": 7})),
     [("wrong_param_type", a(0, "city"))], {}),
    ("wrong_type_array_element", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low", "tags": ["a", 2]})),
     [("wrong_param_type", a(0, "tags", "1"))], {}),
    ("wrong_type_object_for_array", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low", "tags": {"a": 1}})),
     [("wrong_param_type", a(0, "tags"))], {}),
    ("wrong_type_nested", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low",
                                                                    "contact": {"email": "e", "address": {"city": 5}}})),
     [("wrong_param_type", a(0, "contact", "address", "city"))], {}),
    ("enum_violation", {}, answer_calls(call("get_weather", {"city": "P", "units": "kelvin"})),
     [("enum_violation", a(0, "units"))], {}),
    ("other_schema_error_maximum", {}, answer_calls(call("get_weather", {"city": "P", "days": 40})),
     [("tool_schema_violation", a(0, "days"))], {}),
    ("other_schema_error_max_items", {}, answer_calls(call("create_ticket", {"title": "t", "priority": "low",
                                                                               "tags": ["a", "b", "c", "d"]})),
     [("tool_schema_violation", a(0, "tags"))], {}),
    ("all_errors_reported", {}, answer_calls(call("create_ticket", {"priority": "mid", "tags": [1], "contact": {"email": 2},
                                                                      "x": 1})),
     [("missing_required_param", a(0, "title")), ("enum_violation", a(0, "priority")),
      ("wrong_param_type", a(0, "tags", "0")), ("wrong_param_type", a(0, "contact", "email")),
      ("invented_tool_param", a(0, "x"))], {}),
    ("unparseable_arguments", {}, answer_calls(call("get_weather", '{"city": "Par')),
     [("invalid_tool_arguments", a(0))], {}),
    ("arguments_not_object", {}, answer_calls(call("get_weather", '["Paris"]')),
     [("invalid_tool_arguments", a(0))], {}),
    ("unknown_tool", {}, answer_calls(call("get_wether", {"city": "P"})), [("unknown_tool", N.format(0))], {}),
    ("unknown_tool_no_tools_declared", {"tools": None}, answer_calls(call("get_weather", {"city": "P"})),
     [("unknown_tool", N.format(0))], {}),
    ("parallel_calls_all_valid", {}, answer_calls(call("get_weather", {"city": "P"}, 0), call("search", {"query": "q"}, 1)),
     [], {}),
    ("parallel_calls_second_bad", {}, answer_calls(call("get_weather", {"city": "P"}, 0), call("get_weather", {"town": "Q"}, 1)),
     [("invented_tool_param", a(1, "town")), ("missing_required_param", a(1, "city"))], {}),
    ("parallel_calls_each_bad", {}, answer_calls(call("nope", {}, 0), call("get_weather", "{", 1),
                                                  call("refund", {"order_id": 1, "amount": 2}, 2)),
     [("unknown_tool", N.format(0)), ("invalid_tool_arguments", a(1)), ("wrong_param_type", a(2, "order_id"))], {}),
    ("tool_choice_required_no_call", {"tool_choice": "required"}, answer_text("I think it is sunny."),
     [("tool_choice_ignored", "/choices/0/message")], {}),
    ("tool_choice_required_called", {"tool_choice": "required"}, answer_calls(call("get_weather", {"city": "P"})), [], {}),
    ("tool_choice_none_but_called", {"tool_choice": "none"}, answer_calls(call("get_weather", {"city": "P"})),
     [("tool_choice_ignored", "/choices/0/message/tool_calls/0/function")], {}),
    ("tool_choice_named_other_called", {"tool_choice": {"type": "function", "function": {"name": "search"}}},
     answer_calls(call("get_weather", {"city": "P"})),
     [("tool_choice_ignored", "/choices/0/message"), ("tool_choice_ignored", N.format(0))], {}),
    ("tool_choice_named_called", {"tool_choice": {"type": "function", "function": {"name": "search"}}},
     answer_calls(call("search", {"query": "q"})), [], {}),
    ("tool_choice_named_no_call", {"tool_choice": {"type": "function", "function": {"name": "search"}}},
     answer_text("no"), [("tool_choice_ignored", "/choices/0/message")], {}),
    ("tool_choice_auto_no_call", {"tool_choice": "auto"}, answer_text("hi"), [], {}),
    ("allowed_tools_outside", {"tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "search"}}]}}},
     answer_calls(call("get_weather", {"city": "P"})), [("tool_choice_ignored", N.format(0))], {}),
    ("unusable_tool_schema", {"tools": [tool("bad", params={"type": "objekt"})]}, answer_calls(call("bad", {})),
     [("unusable_schema", a(0))], {}),
]


@pytest.mark.parametrize("case_id,overrides,answer,expected,options", CASES, ids=[c[0] for c in CASES])
def test_tool_params_table(case_id: str, overrides: dict[str, Any], answer: dict[str, Any],
                           expected: list[tuple[str, str]], options: dict[str, Any]) -> None:
    request = {**REQ, **overrides}
    results = ToolParamsGuard.from_options(options or None).check(request, answer)
    assert sorted(found(results)) == sorted(expected)
    for r in results:
        assert r.guard == "tool_params" and r.passed is False and r.detail


# --- legacy functions / function_call ------------------------------------------------------------------

LEGACY_FUNCTIONS = [WEATHER["function"], NOARGS["function"]]
FC = "/choices/0/message/function_call"


def _legacy_answer(name: str, args: str) -> dict[str, Any]:
    return answer_text(None, finish="function_call", function_call={"name": name, "arguments": args})


LEGACY_CASES = [
    ("legacy_valid", {}, _legacy_answer("get_weather", '{"city": "P"}'), []),
    ("legacy_invented", {}, _legacy_answer("get_weather", '{"city": "P", "zip": "1"}'),
     [("invented_tool_param", FC + "/arguments/zip")]),
    ("legacy_missing", {}, _legacy_answer("get_weather", "{}"), [("missing_required_param", FC + "/arguments/city")]),
    ("legacy_unknown", {}, _legacy_answer("weather", "{}"), [("unknown_tool", FC + "/name")]),
    ("legacy_bad_json", {}, _legacy_answer("get_weather", "{city:"), [("invalid_tool_arguments", FC + "/arguments")]),
    ("legacy_named_ignored", {"function_call": {"name": "ping"}}, _legacy_answer("get_weather", '{"city": "P"}'),
     [("tool_choice_ignored", "/choices/0/message"), ("tool_choice_ignored", FC + "/name")]),
    ("legacy_none_ignored", {"function_call": "none"}, _legacy_answer("ping", "{}"), [("tool_choice_ignored", FC)]),
]


@pytest.mark.parametrize("case_id,overrides,answer,expected", LEGACY_CASES, ids=[c[0] for c in LEGACY_CASES])
def test_legacy_functions(case_id: str, overrides: dict[str, Any], answer: dict[str, Any],
                          expected: list[tuple[str, str]]) -> None:
    request = {"model": "m", "messages": [], "functions": LEGACY_FUNCTIONS, **overrides}
    assert sorted(found(ToolParamsGuard().check(request, answer))) == sorted(expected)


# --- streamed tool-call deltas --------------------------------------------------------------------------

def _chunks(calls: list[tuple[str, str]], pieces: int = 4) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}])]
    for index, (name, args) in enumerate(calls):
        out.append(dict(base, choices=[{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
            {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name, "arguments": ""}}]}}]))
        step = max(1, len(args) // pieces)
        for k in range(0, len(args), step):
            out.append(dict(base, choices=[{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
                {"index": index, "function": {"arguments": args[k:k + step]}}]}}]))
    out.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    return out


@pytest.mark.parametrize("calls,expected", [
    ([("get_weather", '{"city": "Paris", "units": "celsius"}')], []),
    ([("get_weather", '{"city": "Paris", "country": "FR"}'), ("create_ticket", '{"title": "t", "priority": "urgent"}')],
     [("invented_tool_param", a(0, "country")), ("enum_violation", a(1, "priority"))]),
    ([("search", '{"query": "q"}'), ("refund", '{"order_id": "o"')], [("invalid_tool_arguments", a(1))]),
], ids=["stream_valid", "stream_parallel_faults", "stream_truncated_args"])
def test_streamed_tool_calls_assembled(calls: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    assembler = StreamAssembler()
    for chunk in _chunks(calls):
        assembler.add(chunk)
    answer = assembler.result()
    assert [c["function"]["arguments"] for c in answer["choices"][0]["message"]["tool_calls"]] == [x for _, x in calls]
    assert sorted(found(build_guards(["tool_params"]).run(REQ, answer))) == sorted(expected)


def test_interleaved_stream_deltas_by_index() -> None:
    base = {"id": "s", "object": "chat.completion.chunk", "model": "m"}
    deltas = [
        {"index": 0, "id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}},
        {"index": 1, "id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"query"'}},
        {"index": 0, "function": {"arguments": 'ty": 3}'}},
        {"index": 1, "function": {"arguments": ': "q"}'}},
    ]
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(dict(base, choices=[{"index": 0, "delta": {"tool_calls": [d]}, "finish_reason": None}]))
    results = ToolParamsGuard().check(REQ, assembler.result())
    assert found(results) == [("wrong_param_type", a(0, "city"))]


def test_details_name_tool_param_and_expectation() -> None:
    answer = answer_calls(call("get_weather", {"city": "P", "units": "kelvin", "days": "3", "zip": 1}))
    details = {r.taxonomy: r.detail for r in ToolParamsGuard().check(REQ, answer)}
    assert "get_weather" in details["enum_violation"] and "'units'" in details["enum_violation"]
    assert "celsius" in details["enum_violation"] and "kelvin" in details["enum_violation"]
    assert "'days' must be integer, got string" in details["wrong_param_type"]
    assert "'zip' is not declared" in details["invented_tool_param"] and "declared: city, days, units" in details["invented_tool_param"]


def test_multiple_choices_each_checked() -> None:
    answer = answer_calls(call("get_weather", {"city": "P"}))
    answer["choices"].append({"index": 1, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [call("get_weather", {})]}})
    assert found(ToolParamsGuard().check(REQ, answer)) == [
        ("missing_required_param", "/choices/1/message/tool_calls/0/function/arguments/city")]


def test_json_pointer_escaping() -> None:
    request = {"tools": [tool("t", {"a/b": {"type": "string"}, "c~d": {"type": "string"}})]}
    answer = answer_calls(call("t", {"a/b": 1, "c~d": 2}))
    assert sorted(found(ToolParamsGuard().check(request, answer))) == [
        ("wrong_param_type", a(0, "a~1b")), ("wrong_param_type", a(0, "c~0d"))]


def test_max_errors_caps_results() -> None:
    props = {f"p{i}": {"type": "integer"} for i in range(30)}
    request = {"tools": [tool("t", props)]}
    answer = answer_calls(call("t", {f"p{i}": "x" for i in range(30)}))
    assert len(ToolParamsGuard(max_errors=5).check(request, answer)) == 5
    assert len(ToolParamsGuard().check(request, answer)) == 30


def test_remote_ref_not_fetched() -> None:
    request = {"tools": [tool("t", params={"$ref": "http://127.0.0.1:9/schema.json"})]}
    results = ToolParamsGuard().check(request, answer_calls(call("t", {})))
    assert found(results) == [("unusable_schema", a(0))]


def test_table_has_at_least_40_cases_with_json_schema() -> None:
    from tests.guards.test_json_schema import CASES as JSON_CASES
    assert len(CASES) + len(LEGACY_CASES) + len(JSON_CASES) >= 40
