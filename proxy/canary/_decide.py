"""The canary controller's decision: a pure function of the config, the stage and the figures.

``decide`` takes the ``canary:`` block of a route (``proxy.config.Canary``), the current
traffic stage (percent of traffic on the candidate) and per-arm summary numbers the report
engine can provide, and returns a :class:`Decision` — promote, hold, roll back, or
``promoted`` (done). No I/O, no clock, no state: the controller that calls it every
``evaluate_every_s`` seconds owns the time, the store and the decision log.

Rules, first match wins
-----------------------

1. ``critical_failures`` — the candidate's critical failures exceed
   ``guardrails.critical_failures.max`` → **rollback** (at once, whatever the samples).
2. ``guardrail_guard_failure_rate`` — the always-valid lower confidence bound of
   (candidate − baseline) guard-failure rate is above ``max_increase`` → **rollback**.
3. ``guardrail_latency`` — both arms have ≥ ``min_samples`` requests and
   candidate p95 / baseline p95 > ``max_ratio`` → **rollback**.
4. ``final_stage`` — the stage is 100 % (the baseline serves nothing any more, so there is
   nothing left to compare) → **promoted**; the controller stops.
5. ``need_samples`` — either arm has fewer than ``min_samples`` outcomes *in this stage*
   → **hold**.
6. ``inferior`` — the always-valid *upper* confidence bound of (candidate − baseline)
   success rate is below −margin: the candidate is worse by more than the margin, with
   evidence → **rollback**. (Not in the issue's list; without it a clearly worse candidate
   would be held forever instead of rolled back.)
7. ``non_inferior`` — the always-valid *lower* confidence bound of (candidate − baseline)
   success rate is above −margin → **promote** to the next stage, or **promoted** when
   this was the last configured stage (``to_stage`` 100).
8. ``inconclusive`` — otherwise → **hold**. Inconclusive is never a pass.

Statistics
----------

Every comparison of rates uses the always-valid **confidence sequence of the normal-mixture
mSPRT** (Johari, Pekelis & Walsh 2022; boundary as in Howard et al. 2021) from
:func:`proxy.reports._sequential.confidence_sequence` — the same code the reports use, with
its default mixing variance (tuned to 1,000 outcomes per arm). A confidence sequence covers
the true difference at every look simultaneously, so the controller may call ``decide`` as
often as it likes without inflating error rates — provided the figures are **cumulative
since the canary started** (one growing stream per arm, across stages); pass the outcomes
seen in the current stage as ``stage_outcomes`` for the per-stage sample gate.

The one-sided decisions (rules 2, 6, 7) use one end of the two-sided (1 − α) sequence.
By Ville's inequality the two-sided sequence misses the truth at any look with probability
≤ α, so each one-sided decision errs with probability ≤ α (conservatively; about α/2 for
symmetric data). The guarantee is asymptotic because the variances are plug-in estimates
(see the module docstring of ``proxy.reports._sequential``). Latency (rule 3) and critical
failures (rule 1) are thresholds on the figures as given, not tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.config import Canary
from proxy.reports._sequential import confidence_sequence

__all__ = ["Action", "ArmFigures", "CanaryFigures", "Decision", "decide", "next_stage"]

Action = Literal["promote", "hold", "rollback", "promoted"]

FULL_TRAFFIC = 100.0


@dataclass(frozen=True, slots=True)
class ArmFigures:
    """Summary numbers for one arm, cumulative since the canary started.

    ``successes`` / ``outcomes``: the success metric (outcomes that have a value for it).
    ``stage_outcomes``: outcomes observed since the current stage began (for the
    ``min_samples`` gate); ``None`` means the same as ``outcomes``.
    ``requests`` / ``guard_failures``: requests served and those with a guard failure.
    ``critical_failures``: guard failures of severity ``critical``.
    ``latency_p95_ms``: p95 latency; ``None`` when unknown.
    """

    successes: int
    outcomes: int
    requests: int = 0
    guard_failures: int = 0
    critical_failures: int = 0
    latency_p95_ms: float | None = None
    stage_outcomes: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.successes <= self.outcomes:
            raise ValueError(f"need 0 <= successes <= outcomes ({self.successes}/{self.outcomes})")
        if not 0 <= self.guard_failures <= self.requests:
            raise ValueError(
                f"need 0 <= guard_failures <= requests ({self.guard_failures}/{self.requests})"
            )
        if self.critical_failures < 0:
            raise ValueError("critical_failures must be >= 0")
        if self.stage_outcomes is not None and not 0 <= self.stage_outcomes <= self.outcomes:
            raise ValueError("need 0 <= stage_outcomes <= outcomes")
        if self.latency_p95_ms is not None and self.latency_p95_ms < 0:
            raise ValueError("latency_p95_ms must be >= 0")

    @property
    def in_stage(self) -> int:
        return self.outcomes if self.stage_outcomes is None else self.stage_outcomes


@dataclass(frozen=True, slots=True)
class CanaryFigures:
    baseline: ArmFigures
    candidate: ArmFigures


@dataclass(frozen=True, slots=True)
class Decision:
    """One evaluation: what to do, which rule fired, and every number behind it."""

    action: Action
    from_stage: float
    to_stage: float
    rule: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def next_stage(stages: Sequence[float], current: float) -> float | None:
    """The first configured stage above ``current``; ``None`` when there is none."""
    for stage in stages:
        if stage > current:
            return stage
    return None


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def _stage(x: float) -> str:
    return f"{x:g}%"


def decide(
    canary: Canary,
    stage_percent: float,
    figures: CanaryFigures,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
) -> Decision:
    """Decide promote / hold / rollback / promoted for one look (see the module docstring).

    ``margin``: the non-inferiority margin (absolute, on the success rate); ``None`` takes
    ``canary.non_inferiority_margin`` (0.02 by default). ``alpha``: error rate of each
    sequential decision.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if stage_percent not in canary.stages and stage_percent != FULL_TRAFFIC:
        raise ValueError(f"stage {stage_percent!r} is not one of {canary.stages}")
    margin = canary.non_inferiority_margin if margin is None else margin
    if margin < 0:
        raise ValueError("margin must be >= 0")
    base, cand = figures.baseline, figures.candidate
    guards = canary.guardrails
    confidence = 1.0 - alpha
    f: dict[str, Any] = {
        "stage_percent": stage_percent,
        "alpha": alpha,
        "margin": margin,
        "min_samples": canary.min_samples,
        "success_metric": canary.success_metric,
    }
    for name, arm in (("baseline", base), ("candidate", cand)):
        f[f"{name}_successes"] = arm.successes
        f[f"{name}_outcomes"] = arm.outcomes
        f[f"{name}_stage_outcomes"] = arm.in_stage
        f[f"{name}_requests"] = arm.requests
        f[f"{name}_guard_failures"] = arm.guard_failures
        f[f"{name}_critical_failures"] = arm.critical_failures
        f[f"{name}_latency_p95_ms"] = arm.latency_p95_ms

    def out(action: Action, to_stage: float, rule: str, reason: str) -> Decision:
        return Decision(action, stage_percent, to_stage, rule, reason, dict(f))

    # 1. critical failures: at once.
    if guards.critical_failures is not None:
        cap = guards.critical_failures.max
        f["critical_failures_max"] = cap
        if cand.critical_failures > cap:
            return out("rollback", 0.0, "critical_failures",
                       f"candidate {canary.candidate} had {cand.critical_failures} critical "
                       f"failures, more than the maximum {cap}; rolled back from "
                       f"{_stage(stage_percent)} to 0%")

    # 2. guard failure rate: sequential evidence of an increase beyond max_increase.
    if guards.guard_failure_rate is not None and base.requests > 0 and cand.requests > 0:
        max_inc = guards.guard_failure_rate.max_increase
        low, high = confidence_sequence(base.guard_failures, base.requests,
                                        cand.guard_failures, cand.requests,
                                        confidence=confidence)
        rb, rc = base.guard_failures / base.requests, cand.guard_failures / cand.requests
        f.update(guard_failure_rate_baseline=rb, guard_failure_rate_candidate=rc,
                 guard_failure_rate_diff=rc - rb, guard_failure_rate_cs_low=low,
                 guard_failure_rate_cs_high=high, guard_failure_rate_max_increase=max_inc)
        if low > max_inc:
            return out("rollback", 0.0, "guardrail_guard_failure_rate",
                       f"guard failure rate {_pct(rc)} ({cand.guard_failures}/{cand.requests}) "
                       f"vs baseline {_pct(rb)} ({base.guard_failures}/{base.requests}): the "
                       f"increase is at least {_pct(low)} ({_pct(confidence)} confidence "
                       f"sequence {_pct(low)}..{_pct(high)}), above the allowed "
                       f"{_pct(max_inc)}; rolled back from {_stage(stage_percent)} to 0%")

    # 3. latency p95 ratio, once both arms have enough requests.
    if (guards.latency_p95_ms is not None and base.latency_p95_ms is not None
            and cand.latency_p95_ms is not None and base.latency_p95_ms > 0):
        max_ratio = guards.latency_p95_ms.max_ratio
        ratio = cand.latency_p95_ms / base.latency_p95_ms
        f.update(latency_p95_ratio=ratio, latency_max_ratio=max_ratio)
        enough = min(base.requests, cand.requests) >= canary.min_samples
        if enough and ratio > max_ratio:
            return out("rollback", 0.0, "guardrail_latency",
                       f"candidate p95 latency {cand.latency_p95_ms:g} ms is {ratio:.2f}x the "
                       f"baseline's {base.latency_p95_ms:g} ms (max {max_ratio:g}x, "
                       f"{cand.requests} and {base.requests} requests); rolled back from "
                       f"{_stage(stage_percent)} to 0%")

    # 4. full traffic: nothing left to compare against.
    if stage_percent >= FULL_TRAFFIC:
        return out("promoted", stage_percent, "final_stage",
                   f"candidate {canary.candidate} serves {_stage(stage_percent)} of traffic "
                   f"with guardrails held; promoted")

    # 5. samples in this stage.
    if min(base.in_stage, cand.in_stage) < canary.min_samples:
        return out("hold", stage_percent, "need_samples",
                   f"need {canary.min_samples} outcomes per arm in this stage; baseline has "
                   f"{base.in_stage}, candidate {cand.in_stage}; holding at "
                   f"{_stage(stage_percent)}")

    # 6./7. success metric: inferiority (rollback) or non-inferiority (promote).
    low, high = confidence_sequence(base.successes, base.outcomes,
                                    cand.successes, cand.outcomes, confidence=confidence)
    pb, pc = base.successes / base.outcomes, cand.successes / cand.outcomes
    f.update(success_rate_baseline=pb, success_rate_candidate=pc, success_diff=pc - pb,
             success_cs_low=low, success_cs_high=high)
    summary = (f"{canary.success_metric}: candidate {_pct(pc)} ({cand.successes}/{cand.outcomes})"
               f" vs baseline {_pct(pb)} ({base.successes}/{base.outcomes}), difference "
               f"{_pct(pc - pb)}, {_pct(confidence)} confidence sequence {_pct(low)}..{_pct(high)}"
               f", margin -{_pct(margin)}")
    if high < -margin:
        return out("rollback", 0.0, "inferior",
                   f"{summary}: candidate is worse by more than the margin; rolled back from "
                   f"{_stage(stage_percent)} to 0%")
    if low > -margin:
        nxt = next_stage(canary.stages, stage_percent)
        if nxt is None:
            return out("promoted", FULL_TRAFFIC, "non_inferior",
                       f"{summary}: non-inferior at the last stage {_stage(stage_percent)}; "
                       f"promoted")
        return out("promote", nxt, "non_inferior",
                   f"{summary}: non-inferior; promoted from {_stage(stage_percent)} to "
                   f"{_stage(nxt)}")
    return out("hold", stage_percent, "inconclusive",
               f"{summary}: inconclusive; holding at {_stage(stage_percent)}")
