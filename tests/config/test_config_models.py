"""Each model on its own: defaults, constraints, strictness, immutability."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from proxy.config import (
    DEFAULT_STICKY_BY,
    Budgets,
    Canary,
    HumanScorer,
    JudgeScorer,
    Metric,
    ModelVariant,
    Passthrough,
    Policy,
    Price,
    Provider,
    Route,
    RuleScorer,
    Sampling,
    SamplingRule,
    Scorer,
    Server,
    Shadow,
    TaxonomyClass,
)


def messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(f"{e['loc']}: {e['msg']}" for e in exc.value.errors())


# ------------------------------------------------------------------ Provider


def test_provider_defaults_per_kind() -> None:
    openai = Provider(kind="openai")
    assert openai.base_url == "https://api.openai.com/v1"
    assert (openai.connect_timeout, openai.read_timeout, openai.max_connections) == (5.0, 120.0, 256)
    assert openai.forward_metadata is True
    assert openai.headers == {} and openai.strip_params == [] and openai.api_key is None
    assert Provider(kind="anthropic").base_url == "https://api.anthropic.com"
    assert Provider(kind="openai", base_url="http://vllm:8000/v1/").base_url == "http://vllm:8000/v1"


def test_azure_requires_base_url() -> None:
    with pytest.raises(ValidationError, match="azure provider needs base_url"):
        Provider(kind="azure")
    azure = Provider(kind="azure", base_url="https://r.openai.azure.com", api_version="2024-06-01")
    assert azure.api_version == "2024-06-01"


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "gemini"},
        {"kind": "openai", "base_url": "vllm:8000"},
        {"kind": "openai", "connect_timeout": 0},
        {"kind": "openai", "max_connections": 0},
        {"kind": "openai", "headers": {"bad name": "x"}},
        {"kind": "openai", "unknown": 1},
    ],
)
def test_provider_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Provider.model_validate(bad)


def test_provider_key_is_secret_and_blank_means_none() -> None:
    provider = Provider(kind="openai", api_key="sk-abc", headers={"Authorization": "Bearer t"})
    assert "sk-abc" not in repr(provider) and "Bearer t" not in repr(provider)
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-abc"
    assert Provider(kind="openai", api_key="  ").api_key is None


def test_models_are_frozen() -> None:
    provider = Provider(kind="openai")
    with pytest.raises(ValidationError):
        provider.kind = "anthropic"  # type: ignore[misc]


# ------------------------------------------------------------------ ModelVariant, Price


def test_model_variant() -> None:
    variant = ModelVariant(provider="openai", model="gpt-4o-2024-08-06", params={"temperature": 0},
                           price={"input_per_mtok": 2.5, "output_per_mtok": 10}, family="openai")
    assert variant.price == Price(input_per_mtok=2.5, output_per_mtok=10)
    assert variant.price.cached_input_per_mtok is None
    with pytest.raises(ValidationError, match="cannot pin 'model'"):
        ModelVariant(provider="p", model="m", params={"model": "other"})
    with pytest.raises(ValidationError):
        ModelVariant(provider="p", model="")
    with pytest.raises(ValidationError):
        Price(input_per_mtok=-1, output_per_mtok=1)


# ------------------------------------------------------------------ Route


def test_route_defaults() -> None:
    route = Route(model="prod")
    assert route.kind == "model" and route.variants == ("prod",) and route.control == "prod"
    assert route.sticky_by == list(DEFAULT_STICKY_BY)
    assert route.capture == "redacted" and route.stream_guard == "flag" and route.max_retries == 1
    assert route.sampling == Sampling(default=0.1, rules=[])
    assert route.fallbacks == [] and route.guards == [] and route.scorers == []
    assert route.timeout is None and route.shadow is None and route.salt is None


def test_route_split_and_control() -> None:
    route = Route(split={"a": 70, "b": 29.5, "c": 0.5})
    assert route.variants == ("a", "b", "c")
    assert route.control == "a"
    assert Route(split={"a": 50, "b": 50}, control="b").control == "b"
    assert Route(split={"a": 100.0000000001}).variants == ("a",)  # within 1e-6
    with pytest.raises(ValidationError, match="weights sum to 95; they must sum to 100"):
        Route(split={"a": 90, "b": 5})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Route(split={"a": 110, "b": -10})
    with pytest.raises(ValidationError, match="control 'c' is not a key of split"):
        Route(split={"a": 50, "b": 50}, control="c")
    with pytest.raises(ValidationError, match="control only applies to split routes"):
        Route(model="a", control="a")
    with pytest.raises(ValidationError, match="at least one model"):
        Route(split={})


@pytest.mark.parametrize(
    ("given", "found"),
    [({}, "none"), ({"model": "a", "split": {"a": 100}}, "split, model")],
)
def test_route_needs_exactly_one_target(given: dict[str, Any], found: str) -> None:
    with pytest.raises(ValidationError, match=f"exactly one of split, model, canary \\(found {found}\\)"):
        Route.model_validate(given)


def test_route_sticky_by() -> None:
    route = Route(model="a", sticky_by=["header:X-Episode", "body:user", "metadata:session"])
    assert route.sticky_by == ["header:x-episode", "body:user", "metadata:session"]
    assert Route(model="a", sticky_by=[]).sticky_by == []
    for bad in ("cookie:x", "header:", "user"):
        with pytest.raises(ValidationError, match="must be header:<name>"):
            Route(model="a", sticky_by=[bad])


def test_route_guards_and_actions() -> None:
    route = Route(model="a", guards=["json_schema", {"max_chars": 4000}],
                  on_guard_failure={"json_schema": "block", "critical": "fallback"})
    assert route.guard_names == ("json_schema", "max_chars")
    assert route.guard_options("max_chars") == 4000 and route.guard_options("json_schema") is None
    with pytest.raises(ValidationError, match="one-key mapping"):
        Route(model="a", guards=[{"a": 1, "b": 2}])
    with pytest.raises(ValidationError):
        Route(model="a", on_guard_failure={"x": "explode"})


def test_route_experiment_and_models_used() -> None:
    policy = Policy.model_validate(
        {
            "providers": {"p": {"kind": "openai"}},
            "routes": {
                "r1": {"split": {"a": 50, "b": 50}, "fallbacks": ["c", "a"], "shadow": {"model": "d", "rate": 0.1}},
                "r2": {"model": "a", "salt": "exp-7"},
            },
        }
    )
    assert policy.routes["r1"].experiment == "r1"
    assert policy.routes["r2"].experiment == "exp-7"
    assert policy.routes["r1"].models_used == ("a", "b", "c", "d")


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "a", "capture": "everything"},
        {"model": "a", "stream_guard": "drop"},
        {"model": "a", "timeout": 0},
        {"model": "a", "max_retries": -1},
        {"model": "a", "shadow": {"model": "b", "rate": 1.5}},
        {"model": "a", "shadow": {"model": "b"}},
        {"model": "a", "sampling": {"default": 2}},
        {"model": "a", "sampling": {"rules": [{"rate": 1.0}]}},
    ],
)
def test_route_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Route.model_validate(bad)


def test_sampling_rule() -> None:
    rule = SamplingRule(rate=1, metadata={"tier": "vip"}, severity="critical")
    assert rule.conditions == {"metadata": {"tier": "vip"}, "severity": "critical"}
    with pytest.raises(ValidationError, match="needs a condition"):
        SamplingRule(rate=0.5)


def test_shadow() -> None:
    assert Shadow(model="b", rate=0).rate == 0


# ------------------------------------------------------------------ Canary

CANARY: dict[str, Any] = {
    "baseline": "prod", "candidate": "cand", "stages": [1, 5, 100], "min_samples": 10,
    "success_metric": "task_success",
}


def test_canary_defaults() -> None:
    canary = Canary.model_validate(CANARY)
    assert canary.non_inferiority_margin == 0.02 and canary.evaluate_every_s == 60
    assert canary.guardrails.guard_failure_rate is None
    route = Route(canary=CANARY)
    assert route.kind == "canary" and route.variants == ("prod", "cand") and route.control == "prod"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"stages": [5, 5]}, "strictly increasing"),
        ({"stages": [0, 5]}, "greater than 0"),
        ({"stages": [50, 101]}, "less than or equal to 100"),
        ({"stages": []}, "at least 1 item"),
        ({"min_samples": 0}, "greater than or equal to 1"),
        ({"candidate": "prod"}, "different model than baseline"),
        ({"guardrails": {"latency_p95_ms": {"max_ratio": 1.2, "extra": 1}}}, "Extra inputs"),
        ({"guardrails": {"error_rate": {"max": 1}}}, "Extra inputs"),
    ],
)
def test_canary_rejects(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Canary.model_validate({**CANARY, **change})


# ------------------------------------------------------------------ metrics, taxonomy


def test_metric_and_taxonomy() -> None:
    assert Metric(type="float", level="inference", goal="minimize").description is None
    with pytest.raises(ValidationError):
        Metric(type="int", level="inference", goal="minimize")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Metric(type="boolean", goal="maximize")  # type: ignore[call-arg]
    assert TaxonomyClass(severity="cosmetic").severity == "cosmetic"
    with pytest.raises(ValidationError):
        TaxonomyClass(severity="")


# ------------------------------------------------------------------ scorers

SCORER = TypeAdapter(Scorer)


def test_scorer_union() -> None:
    assert isinstance(SCORER.validate_python({"kind": "rule", "max_chars": 10}), RuleScorer)
    judge = SCORER.validate_python({"kind": "llm_judge", "model": "j", "rubric": "r.md"})
    assert isinstance(judge, JudgeScorer)
    assert judge.labels == ["pass", "fail"]
    assert (judge.trust_after.min_human_labels, judge.trust_after.min_kappa) == (50, 0.6)
    human = SCORER.validate_python({"kind": "human", "rate": 0.02})
    assert isinstance(human, HumanScorer) and human.also == []
    with pytest.raises(ValidationError):
        SCORER.validate_python({"kind": "vibes"})


def test_rule_scorer() -> None:
    rule = RuleScorer(kind="rule", regex=r"(?i)secret", keywords=["x"])
    assert rule.label_on_match == "fail" and rule.pii is False
    assert rule.pattern is not None and rule.pattern.search("SECRET")
    with pytest.raises(ValidationError, match="invalid regular expression"):
        RuleScorer(kind="rule", regex="(unclosed")
    with pytest.raises(ValidationError, match="at least one of"):
        RuleScorer(kind="rule")


def test_judge_and_human_reject() -> None:
    with pytest.raises(ValidationError, match="unique"):
        JudgeScorer(kind="llm_judge", model="j", rubric="r", labels=["a", "a"])
    with pytest.raises(ValidationError):
        JudgeScorer(kind="llm_judge", model="j", rubric="r", trust_after={"min_kappa": 2})
    with pytest.raises(ValidationError):
        HumanScorer(kind="human", rate=1.5)


# ------------------------------------------------------------------ the rest


def test_small_sections() -> None:
    assert Budgets().judge_usd_per_day is None
    assert Server().max_body_bytes == 10 * 1024 * 1024
    assert Passthrough(provider="openai").capture == "redacted"
    with pytest.raises(ValidationError):
        Budgets(judge_usd_per_day=-1)
    with pytest.raises(ValidationError):
        Server(max_body_bytes=0)


def test_policy_names_secrets_summary() -> None:
    policy = Policy.model_validate(
        {
            "providers": {
                "a": {"kind": "openai", "api_key": "sk-1", "headers": {"X-Api-Key": "hk", "X-Team": "t"}},
                "b": {"kind": "anthropic", "api_key": "sk-1"},
            },
            "models": {"m": {"provider": "a", "model": "x"}},
            "routes": {"r": {"model": "m"}},
            "passthrough": {"provider": "b"},
        }
    )
    assert policy.providers["b"].name == "b" and policy.models["m"].name == "m"
    assert policy.secrets() == ["sk-1", "hk"]
    assert policy.summary() == (
        "<string>: OK - 2 providers, 1 model, 1 route (r: model m), 0 scorers, passthrough -> b"
    )
    with pytest.raises(ValidationError):
        Policy.model_validate({"providers": {"bad name": {"kind": "openai"}}})
    with pytest.raises(ValidationError):
        Policy.model_validate({})



def test_policy_secrets_include_base_url_credentials() -> None:
    """The log scrubber gets a provider URL's user:password too (the upstream scrubber always had them)."""
    import base64

    policy = Policy.model_validate({
        "providers": {"vllm": {"kind": "openai", "base_url": "https://svc-user:p%40ss-word-1234@vllm.internal/v1"}},
        "models": {"m": {"provider": "vllm", "model": "x"}},
        "routes": {"r": {"model": "m"}},
    })
    secrets = policy.secrets()
    assert "p@ss-word-1234" in secrets and "p%40ss-word-1234" in secrets
    assert base64.b64encode(b"svc-user:p@ss-word-1234").decode() in secrets  # as a Basic header value
    assert "vllm.internal" not in " ".join(secrets)
