"""Table-driven cases for the json_schema guard: exact class and pointer of every finding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.guards import build_guards
from proxy.guards.json_schema import JsonSchemaGuard
from tests.guards._helpers import answer_calls, answer_text, call, found

C = "/choices/0/message/content"
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "label": {"enum": ["pass", "fail"]},
        "citations": {"type": "array", "items": {
            "type": "object", "properties": {"doc": {"type": "string"}, "page": {"type": "integer"}},
            "required": ["doc"], "additionalProperties": False}},
        "meta": {"type": "object", "properties": {"lang": {"type": "string"}}, "required": ["lang"]},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
JS = {"response_format": {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": SCHEMA}}}
JO = {"response_format": {"type": "json_object"}}
NONE: dict[str, Any] = {}


def j(value: Any) -> str:
    return orjson.dumps(value).decode()


GOOD = {"answer": "ok", "confidence": 0.5}

# (id, request, content (str) or a whole answer (dict), expected, options)
CASES: list[tuple[str, dict[str, Any], Any, list[tuple[str, str]], dict[str, Any]]] = [
    ("valid", JS, j(GOOD), [], {}),
    ("valid_full", JS, j({**GOOD, "label": "pass", "citations": [{"doc": "a", "page": 1}], "meta": {"lang": "en"}}), [], {}),
    ("valid_whitespace_around", JS, "\n  " + j(GOOD) + "\n", [], {}),
    ("no_response_format_not_checked", NONE, "not json at all", [], {}),
    ("text_format_not_checked", {"response_format": {"type": "text"}}, "plain", [], {}),
    ("invalid_json", JS, '{"answer": "ok", "confidence": 0.', [("invalid_json_output", C)], {}),
    ("empty_content", JS, "", [("invalid_json_output", C)], {}),
    ("prose_instead_of_json", JS, "Sure! Here is the answer.", [("invalid_json_output", C)], {}),
    ("missing_required", JS, j({"answer": "ok"}), [("schema_violation", C + "/confidence")], {}),
    ("additional_property", JS, j({**GOOD, "extra": 1}), [("schema_violation", C + "/extra")], {}),
    ("wrong_type", JS, j({"answer": 3, "confidence": 0.5}), [("schema_violation", C + "/answer")], {}),
    ("enum", JS, j({**GOOD, "label": "maybe"}), [("schema_violation", C + "/label")], {}),
    ("maximum", JS, j({"answer": "a", "confidence": 1.5}), [("schema_violation", C + "/confidence")], {}),
    ("nested_array_item_type", JS, j({**GOOD, "citations": [{"doc": "a"}, {"doc": "b", "page": "2"}]}),
     [("schema_violation", C + "/citations/1/page")], {}),
    ("nested_array_item_missing", JS, j({**GOOD, "citations": [{"page": 1}]}),
     [("schema_violation", C + "/citations/0/doc")], {}),
    ("nested_object_missing", JS, j({**GOOD, "meta": {}}), [("schema_violation", C + "/meta/lang")], {}),
    ("all_errors_reported", JS, j({"answer": 1, "label": "x", "citations": [{"doc": 2, "zz": 0}], "extra": True}),
     [("schema_violation", C + "/confidence"), ("schema_violation", C + "/answer"), ("schema_violation", C + "/label"),
      ("schema_violation", C + "/citations/0/doc"), ("schema_violation", C + "/citations/0/zz"),
      ("schema_violation", C + "/extra")], {}),
    ("root_not_object", JS, j([1, 2]), [("schema_violation", C)], {}),
    ("fenced_rejected", JS, "```json\n" + j(GOOD) + "\n```", [("schema_fenced_output", C)], {}),
    ("fenced_no_language_rejected", JS, "```\n" + j(GOOD) + "\n```", [("schema_fenced_output", C)], {}),
    ("fenced_allowed", JS, "```json\n" + j(GOOD) + "\n```", [], {"allow_fences": True}),
    ("fenced_allowed_still_validated", JS, "```json\n" + j({"answer": "a"}) + "\n```",
     [("schema_violation", C + "/confidence")], {"allow_fences": True}),
    ("fenced_and_violating", JS, "```json\n" + j({"answer": "a"}) + "\n```",
     [("schema_fenced_output", C), ("schema_violation", C + "/confidence")], {}),
    ("fenced_invalid_inside", JS, "```json\n{\"answer\": \n```", [("schema_fenced_output", C), ("invalid_json_output", C)], {}),
    ("json_object_valid", JO, j({"anything": [1]}), [], {}),
    ("json_object_array", JO, "[1, 2]", [("schema_violation", C)], {}),
    ("json_object_invalid", JO, "{'single': 'quotes'}", [("invalid_json_output", C)], {}),
    ("json_object_fenced", JO, "```json\n{}\n```", [("schema_fenced_output", C)], {}),
    ("tool_call_answer_not_checked", JS, answer_calls(call("f", {})), [], {}),
    ("refusal_not_checked", JS, answer_text(None, refusal="I can't help with that."), [], {}),
    ("unusable_schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     j(GOOD), [("unusable_schema", C)], {}),
    ("text_completion_shape", JO, {"object": "text_completion", "choices": [{"index": 0, "text": "[]", "finish_reason": "stop"}]},
     [("schema_violation", "/choices/0/text")], {}),
    ("content_parts", JS, answer_text([{"type": "text", "text": '{"answer": "a",'}, {"type": "text", "text": '"confidence": 2}'}]),
     [("schema_violation", C + "/confidence")], {}),
]


@pytest.mark.parametrize("case_id,request_body,content,expected,options", CASES, ids=[c[0] for c in CASES])
def test_json_schema_table(case_id: str, request_body: dict[str, Any], content: Any, expected: list[tuple[str, str]],
                           options: dict[str, Any]) -> None:
    answer = content if isinstance(content, dict) else answer_text(content)
    results = JsonSchemaGuard.from_options(options or None).check(request_body, answer)
    assert sorted(found(results)) == sorted(expected)
    for r in results:
        assert r.guard == "json_schema" and not r.passed and r.detail


def test_details_are_actionable() -> None:
    answer = answer_text(j({"answer": 1, "confidence": 0.1, "label": "x", "citations": [{"doc": "d", "zz": 0}]}))
    details = [r.detail for r in JsonSchemaGuard().check(JS, answer)]
    assert any("'answer' must be string, got integer 1" in d for d in details)
    assert any("'label' must be one of" in d and "pass" in d for d in details)
    assert any("'citations[0].zz' is not allowed (declared: doc, page)" in d for d in details)
    assert all(d.startswith("schema 'reply'") for d in details)


def test_content_parsed_once_for_all_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    import proxy.guards._context as context

    calls = []
    real = context.orjson.loads

    class Spy:
        JSONDecodeError = orjson.JSONDecodeError
        dumps = staticmethod(orjson.dumps)

        @staticmethod
        def loads(text: Any) -> Any:
            calls.append(text)
            return real(text)

    monkeypatch.setattr(context, "orjson", Spy)
    chain = build_guards([{"json_schema": {"allow_fences": False}}, {"json_schema": {"allow_fences": True}}, "tool_params"])
    chain.run(JS, answer_text(j(GOOD)))
    assert len(calls) == 1


def test_schema_compiled_once() -> None:
    from proxy.guards import SCHEMAS

    schema = {"type": "object", "properties": {"unique_for_this_test": {"type": "string"}}}
    request = {"response_format": {"type": "json_schema", "json_schema": {"name": "u", "schema": schema}}}
    before = SCHEMAS.misses
    for _ in range(5):
        JsonSchemaGuard().check({**request}, answer_text("{}"))
    # the same schema content in a new dict object is a cache hit
    JsonSchemaGuard().check(orjson.loads(orjson.dumps(request)), answer_text("{}"))
    assert SCHEMAS.misses == before + 1
