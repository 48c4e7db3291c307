"""The policy: YAML -> strict, frozen pydantic models, then a cross-reference pass.

`load_policy(path)` / `parse_policy(text)` return a `Policy` or raise `PolicyError`, whose
`issues` list every problem found, each with file, line, column and key path, e.g.

    policies/x.yaml:12:5: routes.support-bot.split: weights sum to 95; they must sum to 100

`${VAR}` and `${VAR:-default}` are interpolated in string values (`$${` is a literal `${`).
Secret values (api_key, provider headers) never appear in an error message.
"""

from proxy.config._errors import PolicyError, PolicyIssue
from proxy.config._load import load_policy, parse_policy
from proxy.config._models import (
    DEFAULT_BASE_URLS,
    DEFAULT_STICKY_BY,
    MIN_SECRET_CHARS,
    STANDARD_SEVERITIES,
    Auth,
    Budgets,
    Cache,
    CallerKey,
    Canary,
    CriticalFailuresGuardrail,
    GuardFailureRateGuardrail,
    Guardrails,
    HumanScorer,
    JudgeScorer,
    LatencyGuardrail,
    Metric,
    ModelVariant,
    Passthrough,
    Policy,
    Price,
    Provider,
    RateLimit,
    Route,
    RuleScorer,
    Sampling,
    SamplingRule,
    Scorer,
    Server,
    Shadow,
    TaxonomyClass,
    TrustAfter,
    UpstreamLimits,
    is_auth_header,
    provider_secrets,
)

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_STICKY_BY",
    "MIN_SECRET_CHARS",
    "STANDARD_SEVERITIES",
    "Auth",
    "Budgets",
    "Cache",
    "CallerKey",
    "Canary",
    "CriticalFailuresGuardrail",
    "GuardFailureRateGuardrail",
    "Guardrails",
    "HumanScorer",
    "JudgeScorer",
    "LatencyGuardrail",
    "Metric",
    "ModelVariant",
    "Passthrough",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Price",
    "Provider",
    "RateLimit",
    "Route",
    "RuleScorer",
    "Sampling",
    "SamplingRule",
    "Scorer",
    "Server",
    "Shadow",
    "TaxonomyClass",
    "TrustAfter",
    "UpstreamLimits",
    "is_auth_header",
    "provider_secrets",
    "load_policy",
    "parse_policy",
]
