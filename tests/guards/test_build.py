"""build_guards, GUARD_NAMES, DEFAULT_TAXONOMY, guard_classes, policies/taxonomy/default.yaml."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from proxy.guards import DEFAULT_TAXONOMY, GUARD_NAMES, GuardChain, GuardResult, build_guards, guard_classes
from tests.guards._helpers import answer_text

ROOT = Path(__file__).resolve().parents[2]


def test_names() -> None:
    assert set(GUARD_NAMES) == {"json_schema", "tool_params", "max_chars", "regex_deny", "regex_require", "refusal",
                                "out_of_scope", "finish_reason"}


@pytest.mark.parametrize("specs,message", [
    (["nope"], "guards[0]: unknown guard 'nope' (known: json_schema"),
    (["json_schema", {"max_char": 4}], "guards[1]: unknown guard 'max_char'"),
    ([{"max_chars": 1, "json_schema": None}], "one-key mapping"),
    ([3], "one-key mapping"),
    (["max_chars"], "needs a limit"),
    ([{"max_chars": "4000"}], "limit must be an integer >= 1, got '4000'"),
    ([{"max_chars": 0}], "limit must be an integer >= 1"),
    ([{"json_schema": {"allow_fence": True}}], "unknown option(s) allow_fence (allowed: allow_fences, max_errors)"),
    ([{"json_schema": {"allow_fences": "yes"}}], "allow_fences must be true or false"),
    ([{"tool_params": {"forbid_undeclared": 1}}], "forbid_undeclared must be true or false"),
    ([{"regex_deny": ["("]}], "pattern '(' does not compile"),
    (["regex_deny"], "needs patterns"),
    ([{"regex_require": {"patterns": ["a"], "mode": "some"}}], "mode must be 'all' or 'any'"),
    ([{"regex_deny": {"patterns": ["a"], "taxonomy": "two words"}}], "option taxonomy must be a class name"),
    ([{"out_of_scope": []}], "keywords must not be empty"),
    (["out_of_scope"], "needs the allowed topic keywords"),
    ([{"finish_reason": {"x": 1}}], "unknown option(s) x"),
    ([{"tool_params": 5}], "options must be a mapping"),
])
def test_build_errors(specs: list, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build_guards(specs)
    assert message in str(info.value)


def test_build_all_with_options() -> None:
    chain = build_guards(["json_schema", "tool_params", {"max_chars": 4000}, {"regex_deny": ["x"]},
                          {"regex_require": {"patterns": ["y"]}}, "refusal", {"out_of_scope": ["billing"]},
                          "finish_reason", {"json_schema": {"allow_fences": True}}, {"tool_params": None}])
    assert isinstance(chain, GuardChain) and len(chain) == 10
    assert chain.names[:2] == ("json_schema", "tool_params")
    assert build_guards([]).run({}, answer_text("x")) == [] and not build_guards(None)


def test_guard_classes_cover_default_taxonomy() -> None:
    emitted = set()
    for name in GUARD_NAMES:
        classes = guard_classes(name)
        assert classes and classes <= set(DEFAULT_TAXONOMY), name
        emitted |= classes
    assert emitted == set(DEFAULT_TAXONOMY) - {"guard_error"}
    assert guard_classes("finish_reason") == {"truncated_output", "content_filtered"}
    assert "invented_tool_param" in guard_classes("tool_params")
    assert guard_classes({"regex_deny": {"patterns": ["x"], "taxonomy": "dangerous_advice"}}) == {"dangerous_advice"}
    assert guard_classes({"max_chars": 10}) == {"verbose"}
    with pytest.raises(ValueError, match="unknown guard"):
        guard_classes("nope")


def test_taxonomy_file_matches_default() -> None:
    data = yaml.safe_load((ROOT / "policies" / "taxonomy" / "default.yaml").read_text())["taxonomy"]
    assert {k: v["severity"] for k, v in data.items()} == DEFAULT_TAXONOMY
    assert all(v["description"] for v in data.values())
    assert set(DEFAULT_TAXONOMY.values()) <= {"critical", "major", "minor"}


def test_taxonomy_accepts_policy_objects_and_strings() -> None:
    for taxonomy in ({"verbose": "critical"}, {"verbose": SimpleNamespace(severity="critical")},
                     {"verbose": {"severity": "critical"}}):
        [r] = build_guards([{"max_chars": 1}], taxonomy).run({}, answer_text("ab"))
        assert r.severity == "critical"
    [r] = build_guards([{"regex_deny": {"patterns": ["a"], "taxonomy": "custom"}}], {}).run({}, answer_text("a"))
    assert r.severity == "major"  # unknown to both taxonomies: the default severity


def test_policy_taxonomy_model_loads_file() -> None:
    from proxy.config._models import TaxonomyClass

    data = yaml.safe_load((ROOT / "policies" / "taxonomy" / "default.yaml").read_text())["taxonomy"]
    for value in data.values():
        TaxonomyClass(**value)


def test_guard_error_does_not_fail_chain() -> None:
    class Broken:
        name = "broken"
        classes = frozenset({"x"})

        def check(self, request, answer, ctx=None):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    [r] = GuardChain([Broken()]).run({}, answer_text("a"))
    assert (r.guard, r.taxonomy, r.severity) == ("broken", "guard_error", "minor") and "boom" in r.detail


def test_result_is_frozen_and_serialisable() -> None:
    [r] = build_guards(["finish_reason"]).run({}, answer_text("", finish="length"))
    assert isinstance(r, GuardResult)
    with pytest.raises(AttributeError):
        r.passed = True  # type: ignore[misc]
    assert r.to_dict() == {"guard": "finish_reason", "passed": False, "taxonomy": "truncated_output", "severity": "major",
                           "detail": r.detail, "pointer": "/choices/0/finish_reason"}
