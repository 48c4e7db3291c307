"""The sampler: which records are scored asynchronously, at what rate, and with what weight.

A pure function of the route's `sampling` policy and a record's facts. The random part is a hash
of the request id, so every replica, every restart and every re-run makes the same decision, and
a later fact (feedback) can raise the rate without ever scoring a record twice.

    sampler = Sampler(route.sampling)
    decision = sampler.decide(facts_from_record(record), scale=budget_scale)
    if decision.sampled: enqueue(record, weight=decision.weight)
    ...
    later = sampler.decide_later(before, after)  # a correction arrived
    if later is not None: enqueue(record, weight=later.weight)

Scores of sampled records are combined with `reweight`, which undoes the oversampling.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config._models import Sampling, SamplingRule

__all__ = ["SampleDecision", "SampleFacts", "Sampler", "draw", "facts_from_record", "reweight"]

# the conditions `_matches` knows; a policy with any other one is refused rather than ignored
_CONDITIONS = frozenset({"tag", "guard_failed", "feedback", "variant", "metadata", "taxonomy", "severity"})
# a rate-1.0 rule with one of these conditions is never scaled down by the judge budget
_UNSCALED = ("tag", "severity")
_EMPTY: Mapping[str, str] = MappingProxyType({})


def draw(request_id: str, salt: str = "sample") -> float:
    """Uniform in [0, 1), the same in every process: 64-bit blake2b of `salt`, NUL, `request_id`."""
    # the NUL keeps ("ab", "c") apart from ("a", "bc")
    digest = hashlib.blake2b(f"{salt}\x00{request_id}".encode(), digest_size=8).digest()
    # the top 53 bits: a float holds them exactly, so the result never rounds up to 1.0
    return (int.from_bytes(digest, "big") >> 11) / 2**53


@dataclass(frozen=True, slots=True)
class SampleFacts:
    """What the sampling rules look at, for one request.

    `taxonomy` and `severities` are those of failed guards (and scorers, when known); `feedback`
    holds what arrived later, e.g. "corrected" or the names of metrics with a negative outcome.
    """

    request_id: str
    route: str
    variant: str
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    guard_failed: bool = False
    taxonomy: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    feedback: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # callers pass lists, sets and dicts; freeze them so the facts really are immutable
        # (the type checks only skip work for what is immutable already: facts are made in bulk)
        if type(self.tags) is not tuple:
            object.__setattr__(self, "tags", tuple(self.tags))
        if self.metadata is not _EMPTY:
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        for name in ("taxonomy", "severities", "feedback"):
            if type(getattr(self, name)) is not frozenset:
                object.__setattr__(self, name, frozenset(getattr(self, name)))

    @classmethod
    def from_record(cls, record: Any, *, feedback: Iterable[str] = ()) -> SampleFacts:
        """Same as `facts_from_record`."""
        return facts_from_record(record, feedback=feedback)


@dataclass(frozen=True, slots=True)
class SampleDecision:
    """`rate` is the effective rate applied (after scaling); `weight` is 1/rate when sampled, else 0."""

    sampled: bool
    rate: float
    weight: float
    rule: str  # "default" or "rules[i]" (index in policy order)
    draw: float


# ---------------------------------------------------------------- facts from a record


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value if v is not None and str(v))
    return (str(value),)


def _text(value: Any) -> str | None:
    """A metadata value as rules compare it; None for values no rule can name (lists, dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML spells it in a policy
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _metadata(request: Any) -> dict[str, str]:
    raw = request.get("metadata") if isinstance(request, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}  # absent, or replaced by redaction
    return {str(k): t for k, v in raw.items() if (t := _text(v)) is not None}


def _failed_guards(guards: Any) -> list[Mapping[str, Any]]:
    if not guards:
        return []
    if isinstance(guards, Mapping):
        guards = list(guards.values())
    elif not isinstance(guards, (list, tuple)):
        guards = [guards]
    # guards report failures only, so an entry without `passed` is a failure (as the store counts it);
    # a malformed entry counts as a failure without a class: oversampling is the safe side
    return [g if isinstance(g, Mapping) else {} for g in guards
            if not (isinstance(g, Mapping) and g.get("passed"))]


def _field_set(guards: list[Mapping[str, Any]], key: str) -> frozenset[str]:
    return frozenset(str(g[key]) for g in guards if g.get(key))


def facts_from_record(record: Any, *, feedback: Iterable[str] = ()) -> SampleFacts:
    """The facts of a `proxy.records.Record` (or anything with its attributes); missing parts are empty."""
    failed = _failed_guards(getattr(record, "guards", None))
    return SampleFacts(
        request_id=str(getattr(record, "request_id", None) or ""),
        route=str(getattr(record, "route", None) or ""),
        variant=str(getattr(record, "variant", None) or ""),
        tags=_strings(getattr(record, "tags", None)),
        metadata=_metadata(getattr(record, "request", None)),
        guard_failed=bool(failed),
        taxonomy=_field_set(failed, "taxonomy"),
        severities=_field_set(failed, "severity"),
        feedback=frozenset(_strings(feedback)),
    )


# ---------------------------------------------------------------- the sampler


def _matches(rule: SamplingRule, facts: SampleFacts) -> bool:
    """True when every condition the rule sets holds; an unset (None) condition always holds."""
    return (
        (rule.tag is None or rule.tag in facts.tags)
        and (rule.guard_failed is None or rule.guard_failed == facts.guard_failed)
        and (rule.feedback is None or rule.feedback in facts.feedback)
        and (rule.variant is None or rule.variant == facts.variant)
        and (rule.taxonomy is None or rule.taxonomy in facts.taxonomy)
        and (rule.severity is None or rule.severity in facts.severities)
        and (rule.metadata is None or all(facts.metadata.get(k) == v for k, v in rule.metadata.items()))
    )


def _unscaled(rule: SamplingRule) -> bool:
    return rule.rate == 1.0 and any(getattr(rule, name) is not None for name in _UNSCALED)


def _check_scale(scale: float) -> float:
    if not 0.0 <= scale <= 1.0:  # also refuses NaN
        raise ValueError(f"scale must be within [0, 1], got {scale!r}")
    return float(scale)


class Sampler:
    """Decides, per request, whether it is scored. One per route; stateless after construction.

    Precedence: the FIRST rule, in policy order, whose conditions ALL match decides the rate;
    when none matches, `default` does. Conditions: `tag` is in the tags; `guard_failed` equals;
    `feedback` is in the feedback; `variant` equals; every `metadata` key/value equals;
    `taxonomy` is among the failure classes; `severity` is among the severities.

    `scale` (the judge-budget back-off, in [0, 1]) multiplies the chosen rate, EXCEPT for a rule
    with rate 1.0 that has a `tag` or `severity` condition: sensitive and severe traffic stays at
    100% whatever the budget. A rule with any other rate, or with rate 1.0 and neither condition
    (e.g. `guard_failed`, `feedback`), is scaled like `default`.

    A request is sampled when `draw(request_id, salt) < effective rate`. Without a sampling
    policy nothing is sampled (rate 0).
    """

    __slots__ = ("sampling", "salt", "_rules")

    def __init__(self, sampling: Sampling | None, *, salt: str = "sample") -> None:
        self.sampling = sampling
        self.salt = salt
        rules = list(sampling.rules) if sampling is not None else []
        for i, rule in enumerate(rules):
            unknown = set(rule.conditions) - _CONDITIONS
            if unknown:  # a condition we would silently ignore would make the rule match too much
                raise ValueError(f"rules[{i}]: unsupported sampling condition(s) {sorted(unknown)}")
        self._rules: tuple[tuple[str, SamplingRule], ...] = tuple((f"rules[{i}]", r) for i, r in enumerate(rules))

    def rate_for(self, facts: SampleFacts, *, scale: float = 1.0) -> tuple[str, float]:
        """The deciding rule's name and the effective rate for these facts."""
        scale = _check_scale(scale)
        for name, rule in self._rules:
            if _matches(rule, facts):
                return name, rule.rate if _unscaled(rule) else rule.rate * scale
        base = self.sampling.default if self.sampling is not None else 0.0
        return "default", base * scale

    def decide(self, facts: SampleFacts, *, scale: float = 1.0) -> SampleDecision:
        """Whether this request is scored, at which rate and with which weight."""
        rule, rate = self.rate_for(facts, scale=scale)
        u = draw(facts.request_id, self.salt)
        sampled = u < rate  # rate 0 never samples: the draw is >= 0
        return SampleDecision(sampled=sampled, rate=rate, weight=1.0 / rate if sampled else 0.0, rule=rule, draw=u)

    def decide_later(
        self,
        before: SampleFacts,
        after: SampleFacts,
        *,
        scale: float = 1.0,
        before_scale: float | None = None,
    ) -> SampleDecision | None:
        """The new decision when `after` samples a request `before` did not; otherwise None.

        The draw is the same for both (same request id), so a request sampled before is never
        sampled again. `before_scale` is the scale of the earlier decision (default: `scale`).
        """
        if before.request_id != after.request_id:
            raise ValueError(f"facts of two requests: {before.request_id!r} and {after.request_id!r}")
        earlier = self.decide(before, scale=scale if before_scale is None else before_scale)
        if earlier.sampled:
            return None
        now = self.decide(after, scale=scale)
        return now if now.sampled else None


# ---------------------------------------------------------------- estimates


def reweight(items: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """The Hájek weighted mean of (value, weight) pairs and its linearised standard error.

    se = sqrt(sum(w_i^2 (y_i - mean)^2)) / sum(w_i). Pairs with weight 0 (not sampled) add nothing.
    """
    pairs = [(float(y), float(w)) for y, w in items]
    if not pairs:
        raise ValueError("reweight needs at least one (value, weight) pair")
    if any(w < 0 or not math.isfinite(w) for _, w in pairs):
        raise ValueError("weights must be finite and non-negative")
    total = math.fsum(w for _, w in pairs)
    if total <= 0:
        raise ValueError("total weight is zero")
    mean = math.fsum(w * y for y, w in pairs) / total
    se = math.sqrt(math.fsum(w * w * (y - mean) ** 2 for y, w in pairs)) / total
    return mean, se
