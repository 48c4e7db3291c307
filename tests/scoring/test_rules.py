"""Rule scorers: each check fires when it should and only then; reasons never quote the answer."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config._models import RuleScorer
from proxy.scoring._rules import RuleCheck, parse_json_path
from proxy.scoring._score import Score, ScoreInput, answer_text


def rule(**fields: Any) -> RuleCheck:
    config = RuleScorer.model_validate({"kind": "rule", **fields})
    config._name = "r"
    return RuleCheck(config)


def item(text: str, weight: float = 1.0) -> ScoreInput:
    return ScoreInput(record_id="rec1", request_id="req1", route="support-bot", variant="prod",
                      request={"messages": [{"role": "user", "content": "hi"}]}, answer_text=text,
                      answer=None, weight=weight)


def test_regex_fires_and_not() -> None:
    r = rule(regex=r"(?i)api[_-]?key", taxonomy="dangerous_advice")
    hit = r.score(item("Put your API_KEY in the header"))
    assert (hit.label, hit.taxonomy, hit.score, hit.kind) == ("fail", "dangerous_advice", 0.0, "rule")
    assert hit.reason is not None and "regex" in hit.reason and "API_KEY" not in hit.reason
    miss = r.score(item("Your order ships tomorrow."))
    assert (miss.label, miss.taxonomy, miss.score) == ("pass", None, 1.0)


def test_max_chars() -> None:
    r = rule(max_chars=10, taxonomy="verbose")
    assert r.score(item("x" * 10)).label == "pass"
    long = r.score(item("x" * 11))
    assert long.label == "fail" and long.taxonomy == "verbose"
    assert long.reason == "answer is 11 characters (max_chars 10)"


def test_pii_reason_names_kinds_never_the_text() -> None:
    r = rule(pii=True, taxonomy="dangerous_advice")
    secret_text = "Mail jane.doe@example.com or call (555) 123-4567, card 4111 1111 1111 1111."
    s = r.score(item(secret_text))
    assert s.label == "fail"
    assert s.reason is not None
    for kind in ("email", "phone", "card"):
        assert kind in s.reason
    everything = str(s.to_dict())
    for leaked in ("jane.doe", "example.com", "555", "4111", "1111"):
        assert leaked not in everything
    assert r.score(item("No personal data here.")).label == "pass"


def test_keywords_out_of_scope_when_none_appear() -> None:
    r = rule(keywords=["billing", "refund", "order status"], taxonomy="out_of_scope_answer")
    assert r.score(item("Your REFUND was issued.")).label == "pass"  # case-insensitive
    assert r.score(item("Check your order status here.")).label == "pass"  # a phrase
    off = r.score(item("Here is a recipe for pancakes."))
    assert off.label == "fail" and off.taxonomy == "out_of_scope_answer"
    assert off.reason is not None and "out of scope" in off.reason
    assert r.score(item("refunds are great")).label == "fail"  # whole words only
    assert r.score(item("")).label == "pass"  # an empty answer (a tool-calling turn) is not checked


def test_json_path() -> None:
    r = rule(json_path="$.order.items[0]['sku']", taxonomy="schema_violation")
    assert r.score(item('{"order": {"items": [{"sku": null}]}}')).label == "pass"  # null is present
    absent = r.score(item('{"order": {"items": []}}'))
    assert absent.label == "fail" and absent.reason == "json_path $.order.items[0]['sku'] is absent"
    not_json = r.score(item("Sure! Here it is: {"))
    assert not_json.label == "fail" and not_json.reason == "answer is not JSON"
    assert rule(json_path="$").score(item("[1, 2]")).label == "pass"
    assert rule(json_path="$[-1]").score(item("[1, 2]")).label == "pass"
    assert rule(json_path="$[2]").score(item("[1, 2]")).label == "fail"


def test_json_path_parse() -> None:
    assert parse_json_path("$.a.b[0]['c d'][\"e\"][-1]") == ("a", "b", 0, "c d", "e", -1)
    assert parse_json_path("$") == ()
    for bad, where in (("a.b", "must start"), ("$.a[*]", "position 3"), ("$..a", "position 2"),
                       ("$.a[1:2]", "position 3"), ("$.", "position 2")):
        with pytest.raises(ValueError, match=where):
            parse_json_path(bad)
    with pytest.raises(ValueError, match="json_path"):
        rule(json_path="$.a[?(@.x)]")


def test_any_check_fires_and_reason_names_each() -> None:
    r = rule(regex="forbidden", max_chars=20)
    s = r.score(item("this forbidden answer is long"))
    assert s.label == "fail"
    assert s.reason is not None and "regex" in s.reason and "max_chars" in s.reason
    only_long = r.score(item("a perfectly fine but long answer"))
    assert only_long.reason is not None and "regex" not in only_long.reason


def test_label_on_match_and_score_identity() -> None:
    r = rule(regex="thanks", label_on_match="pass")
    assert r.score(item("thanks!")).label == "pass"
    assert r.score(item("no")).label == "fail"
    s = rule(regex="x", label_on_match="flagged").score(item("x", weight=10.0))
    assert isinstance(s, Score)
    assert (s.label, s.weight, s.id, s.record_id, s.request_id, s.scorer) == ("flagged", 10.0, "rec1:r", "rec1",
                                                                              "req1", "r")
    assert s.to_dict()["id"] == "rec1:r"


def test_answer_text_shapes() -> None:
    assert answer_text(None) == ""
    assert answer_text({"choices": []}) == ""
    assert answer_text({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}) == "hi"
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}
    assert answer_text(parts) == "a\nb"
    tools = {"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "1"}'}},
        {"id": "c2", "type": "function", "function": {"name": "cancel", "arguments": "{}"}}]}}]}
    assert answer_text(tools) == 'lookup({"id": "1"})\ncancel({})'
    legacy = {"choices": [{"message": {"content": None, "function_call": {"name": "f", "arguments": "{}"}}}]}
    assert answer_text(legacy) == "f({})"
    assert answer_text({"choices": [{"text": " completion"}]}) == " completion"
    assert answer_text({"choices": [{"message": {"content": None, "refusal": "no"}}]}) == "no"


def test_score_input_from_record() -> None:
    from proxy.records._model import Record

    record = Record(id="a1", request_id="q1", attempt=1, attempt_reason="primary", endpoint="chat.completions",
                    route="support-bot", variant="prod", provider="openai", model_requested="gpt-4o",
                    started_at=0.0, retrieval_ids=["kb-1"], request={"messages": []},
                    response={"choices": [{"message": {"content": "hello"}}]})
    got = ScoreInput.from_record(record, weight=5.0)
    assert (got.record_id, got.request_id, got.route, got.variant, got.answer_text, got.retrieval_ids,
            got.weight) == ("a1", "q1", "support-bot", "prod", "hello", ("kb-1",), 5.0)
