"""The policy's pydantic models: strict (unknown keys are errors) and frozen.

Everything a model can check on its own is checked here; names that point into other
sections (a route's models, a scorer's judge, ...) are checked by `_crossref` afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from proxy.config._errors import suggest
from proxy.guards import PolicyRegex, PolicyRegexError, compile_policy_regex
from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_STICKY_BY",
    "STANDARD_SEVERITIES",
    "Budgets",
    "Cache",
    "Auth",
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
    "Price",
    "Provider",
    "Route",
    "RuleScorer",
    "Sampling",
    "SamplingRule",
    "Scorer",
    "RateLimit",
    "Server",
    "Shadow",
    "TaxonomyClass",
    "TrustAfter",
    "UpstreamLimits",
]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_STICKY_BY: tuple[str, ...] = (
    "header:x-sluicegate-episode",
    "header:x-sluicegate-user",
    "body:user",
)
STANDARD_SEVERITIES: tuple[str, ...] = ("critical", "major", "minor")
GUARD_ACTIONS: tuple[str, ...] = ("flag", "retry_other_variant", "block", "fallback")
_AUTH_HEADER_HINTS = ("auth", "key", "token", "secret", "cookie", "signature")


def is_auth_header(name: str) -> bool:
    """Header names whose values are treated as secrets (Authorization, X-Api-Key, ...)."""
    lowered = name.lower()
    return any(hint in lowered for hint in _AUTH_HEADER_HINTS)


Capture = Literal["full", "redacted", "refs_only"]
GuardAction = Literal["flag", "retry_other_variant", "block", "fallback"]

MIN_SECRET_CHARS = 8  # shorter values are not secrets worth the name, and masking them would mangle text


def provider_secrets(api_key: str | None, headers: Mapping[str, str] | None, base_url: str | None) -> list[str]:
    """What a provider must never see come back: its key, its policy header values, its URL credentials."""
    found: list[str] = []
    if api_key:
        found.append(api_key)
    # the headers whose names say they carry a secret (the rule the log scrubber follows): other
    # values are configuration ("x-mock-fault: http_400", "anthropic-beta: ...") quoted in errors
    found.extend(value for name, value in (headers or {}).items() if value and is_auth_header(name))
    if base_url:
        parts = urlsplit(base_url)
        user, password = parts.username, parts.password
        if password:
            found += [password, unquote(password)]
        if user and (password or len(user) >= MIN_SECRET_CHARS):
            found += [user, unquote(user)]
        if user or password:
            pair = f"{unquote(user or '')}:{unquote(password or '')}"
            found += [pair, base64.b64encode(pair.encode()).decode()]
    return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET_CHARS]


def _name(value: str) -> str:
    # Names travel in response headers (x-sluicegate-variant, comma-separated guard lists).
    if not value or any(c.isspace() or c == "," or not c.isprintable() for c in value):
        raise ValueError("a name must be non-empty, without spaces, commas or control characters")
    return value


Name = Annotated[str, AfterValidator(_name)]

_HOST_PATTERN = re.compile(r"(?:\*|(?:\*\.)?[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def _host_pattern(value: str) -> str:
    """`server.allowed_hosts` entry: `*`, `name`, `*.domain`, an IPv4 address or `[IPv6]`, optionally `:port`."""
    import ipaddress

    lowered = value.strip().lower()
    port = lowered.rpartition(":")[2] if not lowered.endswith("]") and ":" in lowered else "0"
    if not _HOST_PATTERN.fullmatch(lowered) or ".." in lowered or lowered.startswith("*:") or int(port) > 65535:
        raise ValueError(f"'{value}' is not a host name pattern: use a name (gw.example.com), '*.example.com', "
                         "an IP address ('[::1]' for IPv6), or '*'; ':PORT' may follow")
    if lowered.startswith("["):
        try:
            ipaddress.IPv6Address(lowered[1:lowered.index("]")])
        except ValueError:
            raise ValueError(f"'{value}': not an IPv6 address between the brackets") from None
    return lowered


def _origin(value: str) -> str:
    """`server.public_origins` entry: `scheme://host[:port]`, normalized with the scheme's default port."""
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip().lower().rstrip("/"))
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path or parts.query \
            or parts.username or parts.password:
        raise ValueError(f"'{value}' is not an origin: use scheme://host[:port] (e.g. https://gw.example.com)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def _fmt(x: float) -> str:
    return f"{x:g}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(_Model):
    """An entry of a name -> settings mapping; `.name` is its key (set by Policy)."""

    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        return self._name


# --------------------------------------------------------------------------- providers


class Retry(_Model):
    """Retrying the same upstream after a connect error, 429 or 5xx (proxy/providers/_retry.py)."""

    max_retries: int = Field(0, ge=0, le=10)  # 0: fail over to the fallbacks at once
    base_delay_ms: float = Field(200, gt=0)
    max_delay_ms: float = Field(5000, gt=0)


_MiB = 1024 * 1024


class UpstreamLimits(_Model):
    """Bounds on what one upstream may send (proxy/providers/_limits.py). Past a size bound the call
    ends in a 502 `upstream_too_large`, past a duration bound in a 504 `upstream_timeout`; what was
    sent past the bound is dropped, never served or stored. The gap between two reads is the
    provider's `read_timeout`."""

    max_response_bytes: int = Field(32 * _MiB, ge=1024)  # a non-streamed answer, after decompression
    max_decompression_ratio: float = Field(100.0, ge=1)  # decompressed / received bytes, past the first MiB
    max_event_bytes: int = Field(1 * _MiB, ge=1024)  # one SSE event of a stream
    max_response_seconds: float = Field(600.0, gt=0)  # a non-streamed answer: request sent -> last byte
    max_stream_seconds: float = Field(1800.0, gt=0)  # a stream: request sent -> last event


class Provider(_Named):
    kind: Literal["openai", "anthropic", "azure"]
    base_url: str | None = None  # default per kind; azure requires it
    api_key: SecretStr | None = None  # empty (e.g. `${KEY:-}` unset) means no key
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # extra upstream headers
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    max_connections: int = Field(256, ge=1)
    pool_timeout: float = Field(10.0, gt=0)  # waiting for a free pooled connection; past it a 503 upstream_busy
    limits: UpstreamLimits = Field(default_factory=UpstreamLimits)  # bounds on what the upstream sends
    max_concurrent: int | None = Field(None, ge=1)  # upstream requests in flight at most; more wait in line
    queue_timeout: float = Field(10.0, ge=0)  # how long a request waits in that line before a 503
    forward_metadata: bool = True  # forward the body's `metadata` (minus Sluicegate's keys)
    api_version: str | None = None  # azure
    strip_params: list[str] = Field(default_factory=list)  # body fields this provider rejects
    retry: Retry = Field(default_factory=Retry)

    @model_validator(mode="before")
    @classmethod
    def _default_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("base_url"):
            default = DEFAULT_BASE_URLS.get(data.get("kind"))  # type: ignore[arg-type]
            if default is not None:
                data = {**data, "base_url": default}
        return data

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(c.isspace() or c == ":" or not c.isprintable() for c in name):
                # the header name is not secret, its value is and is not mentioned
                raise ValueError(f"invalid header name '{name}'")
        return value

    @model_validator(mode="after")
    def _azure_needs_url(self) -> Provider:
        if self.kind == "azure" and self.base_url is None:
            raise ValueError("an azure provider needs base_url (https://<resource>.openai.azure.com)")
        return self


# --------------------------------------------------------------------------- models


class Price(_Model):
    input_per_mtok: float = Field(ge=0)  # USD per million input tokens
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


class ModelVariant(_Named):
    provider: str
    model: str = Field(min_length=1)  # the pinned snapshot sent upstream
    params: dict[str, Any] = Field(default_factory=dict)  # pinned params, applied over the caller's
    price: Price | None = None
    family: str | None = None  # e.g. openai, anthropic, llama (judge same-family warnings)

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        for reserved in ("model", "messages", "stream"):
            if reserved in value:
                raise ValueError(f"params cannot pin '{reserved}'")
        return value


# --------------------------------------------------------------------------- routes


class Shadow(_Model):
    model: str
    rate: float = Field(ge=0, le=1)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: Any) -> Any:
    """Seconds from a number or a string like `90s`, `30m`, `24h`, `7d`."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a duration: give seconds (3600) or a number with s, m, h, d or w (1h)")
        return float(match[1]) * _DURATION_UNITS[match[2]]
    return value


class Cache(_Model):
    """Exact-match output cache: an identical request (full body + pinned model) within `ttl` gets the
    stored answer instead of an upstream call."""

    mode: Literal["exact"] = "exact"
    ttl: Annotated[float, BeforeValidator(_duration), Field(gt=0)] = 86400.0


class SamplingRule(_Model):
    """Sample at `rate` when every condition given matches."""

    rate: float = Field(ge=0, le=1)
    tag: str | None = None
    guard_failed: bool | None = None
    feedback: str | None = None
    variant: str | None = None
    metadata: dict[str, str] | None = None
    taxonomy: str | None = None
    severity: str | None = None

    @model_validator(mode="after")
    def _has_condition(self) -> SamplingRule:
        if not self.conditions:
            raise ValueError(
                "a sampling rule needs a condition: one of tag, guard_failed, feedback, "
                "variant, metadata, taxonomy, severity (use `default` for the base rate)"
            )
        return self

    @property
    def conditions(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"rate"}).items() if v is not None}


class Sampling(_Model):
    default: float = Field(0.1, ge=0, le=1)
    rules: list[SamplingRule] = Field(default_factory=list)


class GuardFailureRateGuardrail(_Model):
    max_increase: float = Field(ge=0)  # absolute increase over the baseline's rate


class LatencyGuardrail(_Model):
    # margin on candidate / baseline latency, tested always-valid on per-unit means of log latency
    # (a ratio of geometric means; proxy/canary/_decide.py), not a bare threshold on a noisy p95
    max_ratio: float = Field(gt=0)


class CriticalFailuresGuardrail(_Model):
    """`max`: an absolute count of the candidate's requests with a critical failure in the canary run (one
    more rolls back, no evidence needed); `max_increase`: the candidate's rate of requests with a critical
    failure may exceed the baseline's by at most this much (absolute, sequential test). One or both."""

    max: int | None = Field(None, ge=0)
    max_increase: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_rule(self) -> CriticalFailuresGuardrail:
        if self.max is None and self.max_increase is None:
            raise ValueError("critical_failures needs max (an absolute count) and/or max_increase (a rate increase "
                             "over the baseline's)")
        return self


class Guardrails(_Model):
    guard_failure_rate: GuardFailureRateGuardrail | None = None
    latency_p95_ms: LatencyGuardrail | None = None
    critical_failures: CriticalFailuresGuardrail | None = None


class Canary(_Model):
    baseline: str
    candidate: str
    stages: list[Annotated[float, Field(gt=0, le=100)]] = Field(min_length=1)  # percent of traffic
    min_samples: int = Field(ge=1)  # per variant per stage
    success_metric: str
    non_inferiority_margin: float = Field(0.02, ge=0)
    evaluate_every_s: float = Field(60, gt=0)
    stratum_hours: float = Field(24, gt=0)  # within a stage, compare the arms per period of this length, then combine
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @field_validator("stages")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        for before, after in zip(value, value[1:]):
            if after <= before:
                raise ValueError(
                    f"stages must be strictly increasing ({_fmt(before)} then {_fmt(after)})"
                )
        return value

    @field_validator("candidate")
    @classmethod
    def _two_variants(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("baseline"):
            raise ValueError("candidate must be a different model than baseline")
        return value


def _sticky(value: str) -> str:
    source, sep, name = value.partition(":")
    source = source.strip().lower()
    name = name.strip()
    if not sep or not name or source not in ("header", "body", "metadata"):
        raise ValueError(f"'{value}' must be header:<name>, body:<field> or metadata:<key>")
    if source == "header":
        name = name.lower()
    return f"{source}:{name}"


def _guard(value: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(
                "a guard is a name or a one-key mapping name -> options, e.g. {max_chars: 4000}"
            )
        (name,) = value
        if not isinstance(name, str) or not name:
            raise ValueError("a guard's name must be a non-empty string")
    elif not value:
        raise ValueError("a guard's name must be a non-empty string")
    return value


def _key_hash(value: str) -> str:
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise ValueError("a key is given as 'sha256:<64 hex digits>' (print one with `sluicegate keys hash`), "
                         "never as the key itself")
    return value


KeyHash = Annotated[str, AfterValidator(_key_hash)]


class RouteMatch(_Model):
    """Conditions on a request; all given must hold."""

    tag: str | None = None  # in x-sluicegate-tags / metadata tags
    header: dict[str, str] | None = None  # every header equal (names case-insensitive)
    metadata: dict[str, str] | None = None  # every key of the app's metadata equal (as strings)
    key: list[KeyHash] | None = None  # the caller's bearer key is one of these (`sluicegate keys hash`)
    caller: list[str] | None = None  # the caller is one of these `auth.keys` names

    @model_validator(mode="after")
    def _has_condition(self) -> RouteMatch:
        if self.tag is None and not self.header and not self.metadata and not self.key and not self.caller:
            raise ValueError("a match needs at least one of tag, header, metadata, key, caller")
        return self


class ConditionalTarget(_Model):
    """`when:` entry: requests that match are served by `model` or `split` instead of the route's own."""

    match: RouteMatch
    model: str | None = None
    split: dict[str, Annotated[float, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ConditionalTarget:
        if (self.model is None) == (self.split is None):
            raise ValueError("a `when` entry needs exactly one of model, split")
        if self.split is not None and abs(sum(self.split.values()) - 100) > 1e-6:
            raise ValueError(f"weights sum to {_fmt(sum(self.split.values()))}; they must sum to 100")
        return self


class Route(_Named):
    """How requests for one `model` name are served. Exactly one of split, model, canary."""

    split: dict[str, Annotated[float, Field(ge=0)]] | None = None  # model -> weight (sum 100)
    model: str | None = None  # single-model route
    canary: Canary | None = None
    sticky_by: list[Annotated[str, AfterValidator(_sticky)]] = Field(
        default_factory=lambda: list(DEFAULT_STICKY_BY)
    )
    salt: str | None = None  # experiment name for hashing; default: the route name
    control: str | None = None  # set at load: split -> first key, model -> model, canary -> baseline
    shadow: Shadow | None = None
    fallbacks: list[str] = Field(default_factory=list)
    guards: list[Annotated[str | dict[str, Any], AfterValidator(_guard)]] = Field(default_factory=list)
    on_guard_failure: dict[str, GuardAction] = Field(default_factory=dict)  # guard|severity -> action
    capture: Capture = "redacted"
    sampling: Sampling | None = Field(default_factory=Sampling)
    scorers: list[str] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0)  # overall upstream deadline, seconds
    stream_guard: Literal["flag", "buffer"] = "flag"
    max_retries: int = Field(1, ge=0)
    when: list[ConditionalTarget] = Field(default_factory=list)  # first match wins, before the split
    cache: Cache | None = None  # exact-match output cache (reproducible outputs)

    _variants: tuple[str, ...] = PrivateAttr(default=())
    _guard_names: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("split")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("a split needs at least one model")
        total = sum(value.values())
        if abs(total - 100) > 1e-6:
            raise ValueError(f"weights sum to {_fmt(total)}; they must sum to 100")
        return value

    @field_validator("control")
    @classmethod
    def _control_in_split(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        split = info.data.get("split")
        if split is not None:
            if value not in split:
                close = suggest(value, split)
                hint = f"; did you mean '{close}'?" if close else ""
                raise ValueError(f"control '{value}' is not a key of split{hint}")
        elif info.data.get("model") is not None or info.data.get("canary") is not None:
            raise ValueError("control only applies to split routes (a canary's control is its baseline)")
        return value

    @field_validator("cache")
    @classmethod
    def _cache_keeps_text(cls, value: Cache | None, info: ValidationInfo) -> Cache | None:
        if value is not None and info.data.get("capture") == "refs_only":
            raise ValueError("the output cache keeps whole answers (to serve them again), which a "
                             "`capture: refs_only` route must not store; use capture redacted or full, or no cache")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Route:
        given = [k for k in ("split", "model", "canary") if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"a route needs exactly one of split, model, canary (found {found})")
        if self.split is not None:
            variants = tuple(self.split)
        elif self.canary is not None:
            variants = (self.canary.baseline, self.canary.candidate)
        else:
            variants = (self.model,)  # type: ignore[assignment]
        if self.control is None:
            # frozen model: set once, during validation
            object.__setattr__(self, "control", variants[0])
        self._variants = variants
        self._guard_names = tuple(g if isinstance(g, str) else next(iter(g)) for g in self.guards)
        return self

    @property
    def variants(self) -> tuple[str, ...]:
        """Variant (model) names in order: split keys; (model,); (baseline, candidate)."""
        return self._variants

    @property
    def experiment(self) -> str:
        """The salt for sticky hashing: `salt`, or the route's name."""
        return self.salt or self._name

    @property
    def kind(self) -> Literal["split", "model", "canary"]:
        return "split" if self.split is not None else "canary" if self.canary is not None else "model"

    @property
    def guard_names(self) -> tuple[str, ...]:
        return self._guard_names

    def guard_options(self, name: str) -> Any:
        """Options given to a guard (`{max_chars: 4000}` -> 4000), None for a bare name."""
        for g in self.guards:
            if isinstance(g, dict) and name in g:
                return g[name]
        return None

    @property
    def models_used(self) -> tuple[str, ...]:
        """Every model this route may call: variants, fallbacks, shadow (no duplicates)."""
        names = [*self._variants, *self.fallbacks]
        if self.shadow is not None:
            names.append(self.shadow.model)
        return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------- outcomes


class Metric(_Named):
    type: Literal["boolean", "float"]
    level: Literal["inference", "episode"]
    goal: Literal["maximize", "minimize"]
    description: str | None = None


class TaxonomyClass(_Named):
    severity: Annotated[str, AfterValidator(_name)]  # critical | major | minor | a user severity
    description: str | None = None


# --------------------------------------------------------------------------- scorers


class RuleScorer(_Named):
    kind: Literal["rule"]
    regex: str | None = None  # must compile as a policy regex (RE2, linear time: proxy.guards._policy_regex)
    max_chars: int | None = Field(None, ge=1)
    json_path: str | None = None
    pii: bool = False
    keywords: list[str] | None = None
    label_on_match: str = "fail"
    taxonomy: str | None = None

    _pattern: PolicyRegex | None = PrivateAttr(default=None)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_policy_regex(value)
            except PolicyRegexError as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _has_check(self) -> RuleScorer:
        checks = (self.regex, self.max_chars, self.json_path, self.pii or None, self.keywords or None)
        if all(check is None for check in checks):
            raise ValueError(
                "a rule scorer needs at least one of regex, max_chars, json_path, pii, keywords"
            )
        if self.regex is not None:
            self._pattern = compile_policy_regex(self.regex)
        return self

    @property
    def pattern(self) -> PolicyRegex | None:
        """`regex`, compiled once at load."""
        return self._pattern


class TrustAfter(_Model):
    min_human_labels: int = Field(50, ge=0)
    min_kappa: float = Field(0.6, ge=-1, le=1)


class JudgeScorer(_Named):
    kind: Literal["llm_judge"]
    model: str
    rubric: str  # path relative to the policy file's folder
    labels: list[str] = Field(default_factory=lambda: ["pass", "fail"], min_length=1)
    trust_after: TrustAfter = Field(default_factory=TrustAfter)
    taxonomy: str | None = None

    _rubric_path: Path | None = PrivateAttr(default=None)
    _rubric_text: str | None = PrivateAttr(default=None)

    @field_validator("labels")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @property
    def rubric_path(self) -> Path | None:
        """The rubric file, resolved against the policy's folder at load."""
        return self._rubric_path

    @property
    def rubric_text(self) -> str | None:
        """The rubric's text, read once at load (a reload re-reads it)."""
        return self._rubric_text


class HumanScorer(_Named):
    kind: Literal["human"]
    rate: float = Field(ge=0, le=1)
    # extra ways into the queue besides `rate` (proxy/scoring/_worker.py `review_reason`)
    also: list[Literal["judge_low_confidence", "judge_disagrees_with_rule", "judge_error", "critical"]] = Field(
        default_factory=list)
    # what a reviewer may answer (the review page's digit keys follow this order)
    labels: list[str] = Field(default_factory=lambda: ["pass", "fail"], min_length=1)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label.strip():
                raise ValueError("a label must be a non-empty string")
            if label != label.strip():
                raise ValueError(f"label '{label}' has leading or trailing spaces")
        if len(set(value)) != len(value):
            repeated = sorted({label for label in value if value.count(label) > 1})
            raise ValueError(f"labels must be unique ({', '.join(repeated)} given more than once)")
        return value


Scorer = Annotated[RuleScorer | JudgeScorer | HumanScorer, Field(discriminator="kind")]


# --------------------------------------------------------------------------- the rest


class Budgets(_Model):
    judge_usd_per_day: float | None = Field(None, ge=0)


class Passthrough(_Model):
    """Requests whose `model` names no route go, unchanged, to this provider."""

    provider: str
    capture: Capture = "redacted"


class Server(_Model):
    """Limits on what a caller may send (each refused with a 4xx that says which)."""

    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_messages: int = Field(2048, ge=1)  # chat messages per request
    max_tools: int = Field(256, ge=1)  # tools (and legacy functions) declared per request
    max_header_bytes: int = Field(32 * 1024, ge=1024)  # all request headers together (431 past it)
    body_timeout: float = Field(30.0, gt=0)  # seconds a client may take to send its body (408 past it)
    # requests in flight per caller key, per process (429 past it); null: no cap. Keys may set their own.
    max_concurrent_per_key: int | None = Field(64, ge=1)
    # connections (proxy/server/_connections.py): read when a connection opens, so a reload applies to new ones
    header_timeout: float = Field(10.0, gt=0)  # seconds from a request's first byte to the end of its headers
    idle_timeout: float = Field(5.0, gt=0)  # seconds a connection may stay silent (new, or between requests)
    max_connections: int = Field(4096, ge=1)  # open client connections; more are answered 503 and closed
    # the Host names this gateway answers to (DNS rebinding; proxy/server/_hosts.py). None: loopback names
    # when the gateway is open (no auth.keys), any host when it has keys
    allowed_hosts: list[Annotated[str, AfterValidator(_host_pattern)]] | None = None
    # the origins browsers reach this gateway at (scheme://host[:port]), when a proxy in front changes the
    # scheme or port; default: the request's own scheme and Host (proxy/server/_crosssite.py)
    public_origins: list[Annotated[str, AfterValidator(_origin)]] = Field(default_factory=list)


class RateLimit(_Model):
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)  # prompt + completion tokens of answered requests


class CallerKey(_Model):
    """One caller: its key's hash, the routes it may use (`*`: all), its rate limit, its concurrency cap."""

    hash: KeyHash
    routes: list[str] = Field(default_factory=lambda: ["*"])
    rate_limit: RateLimit | None = None
    max_concurrent: int | None = Field(None, ge=1)  # requests in flight at most; none: server.max_concurrent_per_key


class Auth(_Model):
    """Who may call. No `keys`: open (and `serve` then binds to 127.0.0.1 only, unless told otherwise)."""

    keys: dict[Name, CallerKey] = Field(default_factory=dict)
    admin_keys: list[KeyHash] = Field(default_factory=list)  # /admin/*, /v1/reports, /v1/review, /review, /ui
    rate_limit_store: str | None = None  # redis://… shares the counts across replicas; else per process

    @field_validator("rate_limit_store")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("rate_limit_store must be a redis://, rediss:// or unix:// URL")
        return value


class Policy(_Model):
    providers: dict[Name, Provider]
    models: dict[Name, ModelVariant] = Field(default_factory=dict)
    routes: dict[Name, Route] = Field(default_factory=dict)
    metrics: dict[Name, Metric] = Field(default_factory=dict)
    taxonomy: dict[Name, TaxonomyClass] = Field(default_factory=dict)
    scorers: dict[Name, Scorer] = Field(default_factory=dict)
    budgets: Budgets = Field(default_factory=Budgets)
    passthrough: Passthrough | None = None
    server: Server = Field(default_factory=Server)
    auth: Auth = Field(default_factory=Auth)

    _source: str = PrivateAttr(default="<string>")
    _version: str = PrivateAttr(default="")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def model_post_init(self, context: Any, /) -> None:
        sections = (self.providers, self.models, self.routes, self.metrics, self.taxonomy, self.scorers)
        for section in sections:
            for name, entry in section.items():
                entry._name = name

    def _attach(
        self, source: str, text: str, base_dir: Path, rubrics: dict[str, tuple[Path, str]]
    ) -> None:
        """Called once by the loader: where the policy came from, and the rubrics it read."""
        self._source = source
        self._version = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
        self._base_dir = base_dir
        for name, (path, rubric) in rubrics.items():
            scorer = self.scorers.get(name)
            if isinstance(scorer, JudgeScorer):
                scorer._rubric_path = path
                scorer._rubric_text = rubric

    @property
    def source(self) -> str:
        """The file this policy was read from (as given), or "<string>"."""
        return self._source

    @property
    def version(self) -> str:
        """First 12 hex digits of the sha256 of the file's text (before interpolation)."""
        return self._version

    @property
    def base_dir(self) -> Path:
        """The folder relative paths (rubrics) are resolved against."""
        return self._base_dir

    @property
    def severities(self) -> tuple[str, ...]:
        """critical, major, minor and any other severity the taxonomy uses."""
        extra = [t.severity for t in self.taxonomy.values() if t.severity not in STANDARD_SEVERITIES]
        return tuple(dict.fromkeys([*STANDARD_SEVERITIES, *extra]))

    def secrets(self) -> list[str]:
        """Every provider's secrets (`provider_secrets`: key, auth-like header values, URL credentials), for scrubbing logs."""
        found: list[str] = []
        for provider in self.providers.values():
            # key and header values whatever their length (a log line never needs them), then URL credentials
            if provider.api_key is not None and provider.api_key.get_secret_value():
                found.append(provider.api_key.get_secret_value())
            found += [value for header, value in provider.headers.items() if value and is_auth_header(header)]
            found += provider_secrets(None, None, provider.base_url)
        return list(dict.fromkeys(found))

    def summary(self) -> str:
        """One line for `sluicegate check`."""

        def count(n: int, word: str) -> str:
            return f"{n} {word}" + ("" if n == 1 else "s")

        described = []
        for name, route in self.routes.items():
            if route.split is not None:
                what = "split " + " / ".join(f"{m} {_fmt(w)}" for m, w in route.split.items())
            elif route.canary is not None:
                what = f"canary {route.canary.baseline} -> {route.canary.candidate}"
            else:
                what = f"model {route.model}"
            described.append(f"{name}: {what}")
        routes = count(len(self.routes), "route")
        if described:
            routes += f" ({'; '.join(described)})"
        parts = [
            count(len(self.providers), "provider"),
            count(len(self.models), "model"),
            routes,
            count(len(self.scorers), "scorer"),
        ]
        if self.passthrough is not None:
            parts.append(f"passthrough -> {self.passthrough.provider}")
        return f"{self._source}: OK - {', '.join(parts)}"
