"""max_chars, regex_deny, regex_require, refusal, out_of_scope, finish_reason."""

from __future__ import annotations

from proxy.guards import build_guards
from proxy.guards.finish_reason import FinishReasonGuard
from proxy.guards.max_chars import MaxCharsGuard
from proxy.guards.out_of_scope import OutOfScopeGuard
from proxy.guards.refusal import RefusalGuard
from proxy.guards.regex import RegexDenyGuard, RegexRequireGuard
from tests.guards._helpers import answer_calls, answer_text, call, found

C = "/choices/0/message/content"
REQ: dict = {"model": "m", "messages": []}


def test_max_chars() -> None:
    g = MaxCharsGuard.from_options(10)
    assert g.check(REQ, answer_text("x" * 10)) == []
    [r] = g.check(REQ, answer_text("x" * 11))
    assert (r.taxonomy, r.pointer) == ("verbose", C) and "11 characters" in r.detail and "10" in r.detail
    assert g.check(REQ, answer_calls(call("f", {}))) == []
    assert MaxCharsGuard.from_options({"limit": 3, "taxonomy": "too_long"}).check(REQ, answer_text("abcd"))[0].taxonomy == "too_long"


def test_max_chars_text_completion() -> None:
    answer = {"object": "text_completion", "choices": [{"index": 0, "text": "abcdef", "finish_reason": "stop"}]}
    assert found(MaxCharsGuard(5).check(REQ, answer)) == [("verbose", "/choices/0/text")]


def test_regex_deny() -> None:
    g = RegexDenyGuard.from_options(["(?i)api[_-]?key", "BEGIN PRIVATE KEY"])
    assert g.check(REQ, answer_text("all fine")) == []
    results = g.check(REQ, answer_text("your API_KEY is ... -----BEGIN PRIVATE KEY-----"))
    assert found(results) == [("forbidden_content", C), ("forbidden_content", C)]
    assert "API_KEY" in results[0].detail
    g2 = RegexDenyGuard.from_options({"patterns": ["secret"], "taxonomy": "dangerous_advice", "ignore_case": True})
    assert found(g2.check(REQ, answer_text("A SECRET"))) == [("dangerous_advice", C)]


def test_regex_require() -> None:
    g = RegexRequireGuard.from_options({"patterns": [r"\[\d+\]", "Sources:"]})
    assert g.check(REQ, answer_text("see [1]. Sources: x")) == []
    results = g.check(REQ, answer_text("see [1]."))
    assert found(results) == [("missing_required_content", C)] and "Sources:" in results[0].detail
    anyg = RegexRequireGuard.from_options({"patterns": ["a", "b"], "mode": "any"})
    assert anyg.check(REQ, answer_text("b")) == []
    assert len(anyg.check(REQ, answer_text("c"))) == 1
    assert g.check(REQ, answer_calls(call("f", {}))) == []  # tool-calling turn


def test_refusal_field_and_phrases() -> None:
    g = RefusalGuard.from_options(None)
    assert found(g.check(REQ, answer_text(None, refusal="I can't do that"))) == [("unexpected_refusal", "/choices/0/message/refusal")]
    assert found(g.check(REQ, answer_text("I\u2019m sorry, but I can\u2019t help with that request."))) == [("unexpected_refusal", C)]
    assert g.check(REQ, answer_text("Sure, here is how to reset your password.")) == []
    long = "Here is a long helpful answer. " * 20 + "I cannot help with anything else."
    assert g.check(REQ, answer_text(long)) == []  # outside the window
    custom = RefusalGuard.from_options({"phrases": ["please contact support"], "taxonomy": "deflection"})
    assert found(custom.check(REQ, answer_text("Please contact support."))) == [("deflection", C)]
    assert custom.check(REQ, answer_text("I cannot help with that")) == []
    extra = RefusalGuard.from_options({"extra_phrases": ["not my department"]})
    assert len(extra.check(REQ, answer_text("That is not my department."))) == 1


def test_out_of_scope() -> None:
    g = OutOfScopeGuard.from_options(["billing", "invoice", "refund policy"])
    assert g.check(REQ, answer_text("Your invoice was sent.")) == []
    assert g.check(REQ, answer_text("Our Refund Policy allows 30 days.")) == []
    [r] = g.check(REQ, answer_text("Here is a poem about the sea."))
    assert (r.taxonomy, r.pointer) == ("out_of_scope_answer", C) and "billing" in r.detail
    assert g.check(REQ, answer_text("rebilling")) != []  # whole words only
    assert g.check(REQ, answer_calls(call("f", {}))) == []
    two = OutOfScopeGuard.from_options({"keywords": ["billing", "invoice"], "min_matches": 2})
    assert len(two.check(REQ, answer_text("billing only"))) == 1


def test_finish_reason() -> None:
    g = FinishReasonGuard.from_options(None)
    assert g.check(REQ, answer_text("ok")) == []
    assert found(g.check(REQ, answer_text("cut", finish="length"))) == [("truncated_output", "/choices/0/finish_reason")]
    assert found(g.check(REQ, answer_text("", finish="content_filter"))) == [("content_filtered", "/choices/0/finish_reason")]


def test_chain_fills_severity_and_combines() -> None:
    chain = build_guards(["finish_reason", {"max_chars": 3}, {"regex_deny": {"patterns": ["x"], "taxonomy": "dangerous_advice"}}],
                         {"verbose": {"severity": "major"}, "dangerous_advice": {"severity": "critical"}})
    results = chain.run(REQ, answer_text("xxxxx", finish="length"))
    assert [(r.guard, r.taxonomy, r.severity) for r in results] == [
        ("finish_reason", "truncated_output", "major"), ("max_chars", "verbose", "major"),
        ("regex_deny", "dangerous_advice", "critical")]
    assert chain.run(REQ, answer_text("ok")) == []
