"""The shipped example policy loads, and means what DESIGN.md says."""

from __future__ import annotations

import os
import re
import textwrap

import pytest

from pathlib import Path

from proxy.config import JudgeScorer, Policy, RuleScorer, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "example.yaml"


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


def test_example_loads_without_keys(no_keys: None) -> None:
    policy = load_policy(EXAMPLE)
    assert isinstance(policy, Policy)
    assert policy.summary() == (
        f"{EXAMPLE}: OK - 3 providers, 3 models, 2 routes (support-bot: split prod 90 / "
        "candidate 10; canary-example: canary prod -> candidate), 3 scorers"
    )
    assert re.fullmatch(r"[0-9a-f]{12}", policy.version)
    assert policy.source == str(EXAMPLE)
    assert policy.secrets() == []
    assert policy.providers["openai"].api_key is None


def test_example_contents(no_keys: None) -> None:
    policy = load_policy(EXAMPLE)
    assert policy.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert policy.providers["local"].base_url == "http://vllm:8000/v1"
    assert policy.models["prod"].params == {"temperature": 0}
    assert policy.models["candidate"].provider == "local"

    bot = policy.routes["support-bot"]
    assert bot.name == "support-bot"
    assert bot.kind == "split"
    assert bot.variants == ("prod", "candidate")
    assert bot.control == "prod"
    assert bot.experiment == "support-bot"
    assert bot.sticky_by == ["header:x-sluicegate-episode", "body:user"]
    assert bot.shadow is not None and (bot.shadow.model, bot.shadow.rate) == ("candidate", 0.05)
    assert bot.fallbacks == ["prod"]
    assert bot.guard_names == ("json_schema", "tool_params", "max_chars")
    assert bot.guard_options("max_chars") == 4000
    assert bot.on_guard_failure == {"tool_params": "retry_other_variant", "json_schema": "flag"}
    assert bot.capture == "redacted"
    assert bot.sampling is not None and bot.sampling.default == 0.1
    assert [r.conditions for r in bot.sampling.rules] == [
        {"tag": "sensitive"},
        {"guard_failed": True},
        {"feedback": "corrected"},
    ]
    assert bot.scorers == ["helpfulness", "no_secrets"]

    canary_route = policy.routes["canary-example"]
    assert canary_route.kind == "canary"
    assert canary_route.variants == ("prod", "candidate")
    assert canary_route.control == "prod"
    assert canary_route.sticky_by == [
        "header:x-sluicegate-episode",
        "header:x-sluicegate-user",
        "body:user",
    ]
    canary = canary_route.canary
    assert canary is not None
    assert canary.stages == [1, 5, 25, 50, 100]
    assert canary.min_samples == 400
    assert canary.guardrails.latency_p95_ms is not None
    assert canary.guardrails.latency_p95_ms.max_ratio == 1.25
    assert canary.guardrails.critical_failures is not None
    assert canary.guardrails.critical_failures.max == 0

    assert policy.metrics["task_success"].level == "episode"
    assert policy.taxonomy["dangerous_advice"].severity == "critical"
    assert policy.severities == ("critical", "major", "minor")

    judge = policy.scorers["helpfulness"]
    assert isinstance(judge, JudgeScorer)
    assert judge.rubric_path == (REPO / "policies" / "rubrics" / "helpfulness.md").resolve()
    assert judge.rubric_text is not None
    for placeholder in ("{request}", "{answer}", "{retrieval_ids}"):
        assert placeholder in judge.rubric_text
    rule = policy.scorers["no_secrets"]
    assert isinstance(rule, RuleScorer)
    assert rule.pattern is not None and rule.pattern.search("my API_KEY is")
    assert policy.budgets.judge_usd_per_day == 20


def test_example_with_keys_reports_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    policy = load_policy(EXAMPLE)
    assert policy.secrets() == ["sk-openai-test", "sk-ant-test"]
    assert policy.providers["openai"].api_key is not None
    assert "sk-openai-test" not in repr(policy)


def test_design_md_flow_style_without_defaults_parses() -> None:
    # DESIGN.md writes `${VAR}` unquoted inside flow mappings, where `{`/`}` are YAML syntax.
    text = textwrap.dedent(
        """\
        providers:
          openai:    {kind: openai, base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}
          anthropic: {kind: anthropic, api_key: ${ANTHROPIC_API_KEY}}
        """
    )
    env = {"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b"}
    policy = parse_policy(text, env=env)
    assert policy.secrets() == ["sk-a", "sk-b"]


def test_version_is_hash_of_the_text(no_keys: None) -> None:
    import hashlib

    text = EXAMPLE.read_text()
    assert load_policy(EXAMPLE).version == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert parse_policy(text, str(EXAMPLE), env={}, base_dir=EXAMPLE.parent).version == load_policy(
        os.fspath(EXAMPLE)
    ).version


@pytest.mark.parametrize("path", sorted((REPO / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_loads(path: Path, no_keys: None) -> None:
    assert load_policy(path).summary().startswith(f"{path}: OK - ")


def test_the_canary_example_loads_with_its_canary_shadow_and_conditions() -> None:
    policy = load_policy(REPO / "policies" / "canary.yaml")
    route = policy.routes["support-bot"]
    assert route.canary is not None and route.canary.stages == [1, 5, 25, 50, 100]
    assert route.shadow is not None and route.shadow.model == "next"
    assert [entry.model for entry in route.when] == ["prod", "candidate"]
