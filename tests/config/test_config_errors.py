"""Bad policies: every problem is reported, with file, line, column and key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.config import PolicyError, PolicyIssue, load_policy, parse_policy

# A small valid policy in block style; the tests break one thing at a time.
GOOD = """\
providers:
  openai:
    kind: openai
    api_key: sk-not-a-real-key
  local: {kind: openai, base_url: http://vllm:8000/v1}
models:
  prod: {provider: openai, model: gpt-4o-2024-08-06}
  candidate: {provider: local, model: llama-3.1-8b-instruct}
  judge: {provider: openai, model: gpt-4o-mini}
routes:
  support-bot:
    split: {prod: 90, candidate: 10}
    fallbacks: [prod]
    guards: [json_schema]
    on_guard_failure: {json_schema: flag, critical: block}
    scorers: [no_secrets]
  canary-example:
    canary:
      baseline: prod
      candidate: candidate
      stages: [5, 50, 100]
      min_samples: 10
      success_metric: task_success
metrics:
  task_success: {type: boolean, level: episode, goal: maximize}
taxonomy:
  dangerous_advice: {severity: critical}
scorers:
  no_secrets: {kind: rule, regex: 'BEGIN PRIVATE KEY', taxonomy: dangerous_advice}
"""


def test_good_policy_loads() -> None:
    assert parse_policy(GOOD, env={}).routes["support-bot"].variants == ("prod", "candidate")


def one(issues: list[PolicyIssue]) -> PolicyIssue:
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def test_typo_key_in_route(issues_of, where) -> None:
    text = GOOD.replace("    fallbacks: [prod]", "    fallbacks: [prod]\n    splitt: {prod: 100}")
    issue = one(issues_of(text))
    assert (issue.line, issue.column) == where(text, "splitt")
    assert issue.path == "routes.support-bot.splitt"
    assert issue.message == "unknown key 'splitt'; did you mean 'split'?"


def test_typo_key_in_provider(issues_of, where) -> None:
    text = GOOD.replace("    kind: openai\n", "    kind: openai\n    read_timout: 30\n", 1)
    issue = one(issues_of(text))
    assert (issue.line, issue.column) == where(text, "read_timout")
    assert str(issue) == (
        f"bad.yaml:{issue.line}:5: providers.openai.read_timout: unknown key 'read_timout'; "
        "did you mean 'read_timeout'?"
    )


def test_split_not_summing_to_100(issues_of, where) -> None:
    text = GOOD.replace("candidate: 10}", "candidate: 5}")
    issue = one(issues_of(text))
    assert str(issue) == "bad.yaml:12:5: routes.support-bot.split: weights sum to 95; they must sum to 100"
    assert (issue.line, issue.column) == where(text, "split:")


def test_route_naming_unknown_model(issues_of, where) -> None:
    text = GOOD.replace("split: {prod: 90, candidate: 10}", "model: prdo")
    issue = one(issues_of(text))
    assert issue.path == "routes.support-bot.model"
    assert (issue.line, issue.column) == where(text, "prdo")
    assert issue.message == "unknown model 'prdo'; did you mean 'prod'?"


def test_split_key_and_fallback_naming_unknown_models(issues_of, where) -> None:
    text = GOOD.replace("{prod: 90, candidate: 10}", "{prod: 90, candidat: 10}").replace(
        "fallbacks: [prod]", "fallbacks: [prod, gpt5]"
    )
    split_issue, fallback_issue = issues_of(text)
    assert split_issue.path == "routes.support-bot.split.candidat"
    assert (split_issue.line, split_issue.column) == where(text, "candidat:")
    assert split_issue.message == "unknown model 'candidat'; did you mean 'candidate'?"
    assert fallback_issue.path == "routes.support-bot.fallbacks[1]"
    assert (fallback_issue.line, fallback_issue.column) == where(text, "gpt5")
    assert fallback_issue.message == "unknown model 'gpt5'; models defined: prod, candidate, judge"


def test_unknown_provider(issues_of, where) -> None:
    text = GOOD.replace("{provider: local,", "{provider: locl,")
    issue = one(issues_of(text))
    assert issue.path == "models.candidate.provider"
    assert (issue.line, issue.column) == where(text, "locl")
    assert issue.message == "unknown provider 'locl'; did you mean 'local'?"


def test_unknown_scorer(issues_of, where) -> None:
    text = GOOD.replace("scorers: [no_secrets]", "scorers: [no_secrets, helpfulness]")
    issue = one(issues_of(text))
    assert issue.path == "routes.support-bot.scorers[1]"
    assert (issue.line, issue.column) == where(text, "helpfulness")
    assert issue.message == "unknown scorer 'helpfulness'; scorers defined: no_secrets"


def test_unknown_metric_in_canary(issues_of, where) -> None:
    text = GOOD.replace("success_metric: task_success", "success_metric: task_sucess")
    issue = one(issues_of(text))
    assert issue.path == "routes.canary-example.canary.success_metric"
    assert (issue.line, issue.column) == where(text, "task_sucess")
    assert issue.message == "unknown metric 'task_sucess'; did you mean 'task_success'?"


def test_other_references(issues_of, where) -> None:
    text = (
        GOOD.replace("taxonomy: dangerous_advice}", "taxonomy: dangerous}")
        .replace("critical: block}", "critcal: block}")
        + "  j: {kind: llm_judge, model: juge, rubric: r.md}\npassthrough: {provider: opena}\n"
    )
    issues = issues_of(text)
    got = {(i.path, i.message) for i in issues}
    assert ("routes.support-bot.on_guard_failure.critcal",
            "'critcal' is neither a guard of this route nor a severity; did you mean 'critical'?") in got
    assert ("scorers.no_secrets.taxonomy", "unknown taxonomy class 'dangerous'; did you mean 'dangerous_advice'?") in got
    assert ("scorers.j.model", "unknown model 'juge'; did you mean 'judge'?") in got
    assert ("passthrough.provider", "unknown provider 'opena'; did you mean 'openai'?") in got
    by_path = {i.path: i for i in issues}
    assert (by_path["routes.support-bot.on_guard_failure.critcal"].line,
            by_path["routes.support-bot.on_guard_failure.critcal"].column) == where(text, "critcal")


def test_duplicate_key(issues_of, where) -> None:
    text = GOOD.replace("  judge: {", "  prod: {provider: local, model: x}\n  judge: {")
    issue = one(issues_of(text))
    assert issue.path == "models.prod"
    assert (issue.line, issue.column) == where(text, "prod: {", nth=2)
    assert issue.message == (
        "duplicate key 'prod' (first at line 7); YAML would silently keep only the last one"
    )


def test_yaml_syntax_error(issues_of) -> None:
    text = GOOD.replace("  judge: {provider: openai, model: gpt-4o-mini}", "  judge: {provider: openai, model: gpt-4o-mini")
    issue = one(issues_of(text))
    assert issue.path == ""
    assert issue.line == 10  # where the parser noticed: the next line
    assert issue.message.startswith("YAML syntax error: expected ',' or '}'")
    assert "starts at line 9" in issue.message


def test_yaml_bad_indentation(issues_of) -> None:
    issue = one(issues_of("providers:\n  a:\n    kind: openai\n   x: 1\n"))
    assert issue.line == 4 and issue.message.startswith("YAML syntax error")


def test_missing_required_field_points_at_parent(issues_of, where) -> None:
    text = GOOD.replace("  local: {kind: openai, base_url", "  local: {base_url")
    issue = one(issues_of(text))
    assert issue.path == "providers.local.kind"
    assert issue.message == "required field is missing"
    assert (issue.line, issue.column) == where(text, "local:")


def test_missing_field_in_block_mapping_points_at_its_key(issues_of, where) -> None:
    text = GOOD.replace("      min_samples: 10\n", "")
    issue = one(issues_of(text))
    assert issue.path == "routes.canary-example.canary.min_samples"
    assert (issue.line, issue.column) == where(text, "canary:")


def test_wrong_type(issues_of, where) -> None:
    text = GOOD.replace("    kind: openai\n", "    kind: openai\n    connect_timeout: soon\n", 1)
    issue = one(issues_of(text))
    assert issue.path == "providers.openai.connect_timeout"
    assert (issue.line, issue.column) == where(text, "soon")
    assert issue.message == "input should be a valid number, unable to parse string as a number (got 'soon')"


def test_wrong_literal_suggests(issues_of, where) -> None:
    text = GOOD.replace("{kind: openai, base_url", "{kind: opanai, base_url")
    issue = one(issues_of(text))
    assert issue.path == "providers.local.kind"
    assert issue.message == "must be one of openai, anthropic, azure (got 'opanai'); did you mean 'openai'?"


def test_unknown_scorer_kind(issues_of, where) -> None:
    text = GOOD.replace("{kind: rule,", "{kind: regex_rule,")
    issue = one(issues_of(text))
    assert issue.path == "scorers.no_secrets.kind"
    assert (issue.line, issue.column) == where(text, "regex_rule")
    assert issue.message.startswith("unknown kind 'regex_rule'; expected one of rule, llm_judge, human")


def test_bad_regex(issues_of, where) -> None:
    text = GOOD.replace("'BEGIN PRIVATE KEY'", "'(BEGIN PRIVATE KEY'")
    issue = one(issues_of(text))
    assert issue.path == "scorers.no_secrets.regex"
    assert (issue.line, issue.column) == where(text, "'(BEGIN")
    assert issue.message.startswith("invalid regular expression: pattern '(BEGIN PRIVATE KEY' does not compile: missing )")


def test_missing_rubric_file(issues_of, where, tmp_path: Path) -> None:
    text = GOOD + "  helpfulness: {kind: llm_judge, model: judge, rubric: rubrics/helpfulness.md}\n"
    issue = one(issues_of(text))
    assert issue.path == "scorers.helpfulness.rubric"
    assert (issue.line, issue.column) == where(text, "rubrics/helpfulness.md")
    assert issue.message == f"rubric file not found: {tmp_path / 'rubrics' / 'helpfulness.md'}"


def test_rubric_found_relative_to_policy_file(tmp_path: Path, rubric_dir: Path) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(GOOD + "  helpfulness: {kind: llm_judge, model: judge, rubric: rubrics/r.md}\n")
    judge = load_policy(policy_file).scorers["helpfulness"]
    assert judge.rubric_text == "Request {request}\nAnswer {answer}\n"  # type: ignore[union-attr]


def test_several_errors_all_reported_in_file_order(issues_of) -> None:
    text = (
        GOOD.replace("    kind: openai\n", "    kind: openai\n    read_timout: 30\n", 1)
        .replace("candidate: 10}", "candidate: 5}")
        .replace("fallbacks: [prod]", "fallbacks: [prdo]")
        .replace("success_metric: task_success", "success_metric: nope")
        .replace("'BEGIN PRIVATE KEY'", "'['")
        .replace("{provider: local,", "{provider: ghost,")
        .replace("  judge: {", "  judge: {provider: openai, model: x}\n  judge: {")
    )
    issues = issues_of(text)
    assert [i.path for i in issues] == [
        "providers.openai.read_timout",
        "models.candidate.provider",
        "models.judge",
        "routes.support-bot.split",
        "routes.support-bot.fallbacks[0]",
        "routes.canary-example.canary.success_metric",
        "scorers.no_secrets.regex",
    ]
    lines = [i.line for i in issues]
    assert lines == sorted(lines)
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text), "bad.yaml", {})
    assert str(info.value).splitlines() == [str(i) for i in issues]


def test_unset_variable_and_other_errors_together(issues_of) -> None:
    text = GOOD.replace("api_key: sk-not-a-real-key", "api_key: ${OPENAI_API_KEY}").replace(
        "fallbacks: [prod]", "fallbacks: [prdo]"
    )
    assert [i.path for i in issues_of(text)] == [
        "providers.openai.api_key",
        "routes.support-bot.fallbacks[0]",
    ]


FAKE_KEY = "sk-FAKE-0123456789abcdef"


@pytest.mark.parametrize(
    "provider",
    [
        # a wrong type right next to the key
        f"  leaky: {{kind: openai, api_key: {FAKE_KEY}, connect_timeout: fast, max_connections: many}}\n",
        # the key itself has the wrong type
        f"  leaky: {{kind: openai, api_key: [{FAKE_KEY}]}}\n",
        f"  leaky: {{kind: openai, api_key: {{value: {FAKE_KEY}}}}}\n",
        # under a misspelt key
        f"  leaky: {{kind: openai, api_kye: {FAKE_KEY}}}\n",
        # in headers, with a wrong type
        f"  leaky: {{kind: openai, headers: {{Authorization: [Bearer {FAKE_KEY}]}}}}\n",
        # in a field where it does not belong, interpolated
        "  leaky: {kind: openai, base_url: ${KEY}, read_timeout: ${KEY}}\n",
        # a wrong kind next to it
        f"  leaky: {{kind: openia, api_key: {FAKE_KEY}}}\n",
    ],
)
def test_api_key_never_in_errors(issues_of, provider: str) -> None:
    text = GOOD.replace("models:\n", provider + "models:\n", 1)
    issues = issues_of(text, env={"KEY": FAKE_KEY})
    rendered = "\n".join(str(i) for i in issues) + repr(issues)
    assert FAKE_KEY not in rendered
    assert "FAKE" not in rendered
    assert all(i.path.startswith("providers.leaky") for i in issues)


def test_api_key_never_in_errors_via_model_validation_of_secret(issues_of) -> None:
    text = GOOD.replace("api_key: sk-not-a-real-key", f"api_key: {FAKE_KEY}\n    max_connections: x")
    assert FAKE_KEY not in "\n".join(map(str, issues_of(text)))


def test_not_a_mapping_and_empty(issues_of) -> None:
    assert one(issues_of("")).message.endswith("found an empty file")
    issue = one(issues_of("- a\n"))
    assert (issue.line, issue.column, issue.path) == (1, 1, "")
    assert one(issues_of("models: {}\n")).path == "providers"


def test_unknown_top_level_key(issues_of) -> None:
    issue = one(issues_of(GOOD + "scorer: {}\n"))
    assert issue.path == "scorer"
    assert issue.message == "unknown key 'scorer'; did you mean 'scorers'?"


def test_load_policy_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert str(info.value) == f"{missing}: file not found"


def test_load_policy_names_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "x.yaml").write_text(GOOD.replace("candidate: 10}", "candidate: 5}"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as info:
        load_policy("policies/x.yaml")
    assert str(info.value) == (
        "policies/x.yaml:12:5: routes.support-bot.split: weights sum to 95; they must sum to 100"
    )


def test_dotted_names_are_quoted_in_paths(issues_of) -> None:
    text = GOOD.replace("  judge: {", "  llama3.1: {provider: nowhere, model: x}\n  judge: {")
    assert one(issues_of(text)).path == 'models["llama3.1"].provider'


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  local: {kind: openai, base_url: http://vllm:8000/v1}",
        "  local: &local {kind: openai, base_url: http://vllm:8000/v1, read_timeout: 9}\n"
        "  local2: {<<: *local, read_timeout: 3}",
    )
    policy = parse_policy(text, env={})
    assert policy.providers["local2"].base_url == "http://vllm:8000/v1"
    assert policy.providers["local2"].read_timeout == 3


def test_policy_error_pickles() -> None:
    import pickle

    with pytest.raises(PolicyError) as info:
        parse_policy("- x\n")
    again = pickle.loads(pickle.dumps(info.value))
    assert again.issues == info.value.issues and str(again) == str(info.value)
