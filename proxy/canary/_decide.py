"""The canary controller's decision: a pure function of the config, the stage and the figures.

``decide`` takes the ``canary:`` block of a route (``proxy.config.Canary``), the current traffic stage
(percent of traffic on the candidate) and the run's figures, and returns a :class:`Decision` — promote,
hold, roll back, or ``promoted`` (done) — with every number behind it. No I/O, no clock, no state: the
controller (``proxy.canary._controller``) owns the time, the store, the run and the decision log.

Evidence
--------
The sequential rules read :class:`Evidence`: one estimate of candidate − baseline per metric
(``proxy.reports.Estimate``). The controller builds it from the canary **run** only (requests assigned since
the run started, ``proxy.canary._state``), **stratified** by period of constant allocation — each stage, cut
by ``stratum_hours`` — and **cluster-robust** over sticky units, with the covariance of units that span
periods (``proxy.canary._strata``). Without evidence (``figures.evidence=None``) it is built from the arms'
counts as independent outcomes in one period (``proxy.reports.proportion_estimate``), which is right only
for unclustered counts of one period of constant allocation.

Every test reads the always-valid **confidence sequence of the normal-mixture mSPRT** on its estimate
(``proxy.reports.always_valid``; Johari, Pekelis & Walsh, Operations Research 2022; boundary as in Howard
et al., Ann. Statist. 2021). A confidence sequence covers the true difference at every look at once (Ville's
inequality), so the controller may evaluate as often as it likes. The estimates are edge-safe (an arm at
0 % or 100 % does not make a difference look exact; ``proxy.reports._estimates``).

Rules, first match wins
-----------------------
1. ``critical_failures`` — ``guardrails.critical_failures.max`` set and the candidate's requests with a
   critical failure in this run exceed it → **rollback** at once, no evidence needed (a count).
2. ``guardrail_critical_failure_rate`` — ``critical_failures.max_increase`` set and the lower confidence
   bound of (candidate − baseline) rate of requests with a critical failure is above it → **rollback**.
3. ``guardrail_guard_failure_rate`` — the lower bound of (candidate − baseline) guard-failure rate (requests
   with a failed guard) is above ``max_increase`` → **rollback**.
4. ``guardrail_latency`` — the lower bound of (candidate − baseline) per-unit mean of ln(latency) is above
   ln(``max_ratio``): the candidate is slower than ``max_ratio`` times the baseline (a ratio of geometric
   means), with evidence → **rollback**. (A bare threshold on a p95 ratio, evaluated every minute, rolled an
   A/A canary back in 12.5 % of runs with heavy-tailed latencies; logs tame the tail, the sequence the looks.)
5. ``final_stage`` — the stage is 100 % (the baseline serves nothing any more) → **promoted**.
6. ``need_samples`` — either arm has fewer than ``min_samples`` outcomes *in this stage* → **hold**.
7. ``inferior`` — the upper bound of (candidate − baseline) success rate is below −margin → **rollback**.
8. ``non_inferior`` — the lower bound of (candidate − baseline) success rate is above −margin → **promote**
   to the next stage, or **promoted** when this was the last configured stage (``to_stage`` 100).
9. ``inconclusive`` — otherwise → **hold**, with the plan (``figures["plan"]``: per stage, the outcomes each
   arm still needs and the hours that should take, ``proxy.canary._plan``).

Error rates
-----------
A one-sided decision on one end of a two-sided (1 − a) sequence errs with probability ≤ a. The rollback
rules that test (2, 3, 4, 7) share α by **Bonferroni**: each reads its sequence at a = α / k for the k of them
configured, so an A/A candidate is rolled back by any of them with probability ≤ α. Promotion (8) reads the
(1 − α) sequence: a candidate worse than the margin is promoted, at any stage, with probability ≤ α.
The guarantee is asymptotic (plug-in variances), and measured by seeded simulations in
``tests/canary/test_canary_simulation.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from proxy.canary._plan import stage_plan
from proxy.config import Canary
from proxy.reports import Estimate, SequentialResult, always_valid, proportion_estimate

__all__ = ["Action", "ArmFigures", "CanaryFigures", "Decision", "Evidence", "decide", "next_stage",
           "rollback_rules"]

Action = Literal["promote", "hold", "rollback", "promoted"]

FULL_TRAFFIC = 100.0


@dataclass(frozen=True, slots=True)
class ArmFigures:
    """Summary numbers for one arm over the canary run (what the decision shows and gates on).

    ``successes`` / ``outcomes``: the success metric (outcomes that have a value for it).
    ``stage_outcomes``: outcomes observed since the current stage began (for the ``min_samples`` gate);
    ``None`` means the same as ``outcomes``.
    ``requests`` / ``guard_failures``: requests served and those with a failed guard.
    ``critical_failures``: requests with a failed guard of severity ``critical``.
    ``latency_p95_ms`` / ``latency_geomean_ms``: shown, not tested (the test is on log latency per unit).
    """

    successes: float
    outcomes: int
    requests: int = 0
    guard_failures: int = 0
    critical_failures: int = 0
    latency_p95_ms: float | None = None
    stage_outcomes: int | None = None
    latency_geomean_ms: float | None = None

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
class Evidence:
    """Candidate − baseline per tested metric (None: nothing to test yet), and how it was built."""

    success: Estimate | None = None
    guard_failure_rate: Estimate | None = None
    critical_failure_rate: Estimate | None = None
    log_latency: Estimate | None = None  # per-unit mean of ln(latency ms)
    periods: int = 1  # periods of constant allocation combined
    unit: str = "request"  # the unit of analysis

    @classmethod
    def from_counts(cls, base: ArmFigures, cand: ArmFigures) -> Evidence:
        """Independent outcomes and requests, one period (no latency test: counts carry no latency)."""

        def prop(s1: float, n1: int, s2: float, n2: int) -> Estimate | None:
            if n1 <= 0 or n2 <= 0:
                return None
            return proportion_estimate(round(min(s1, n1)), n1, round(min(s2, n2)), n2)

        return cls(success=prop(base.successes, base.outcomes, cand.successes, cand.outcomes),
                   guard_failure_rate=prop(base.guard_failures, base.requests, cand.guard_failures, cand.requests),
                   critical_failure_rate=prop(base.critical_failures, base.requests, cand.critical_failures,
                                              cand.requests))


@dataclass(frozen=True, slots=True)
class CanaryFigures:
    """What one evaluation decides on. ``evidence``: the run's stratified, cluster-robust estimates (None:
    from the counts). ``stage_elapsed_s``: seconds since the current stage began (for the plan's times).
    ``run``: the run's id and start, shown with the figures."""

    baseline: ArmFigures
    candidate: ArmFigures
    evidence: Evidence | None = None
    stage_elapsed_s: float | None = None
    run: Mapping[str, Any] | None = None


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


def rollback_rules(canary: Canary) -> list[str]:
    """The sequential rollback rules a canary's config turns on (they share α by Bonferroni)."""
    g = canary.guardrails
    rules = []
    if g.critical_failures is not None and g.critical_failures.max_increase is not None:
        rules.append("guardrail_critical_failure_rate")
    if g.guard_failure_rate is not None:
        rules.append("guardrail_guard_failure_rate")
    if g.latency_p95_ms is not None:
        rules.append("guardrail_latency")
    rules.append("inferior")
    return rules


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def _stage(x: float) -> str:
    return f"{x:g}%"


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _sequence(estimate: Estimate | None, confidence: float) -> SequentialResult | None:
    if estimate is None or not math.isfinite(estimate.variance):
        return None
    return always_valid(estimate, confidence=confidence)


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
    ``canary.non_inferiority_margin`` (0.02 by default). ``alpha``: the error rate of the rollback rules
    together, and of promoting a candidate worse than the margin.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if stage_percent not in canary.stages and stage_percent != FULL_TRAFFIC:
        raise ValueError(f"stage {stage_percent!r} is not one of {canary.stages}")
    margin = canary.non_inferiority_margin if margin is None else margin
    if margin < 0:
        raise ValueError("margin must be >= 0")
    base, cand = figures.baseline, figures.candidate
    ev = figures.evidence if figures.evidence is not None else Evidence.from_counts(base, cand)
    guards = canary.guardrails
    confidence = 1.0 - alpha
    tested = rollback_rules(canary)
    alpha_rollback = alpha / len(tested)
    rollback_confidence = 1.0 - alpha_rollback
    f: dict[str, Any] = {
        "stage_percent": stage_percent,
        "alpha": alpha,
        "alpha_rollback": alpha_rollback,
        "rollback_rules": tested,
        "margin": margin,
        "min_samples": canary.min_samples,
        "success_metric": canary.success_metric,
        "periods": ev.periods,
        "unit": ev.unit,
    }
    if figures.run:
        f.update({f"run_{k}": v for k, v in figures.run.items()})
    for name, arm in (("baseline", base), ("candidate", cand)):
        f[f"{name}_successes"] = arm.successes
        f[f"{name}_outcomes"] = arm.outcomes
        f[f"{name}_stage_outcomes"] = arm.in_stage
        f[f"{name}_requests"] = arm.requests
        f[f"{name}_guard_failures"] = arm.guard_failures
        f[f"{name}_critical_failures"] = arm.critical_failures
        f[f"{name}_latency_p95_ms"] = arm.latency_p95_ms
        f[f"{name}_latency_geomean_ms"] = arm.latency_geomean_ms

    def out(action: Action, to_stage: float, rule: str, reason: str) -> Decision:
        return Decision(action, stage_percent, to_stage, rule, reason, dict(f))

    def rolled_back(rule: str, why: str) -> Decision:
        return out("rollback", 0.0, rule, f"{why}; rolled back from {_stage(stage_percent)} to 0%")

    def bounds(prefix: str, res: SequentialResult | None) -> None:
        if res is not None:
            f.update({f"{prefix}_diff": res.diff, f"{prefix}_cs_low": _num(res.low),
                      f"{prefix}_cs_high": _num(res.high)})

    # 1. critical failures, absolute: at once.
    crit = guards.critical_failures
    if crit is not None and crit.max is not None:
        f["critical_failures_max"] = crit.max
        if cand.critical_failures > crit.max:
            return rolled_back("critical_failures",
                               f"candidate {canary.candidate} had {cand.critical_failures} requests with a "
                               f"critical failure in this run, more than the maximum {crit.max}")

    # 2. critical failure rate, relative to the baseline's: sequential evidence of an increase.
    if crit is not None and crit.max_increase is not None:
        res = _sequence(ev.critical_failure_rate, rollback_confidence)
        f["critical_failure_rate_max_increase"] = crit.max_increase
        bounds("critical_failure_rate", res)
        if res is not None and res.low > crit.max_increase:
            return rolled_back("guardrail_critical_failure_rate",
                               f"critical failure rate: candidate − baseline {_pct(res.diff)}, at least "
                               f"{_pct(res.low)} ({_pct(rollback_confidence)} confidence sequence "
                               f"{_pct(res.low)}..{_pct(res.high)}), above the allowed {_pct(crit.max_increase)}")

    # 3. guard failure rate.
    if guards.guard_failure_rate is not None:
        max_inc = guards.guard_failure_rate.max_increase
        res = _sequence(ev.guard_failure_rate, rollback_confidence)
        f["guard_failure_rate_max_increase"] = max_inc
        for name, arm in (("baseline", base), ("candidate", cand)):
            f[f"guard_failure_rate_{name}"] = arm.guard_failures / arm.requests if arm.requests else None
        bounds("guard_failure_rate", res)
        if res is not None and res.low > max_inc:
            return rolled_back("guardrail_guard_failure_rate",
                               f"guard failure rate {_pct(cand.guard_failures / max(cand.requests, 1))} "
                               f"({cand.guard_failures}/{cand.requests}) vs baseline "
                               f"{_pct(base.guard_failures / max(base.requests, 1))} "
                               f"({base.guard_failures}/{base.requests}): the increase is at least "
                               f"{_pct(res.low)} ({_pct(rollback_confidence)} confidence sequence "
                               f"{_pct(res.low)}..{_pct(res.high)}), above the allowed {_pct(max_inc)}")

    # 4. latency: ratio of geometric means, from per-unit mean log latency.
    if guards.latency_p95_ms is not None:
        max_ratio = guards.latency_p95_ms.max_ratio
        res = _sequence(ev.log_latency, rollback_confidence)
        f["latency_max_ratio"] = max_ratio
        if res is not None:
            f.update(latency_ratio=math.exp(res.diff), latency_ratio_cs_low=math.exp(res.low),
                     latency_ratio_cs_high=_num(math.exp(res.high)) if res.high < 700 else None)
            if res.low > math.log(max_ratio):
                return rolled_back("guardrail_latency",
                                   f"candidate latency is {math.exp(res.diff):.3f}x the baseline's (ratio of "
                                   f"per-unit geometric means; {_pct(rollback_confidence)} confidence sequence "
                                   f"{math.exp(res.low):.3f}x..{math.exp(res.high):.3f}x), above the allowed "
                                   f"{max_ratio:g}x")

    # 5. full traffic: nothing left to compare against.
    if stage_percent >= FULL_TRAFFIC:
        return out("promoted", stage_percent, "final_stage",
                   f"candidate {canary.candidate} serves {_stage(stage_percent)} of traffic "
                   f"with guardrails held; promoted")

    # the plan: what each arm still needs, per stage
    p_base = base.successes / base.outcomes if base.outcomes else None
    promote_cs = _sequence(ev.success, confidence)
    f["plan"] = stage_plan(canary.stages, stage_percent, min_samples=canary.min_samples, margin=margin,
                           alpha=alpha, p_baseline=p_base, run_outcomes=(base.outcomes, cand.outcomes),
                           stage_outcomes=(base.in_stage, cand.in_stage), stage_elapsed_s=figures.stage_elapsed_s,
                           non_inferior=promote_cs is not None and promote_cs.low > -margin)
    here = f["plan"][0] if f["plan"] else None
    eta = (f"; about {here['hours']:.1f} h more at the current rate" if here and here["hours"] else "")

    # 6. samples in this stage.
    if min(base.in_stage, cand.in_stage) < canary.min_samples:
        return out("hold", stage_percent, "need_samples",
                   f"need {canary.min_samples} outcomes per arm in this stage; baseline has "
                   f"{base.in_stage}, candidate {cand.in_stage}; holding at {_stage(stage_percent)}{eta}")

    # 7./8. success metric: inferiority (rollback) or non-inferiority (promote).
    rollback_cs = _sequence(ev.success, rollback_confidence)
    if promote_cs is None or rollback_cs is None:
        return out("hold", stage_percent, "inconclusive",
                   f"{canary.success_metric}: no comparable outcomes in both arms yet; holding at "
                   f"{_stage(stage_percent)}")
    low, high = promote_cs.low, promote_cs.high
    pb = base.successes / base.outcomes if base.outcomes else math.nan
    pc = cand.successes / cand.outcomes if cand.outcomes else math.nan
    f.update(success_rate_baseline=_num(pb), success_rate_candidate=_num(pc), success_diff=promote_cs.diff,
             success_cs_low=_num(low), success_cs_high=_num(high),
             success_rollback_cs_low=_num(rollback_cs.low), success_rollback_cs_high=_num(rollback_cs.high))
    strata = f", {ev.periods} periods" if ev.periods != 1 else ""
    summary = (f"{canary.success_metric}: candidate {_pct(pc)} ({cand.successes:g}/{cand.outcomes}) vs baseline "
               f"{_pct(pb)} ({base.successes:g}/{base.outcomes}), difference {_pct(promote_cs.diff)}{strata}, "
               f"{_pct(confidence)} confidence sequence {_pct(low)}..{_pct(high)}, margin -{_pct(margin)}")
    if rollback_cs.high < -margin:
        return rolled_back("inferior",
                           f"{summary}: candidate is worse by more than the margin ({_pct(rollback_confidence)} "
                           f"sequence up to {_pct(rollback_cs.high)})")
    if low > -margin:
        nxt = next_stage(canary.stages, stage_percent)
        if nxt is None:
            return out("promoted", FULL_TRAFFIC, "non_inferior",
                       f"{summary}: non-inferior at the last stage {_stage(stage_percent)}; promoted")
        return out("promote", nxt, "non_inferior",
                   f"{summary}: non-inferior; promoted from {_stage(stage_percent)} to {_stage(nxt)}")
    return out("hold", stage_percent, "inconclusive",
               f"{summary}: inconclusive; holding at {_stage(stage_percent)}{eta}")
