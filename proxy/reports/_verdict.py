"""The verdict for one comparison (candidate vs control on one metric), with the numbers;
multiplicity across a route's comparisons; the outcome-coverage check; sample-size planning.

Labels: ``better``, ``worse``, ``no difference detected (powered)``,
``inconclusive — need ~N more outcomes per arm`` (equal split) or
``inconclusive — need ~A more control and ~B more candidate outcomes (at the current split)``.

Decision rule (in this order):

1. Either arm has fewer than ``min_n`` outcomes (default 30) → inconclusive, never a
   verdict; each arm's target is max(its planned need, min_n).
2. The **always-valid sequential p-value** (mSPRT on an edge-safe estimate, ``_estimates``)
   is below α → ``better`` or ``worse`` by the sign of candidate − control and the metric's
   goal. The sequential test, not the fixed-horizon z/Welch p-value, decides, because reports
   are looked at repeatedly (DESIGN.md); the fixed p-value and interval are reported alongside.
   The variance behind it cannot collapse when an arm is at 0 % or 100 % (the largest of the
   pooled null variance, Agresti–Caffo's and the plug-in; see ``_estimates``): 23/450 vs 0/50 is not
   "better" (always-valid p = 0.75; Fisher's exact p = 0.15).
3. Otherwise, when both arms have reached their planned sizes → ``no difference detected
   (powered)``: **"powered" is the power-calculation definition** — the sample was large
   enough for the test we actually run to detect a difference of ``mde`` with probability
   ``power`` (80%). We did not choose the "confidence sequence inside ±MDE" definition
   because it has no sample size one can announce in advance (it depends on the observed
   difference, and never triggers when the true difference is near the MDE).
4. Otherwise → inconclusive, with what each arm still needs.

**Planning at the actual allocation** (:func:`outcomes_needed`, :func:`units_needed`). With a
candidate share w of the two arms' units, n₁ = (1 − w)·N and n₂ = w·N, the variance of the
difference is V(N) = σ₁²/n₁ + σ₂²/n₂ (at least the pooled null variance σ̄²·(1/n₁ + 1/n₂), which
is what the test uses). Unequal splits cost: at 90/10 the total is 2.8× the 50/50 total for
the same power, nearly all of it in the big arm — "need ~N more" reports both arms at the
observed split (or a configured one, ``allocation=``) instead of pretending both arms fill
equally. For a proportion at the control's rate p₁ and p₂ = p₁ ± mde (the direction of the
goal; the other one if that leaves [0, 1]):

* fixed-horizon (``sequential=False``), the textbook normal-approximation formula
  (Chow, Shao & Wang, *Sample Size Calculations in Clinical Research*, §4.2, unpooled):
  n = ⌈(z_{1−α/2} + z_{power})² · (p₁q₁ + p₂q₂) / mde²⌉ per arm at 50/50 — 9,804 at
  p₁ = 0.5, mde = 0.02;
* sequential (``sequential=True``, the default, used by the verdicts): the same normal power
  equation with z_{1−α/2} replaced by the mSPRT boundary b(r(N)) at that N: the smallest N
  with mde / sqrt(V(N)) ≥ b(r(N)) + z_{power}. This is the honest requirement for the test
  that decides (≈2.2× the fixed n at the defaults: 21,996 per arm at p₁ = 0.5, mde = 0.02);
  it ignores the extra chances to reject at earlier looks, so it is slightly conservative.

For float metrics σ₁² = σ₂² = s₁² (the control's sample variance) and ``mde`` is in the
metric's units. When the control arm has fewer than ``min_n`` outcomes its rate is too noisy
to plan with; we then use the rate within its 95% Wilson interval closest to 0.5 (the largest
variance, so the conservative N).

**Multiplicity** (:func:`holm_verdicts`): every candidate × metric comparison of a route is
one family; the always-valid p-values are Holm-adjusted over it (Holm, Scand. J. Statist.
6:65, 1979 — valid under any dependence, so also for always-valid p-values, each of which
is a valid p-value at the moment it is read). Each comparison's confidence sequence is then
shown at the level that agrees with its Holm decision, α·p/p̃ (between α/m and α).

**Coverage** (:func:`coverage_check`): outcomes that go missing more often in one arm bias
every comparison built on them (Kohavi, Tang & Xu, *Trustworthy Online Controlled
Experiments*, 2020, ch. 21–22: data-quality checks). The share of subjects with an outcome is
compared between arms with the same always-valid test; a warning when it differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._estimates import (
    Estimate,
    UnitSums,
    always_valid,
    mean_estimate,
    proportion_estimate,
    ratio_estimate,
)
from ._sequential import DEFAULT_TUNE_N, msprt, optimal_mixing_ratio, sequential_boundary
from ._stats import (
    holm,
    newcombe_diff_interval,
    normal_quantile,
    normal_sf,
    two_proportion_ztest,
    welch_interval,
    welch_ttest,
    wilson_interval,
)

__all__ = [
    "DEFAULT_COVERAGE_ALPHA",
    "DEFAULT_MDE",
    "DEFAULT_MIN_N",
    "CoverageCheck",
    "Goal",
    "OutcomesNeeded",
    "Verdict",
    "coverage_check",
    "coverage_check_units",
    "holm_verdicts",
    "outcomes_needed",
    "outcomes_needed_means",
    "sample_size_per_arm",
    "sample_size_per_arm_means",
    "units_needed",
    "verdict",
    "verdict_estimate",
    "verdict_means",
]

Goal = Literal["maximize", "minimize"]
Code = Literal["better", "worse", "no_difference", "inconclusive"]

DEFAULT_MIN_N = 30
DEFAULT_MDE = 0.02
DEFAULT_COVERAGE_ALPHA = 0.01
NO_DIFFERENCE_LABEL = "no difference detected (powered)"
_EQUAL_SPLIT_TOLERANCE = 1.1  # planned needs within 10% of each other: say "per arm"
_UNBOUNDED = (-math.inf, math.inf)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verdict with the numbers behind it. ``diff`` and both intervals are candidate −
    control; ``interval`` is the fixed-horizon one (Newcombe / Welch / Wald on the estimate)
    matching ``p_value``; ``confidence_sequence`` and ``sequential_p`` are always-valid and
    are what decided (Holm-adjusted after :func:`holm_verdicts`, the raw value then in
    ``unadjusted_p``). ``needed_control`` / ``needed_candidate``: outcomes (units) each arm
    needs at the current split; ``more_control`` / ``more_candidate``: what each still lacks
    when inconclusive, else 0. ``needed_n`` / ``more_needed`` are the larger of the two (the
    per-arm figures of an equal split). ``variance`` / ``tau2``: the estimate's variance and
    the mixing variance of the test."""

    label: str
    code: Code
    goal: Goal
    diff: float
    interval: tuple[float, float]
    p_value: float
    sequential_p: float
    confidence_sequence: tuple[float, float]
    n_control: int
    n_candidate: int
    needed_n: int
    more_needed: int
    mde: float
    alpha: float
    reason: str
    needed_control: int = 0
    needed_candidate: int = 0
    more_control: int = 0
    more_candidate: int = 0
    variance: float = math.nan
    tau2: float = math.nan
    bounds: tuple[float, float] = _UNBOUNDED
    min_n: int = DEFAULT_MIN_N
    unadjusted_p: float | None = None
    comparisons: int = 1


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class OutcomesNeeded:
    """Outcomes (units of analysis) each arm needs for the planned power."""

    baseline: int
    candidate: int

    @property
    def total(self) -> int:
        return self.baseline + self.candidate

    def more(self, n_baseline: int, n_candidate: int) -> tuple[int, int]:
        """What each arm still lacks, given what it has (never negative)."""
        return (max(self.baseline - n_baseline, 0), max(self.candidate - n_candidate, 0))


def units_needed(
    unit_var_baseline: float,
    unit_var_candidate: float,
    margin: float,
    *,
    allocation: float = 0.5,
    null_unit_var: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = True,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> OutcomesNeeded:
    """Units per arm for ``power`` to tell a difference ``margin`` away from the null, with
    per-unit variances σ₁², σ₂² and the candidate's share ``allocation`` of the two arms'
    units (module docstring). ``null_unit_var``: the pooled per-unit variance under the null,
    when the test uses at least that variance (the edge-safe estimates do). ``tau2=None``:
    the default mixture of :func:`proxy.reports.always_valid`."""
    if margin <= 0:
        raise ValueError("the margin (mde) must be positive")
    if not 0.0 < power < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError("alpha and power must be in (0, 1)")
    if not 0.0 < allocation < 1.0:
        raise ValueError(f"allocation (the candidate's share) must be in (0, 1), got {allocation}")
    w = allocation
    # V(N) = K / N for N units in all
    k_var = unit_var_baseline / (1.0 - w) + unit_var_candidate / w
    if null_unit_var is not None:
        k_var = max(k_var, null_unit_var * (1.0 / (1.0 - w) + 1.0 / w))
    small = min(w, 1.0 - w)
    if k_var <= 0:
        return _per_arm(1, w, small)
    z_power = normal_quantile(power)
    z_alpha = normal_quantile(1.0 - alpha / 2.0)
    # search over the smaller arm's size k (N = k / small): integers, as reported
    fixed = max(math.ceil((z_alpha + z_power) ** 2 * k_var * small / margin**2), 1)
    if not sequential:
        return _per_arm(fixed, w, small)
    r_star = optimal_mixing_ratio(alpha)

    def ok(k: int) -> bool:
        total = k / small
        var = k_var / total
        # the default τ² of always_valid gives r = r*·2w(1−w)N / tune_n (the harmonic mean arm)
        ratio = tau2 / var if tau2 is not None else r_star * 2.0 * w * (1.0 - w) * total / tune_n
        return margin / math.sqrt(var) >= sequential_boundary(ratio, alpha) + z_power

    lo = hi = fixed  # the boundary is ≥ z_{1−α/2}: the fixed n is a floor
    while not ok(hi):
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest k with ok(k) (monotone near the crossing)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return _per_arm(hi, w, small)


def _per_arm(k: int, w: float, small: float) -> OutcomesNeeded:
    other = math.ceil(k * (1.0 - small) / small - 1e-9)
    return OutcomesNeeded(k, other) if w >= 0.5 else OutcomesNeeded(other, k)


def _alternative(p1: float, mde: float, goal: Goal) -> float:
    p2 = p1 + mde if goal == "maximize" else p1 - mde
    if not 0.0 <= p2 <= 1.0:
        p2 = p1 - mde if goal == "maximize" else p1 + mde
    return min(max(p2, 0.0), 1.0)


def outcomes_needed(
    p_control: float,
    margin: float = DEFAULT_MDE,
    *,
    allocation: float = 0.5,
    p_candidate: float | None = None,
    goal: Goal = "maximize",
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = True,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> OutcomesNeeded:
    """Outcomes per arm, at the candidate's share ``allocation``, for ``power`` to tell a
    success rate apart from a null ``margin`` away.

    Superiority (the default): the rates are ``p_control`` and p_control ± margin (by
    ``goal``), the null is "no difference". Non-inferiority (a canary's promotion rule: the
    lower confidence bound above −margin): pass ``p_candidate=p_control`` — the candidate as
    good as the baseline, the null a margin below. The two-sided (1 − α) sequence is what
    the canary reads, so the same formula serves both."""
    if not 0.0 <= p_control <= 1.0:
        raise ValueError("p_control must be in [0, 1]")
    p2 = _alternative(p_control, margin, goal) if p_candidate is None else p_candidate
    if not 0.0 <= p2 <= 1.0:
        raise ValueError("p_candidate must be in [0, 1]")
    pooled = (1.0 - allocation) * p_control + allocation * p2
    return units_needed(
        p_control * (1.0 - p_control), p2 * (1.0 - p2), margin, allocation=allocation,
        null_unit_var=pooled * (1.0 - pooled) if sequential else None, alpha=alpha,
        power=power, sequential=sequential, tau2=tau2, tune_n=tune_n)


def outcomes_needed_means(
    var_control: float,
    margin: float,
    *,
    allocation: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = True,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> OutcomesNeeded:
    """Observations per arm, at the candidate's share ``allocation``, to detect a mean
    difference ``margin`` (metric units), equal variances ``var_control`` assumed."""
    return units_needed(var_control, var_control, margin, allocation=allocation, alpha=alpha,
                        power=power, sequential=sequential, tau2=tau2, tune_n=tune_n)


def sample_size_per_arm(
    p_control: float,
    mde: float = DEFAULT_MDE,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    goal: Goal = "maximize",
    sequential: bool = True,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> int:
    """Outcomes per arm of a 50/50 split for ``power`` to detect an absolute change ``mde``
    from the control rate ``p_control`` at two-sided ``alpha`` (module docstring)."""
    return outcomes_needed(p_control, mde, alpha=alpha, power=power, goal=goal,
                           sequential=sequential, tau2=tau2, tune_n=tune_n).candidate


def sample_size_per_arm_means(
    var_control: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = True,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> int:
    """Observations per arm of a 50/50 split to detect a mean difference ``mde`` (metric
    units), equal variances ``var_control`` assumed."""
    return outcomes_needed_means(var_control, mde, alpha=alpha, power=power,
                                 sequential=sequential, tau2=tau2, tune_n=tune_n).candidate


def _observed_allocation(n1: int, n2: int, allocation: float | None) -> float:
    if allocation is not None:
        if not 0.0 < allocation < 1.0:
            raise ValueError(f"allocation must be in (0, 1), got {allocation}")
        return allocation
    if n1 <= 0 or n2 <= 0:
        return 0.5  # nothing to go by yet
    return n2 / (n1 + n2)


# --------------------------------------------------------------------------- decision


def _need_label(more_b: int, more_c: int, need_b: int, need_c: int) -> str:
    if max(need_b, need_c) <= _EQUAL_SPLIT_TOLERANCE * min(need_b, need_c):
        return f"inconclusive — need ~{max(more_b, more_c)} more outcomes per arm"
    parts = [f"~{m} more {arm}" for m, arm in ((more_b, "control"), (more_c, "candidate")) if m]
    return f"inconclusive — need {' and '.join(parts)} outcomes (at the current split)"


def _decide(
    *, goal: Goal, diff: float, interval: tuple[float, float], p_value: float,
    seq_p: float, cs: tuple[float, float], n1: int, n2: int, needed: int, mde: float,
    alpha: float, min_n: int, needed_arms: tuple[int, int] | None = None,
    variance: float = math.nan, tau2: float = math.nan,
    bounds: tuple[float, float] = _UNBOUNDED, unadjusted_p: float | None = None,
    comparisons: int = 1,
) -> Verdict:
    if goal not in ("maximize", "minimize"):
        raise ValueError(f"goal must be maximize or minimize, got {goal!r}")
    need_b, need_c = needed_arms if needed_arms is not None else (needed, needed)
    smaller = min(n1, n2)
    p_text = f"always-valid p = {seq_p:.3g}"
    if unadjusted_p is not None and comparisons > 1:
        p_text += f" (Holm-adjusted over {comparisons} comparisons; unadjusted {unadjusted_p:.3g})"
    common = dict(goal=goal, diff=diff, interval=interval, p_value=p_value,
                  sequential_p=seq_p, confidence_sequence=cs, n_control=n1, n_candidate=n2,
                  mde=mde, alpha=alpha, variance=variance, tau2=tau2, bounds=bounds,
                  min_n=min_n, unadjusted_p=unadjusted_p, comparisons=comparisons)

    def short(reason: str, tb: int, tc: int) -> Verdict:
        more_b, more_c = max(tb - n1, 0), max(tc - n2, 0)
        return Verdict(label=_need_label(more_b, more_c, tb, tc), code="inconclusive",
                       needed_n=max(tb, tc), more_needed=max(more_b, more_c),
                       needed_control=tb, needed_candidate=tc, more_control=more_b,
                       more_candidate=more_c, reason=reason, **common)

    if smaller < min_n:
        return short(f"fewer than {min_n} outcomes in an arm ({smaller}): no verdict",
                     max(need_b, min_n), max(need_c, min_n))
    if seq_p < alpha:
        higher = diff > 0
        code: Code = "better" if higher == (goal == "maximize") else "worse"
        return Verdict(label=code, code=code, needed_n=max(need_b, need_c), more_needed=0,
                       needed_control=need_b, needed_candidate=need_c,
                       reason=(f"{p_text} < α = {alpha}; candidate − control = {diff:+.4g},"
                               f" goal {goal}"), **common)
    if n1 >= need_b and n2 >= need_c:
        return Verdict(label=NO_DIFFERENCE_LABEL, code="no_difference",
                       needed_n=max(need_b, need_c), more_needed=0, needed_control=need_b,
                       needed_candidate=need_c,
                       reason=(f"{p_text} ≥ α with {n1} control and {n2} candidate outcomes,"
                               f" enough ({need_b} and {need_c}) for 80% power at a difference"
                               f" of {mde}"), **common)
    return short(f"{p_text} ≥ α; {n1} control and {n2} candidate outcomes of the {need_b} and"
                 f" {need_c} needed to detect a difference of {mde}", need_b, need_c)


def _clip(interval: tuple[float, float], bounds: tuple[float, float]) -> tuple[float, float]:
    return (max(interval[0], bounds[0]), min(interval[1], bounds[1]))


def verdict_estimate(
    estimate: Estimate,
    *,
    goal: Goal = "maximize",
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    min_n: int = DEFAULT_MIN_N,
    allocation: float | None = None,
    unit_variances: tuple[float, float] | None = None,
    previous_sequential_p: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
    bounds: tuple[float, float] = _UNBOUNDED,
    interval: tuple[float, float] | None = None,
    p_value: float | None = None,
) -> Verdict:
    """Verdict from any :class:`~proxy.reports.Estimate` — clustered (``ratio_estimate``,
    ``mean_estimate``) or stratified (``stratified_estimate``): the always-valid test on it,
    the same decision rule as :func:`verdict`. ``n_control`` / ``n_candidate`` are the
    estimate's units.

    Planning uses ``unit_variances`` (per-unit variances of control and candidate) when given,
    else the per-unit variance implied by the estimate, V/(1/n₁ + 1/n₂), for both arms.
    ``interval`` / ``p_value``: fixed-horizon figures to show; by default the Wald interval
    and z-test on the estimate's (edge-safe) variance. ``bounds``: the range the difference
    can take (e.g. (−1, 1) for rates), to clip the intervals."""
    n1, n2 = estimate.n_baseline, estimate.n_candidate
    min_n = max(int(min_n), 1)
    res = always_valid(estimate, confidence=1.0 - alpha, tau2=tau2, tune_n=tune_n,
                       previous_p=previous_sequential_p)
    v = estimate.variance
    finite = math.isfinite(v) and n1 > 0 and n2 > 0
    if unit_variances is None and finite:
        per_unit = v / (1.0 / n1 + 1.0 / n2)
        unit_variances = (per_unit, per_unit)
    w = _observed_allocation(n1, n2, allocation)
    if unit_variances is not None:
        plan = units_needed(unit_variances[0], unit_variances[1], mde, allocation=w, alpha=alpha,
                            power=power, tau2=tau2, tune_n=tune_n)
        needed_arms = (plan.baseline, plan.candidate)
    else:
        needed_arms = (min_n, min_n)
    if interval is None or p_value is None:
        if finite and v > 0:
            z = normal_quantile(1.0 - alpha / 2.0)
            wald = (estimate.diff - z * math.sqrt(v), estimate.diff + z * math.sqrt(v))
            p_fixed = min(1.0, 2.0 * normal_sf(abs(estimate.diff) / math.sqrt(v)))
        else:
            wald, p_fixed = (_UNBOUNDED if not finite else (estimate.diff, estimate.diff)), 1.0
        interval = _clip(wald, bounds) if interval is None else interval
        p_value = p_fixed if p_value is None else p_value
    return _decide(goal=goal, diff=estimate.diff, interval=interval, p_value=p_value,
                   seq_p=res.p_value, cs=_clip((res.low, res.high), bounds), n1=n1, n2=n2,
                   needed=max(needed_arms), mde=mde, alpha=alpha, min_n=min_n,
                   needed_arms=needed_arms, variance=res.variance, tau2=res.tau2,
                   bounds=bounds)


def verdict(
    s_control: int,
    n_control: int,
    s_candidate: int,
    n_candidate: int,
    *,
    goal: Goal = "maximize",
    mde: float = DEFAULT_MDE,
    alpha: float = 0.05,
    power: float = 0.8,
    min_n: int = DEFAULT_MIN_N,
    allocation: float | None = None,
    previous_sequential_p: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> Verdict:
    """Verdict on a boolean (success) metric: control s/n vs candidate s/n (independent
    outcomes; for outcomes clustered in sticky units use :func:`verdict_estimate` with a
    ``ratio_estimate``).

    ``mde`` is an absolute difference in rate (0.02 = 2 points). ``allocation``: the
    candidate's share of the two arms' outcomes to plan with (default: the observed share).
    With several comparisons on a route pass them all to :func:`holm_verdicts`.
    ``previous_sequential_p`` carries the running minimum between looks.
    """
    min_n = max(int(min_n), 1)
    if n_control >= min_n:
        p_plan = s_control / n_control
    else:  # too few to plan with: the most conservative rate the data allow
        lo, hi = wilson_interval(s_control, n_control)
        p_plan = min(max(0.5, lo), hi)
    w = _observed_allocation(n_control, n_candidate, allocation)
    plan = outcomes_needed(p_plan, mde, allocation=w, goal=goal, alpha=alpha, power=power,
                           tau2=tau2, tune_n=tune_n)
    estimate = proportion_estimate(s_control, n_control, s_candidate, n_candidate)
    res = always_valid(estimate, confidence=1.0 - alpha, tau2=tau2, tune_n=tune_n,
                       previous_p=previous_sequential_p)
    interval = newcombe_diff_interval(s_control, n_control, s_candidate, n_candidate,
                                      1.0 - alpha)
    _, p_value = two_proportion_ztest(s_control, n_control, s_candidate, n_candidate)
    return _decide(goal=goal, diff=estimate.diff, interval=interval, p_value=p_value,
                   seq_p=res.p_value, cs=_clip((res.low, res.high), (-1.0, 1.0)),
                   n1=n_control, n2=n_candidate, needed=max(plan.baseline, plan.candidate),
                   mde=mde, alpha=alpha, min_n=min_n,
                   needed_arms=(plan.baseline, plan.candidate), variance=res.variance,
                   tau2=res.tau2, bounds=(-1.0, 1.0))


def _summary_sums(mean: float, var: float, n: int) -> UnitSums:
    """UnitSums of n values with this mean and sample variance (ddof 1), m = 1 each."""
    y = mean * n
    yy = var * (n - 1) + mean * mean * n if n >= 1 else 0.0
    return UnitSums(units=n, y=y, m=float(n), yy=max(yy, 0.0), mm=float(n), ym=y)


def verdict_means(
    mean_control: float,
    var_control: float,
    n_control: int,
    mean_candidate: float,
    var_candidate: float,
    n_candidate: int,
    *,
    mde: float,
    goal: Goal = "maximize",
    alpha: float = 0.05,
    power: float = 0.8,
    min_n: int = DEFAULT_MIN_N,
    allocation: float | None = None,
    previous_sequential_p: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> Verdict:
    """Verdict on a float metric from summary statistics (sample variances, ddof = 1);
    ``mde`` in the metric's units. Fixed-horizon figures are Welch's; the sequential test
    uses the edge-safe variance of :func:`proxy.reports.mean_estimate`."""
    if var_control < 0 or var_candidate < 0:
        raise ValueError("variances must be non-negative")
    min_n = max(int(min_n), 2)
    plan_var = var_control if n_control >= 2 else max(var_candidate, 0.0)
    w = _observed_allocation(n_control, n_candidate, allocation)
    plan = outcomes_needed_means(plan_var, mde, allocation=w, alpha=alpha, power=power,
                                 tau2=tau2, tune_n=tune_n)
    estimate = mean_estimate(_summary_sums(mean_control, var_control, n_control),
                             _summary_sums(mean_candidate, var_candidate, n_candidate))
    res = always_valid(estimate, confidence=1.0 - alpha, tau2=tau2, tune_n=tune_n,
                       previous_p=previous_sequential_p)
    if n_control < 2 or n_candidate < 2:
        diff = (mean_candidate - mean_control) if n_control and n_candidate else 0.0
        interval, p_value = _UNBOUNDED, 1.0
    else:
        diff = mean_candidate - mean_control
        _, _, p_value = welch_ttest(mean_control, var_control, n_control,
                                    mean_candidate, var_candidate, n_candidate)
        interval = welch_interval(mean_control, var_control, n_control,
                                  mean_candidate, var_candidate, n_candidate, 1.0 - alpha)
    return _decide(goal=goal, diff=diff, interval=interval, p_value=p_value,
                   seq_p=res.p_value, cs=(res.low, res.high), n1=n_control, n2=n_candidate,
                   needed=max(plan.baseline, plan.candidate), mde=mde, alpha=alpha,
                   min_n=min_n, needed_arms=(plan.baseline, plan.candidate),
                   variance=res.variance, tau2=res.tau2)


# --------------------------------------------------------------------------- multiplicity


def holm_verdicts(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Holm-adjust a route's whole family of comparisons — every candidate × metric — and
    decide each again on its adjusted always-valid p-value (same order as given).

    Each returned verdict has ``sequential_p`` = the adjusted p, ``unadjusted_p`` = the raw
    one, ``comparisons`` = the family size, and its confidence sequence recomputed at the
    level α·p/p̃ (between α/m and α), at which "0 outside the sequence" is exactly the
    Holm rejection. A single comparison is returned unchanged. Passing verdicts already
    adjusted re-adjusts from their unadjusted p-values."""
    m = len(verdicts)
    if m <= 1:
        return list(verdicts)
    raw = [v.unadjusted_p if v.unadjusted_p is not None else v.sequential_p for v in verdicts]
    adjusted = holm(raw)
    out: list[Verdict] = []
    for v, p_raw, p_adj in zip(verdicts, raw, adjusted):
        level = v.alpha * p_raw / p_adj if p_raw > 0 and p_adj > 0 else v.alpha / m
        cs = v.confidence_sequence
        if math.isfinite(v.variance) and v.variance > 0 and math.isfinite(v.tau2) and v.tau2 > 0:
            res = msprt(v.diff, v.variance, v.tau2, alpha=level)
            cs = _clip((res.low, res.high), v.bounds)
        out.append(_decide(
            goal=v.goal, diff=v.diff, interval=v.interval, p_value=v.p_value, seq_p=p_adj,
            cs=cs, n1=v.n_control, n2=v.n_candidate, needed=v.needed_n, mde=v.mde,
            alpha=v.alpha, min_n=v.min_n,
            needed_arms=(v.needed_control or v.needed_n, v.needed_candidate or v.needed_n),
            variance=v.variance, tau2=v.tau2, bounds=v.bounds, unadjusted_p=p_raw,
            comparisons=m))
    return out


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True, slots=True)
class CoverageCheck:
    """Does the share of subjects (requests, episodes, users) with an outcome differ between
    the arms beyond noise? ``diff`` = candidate − control share; ``p_value`` and
    ``confidence_sequence`` are always-valid; ``warning`` when p < ``alpha``."""

    subject: str
    rate_control: float | None
    rate_candidate: float | None
    diff: float
    p_value: float
    confidence_sequence: tuple[float, float]
    alpha: float
    warning: bool
    message: str


def _coverage(est: Estimate, rate_c: float | None, rate_x: float | None, subject: str,
              alpha: float) -> CoverageCheck:
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    res = always_valid(est, confidence=1.0 - alpha)
    warning = res.p_value < alpha and rate_c is not None and rate_x is not None
    message = ""
    if warning:
        message = (f"outcome coverage differs between arms: {rate_c:.1%} of control {subject} have"
                   f" an outcome vs {rate_x:.1%} of candidate {subject} (always-valid p ="
                   f" {res.p_value:.2g} < {alpha}); outcomes missing more often in one arm bias"
                   " every comparison built on them")
    return CoverageCheck(subject=subject, rate_control=rate_c, rate_candidate=rate_x,
                         diff=est.diff, p_value=res.p_value,
                         confidence_sequence=_clip((res.low, res.high), (-1.0, 1.0)),
                         alpha=alpha, warning=warning, message=message)


def coverage_check(
    covered_control: int,
    total_control: int,
    covered_candidate: int,
    total_candidate: int,
    *,
    subject: str = "requests",
    alpha: float = DEFAULT_COVERAGE_ALPHA,
) -> CoverageCheck:
    """Coverage check on independent subjects (episodes, users, or requests with no sticky
    key): ``covered`` of ``total`` have an outcome, per arm. Uses the edge-safe always-valid
    test, so it may be run at every report."""
    est = proportion_estimate(covered_control, total_control, covered_candidate, total_candidate)
    rc = covered_control / total_control if total_control else None
    rx = covered_candidate / total_candidate if total_candidate else None
    return _coverage(est, rc, rx, subject, alpha)


def coverage_check_units(
    control: UnitSums,
    candidate: UnitSums,
    *,
    subject: str = "requests",
    alpha: float = DEFAULT_COVERAGE_ALPHA,
) -> CoverageCheck:
    """Coverage check for requests clustered in sticky units: per unit, y = its requests with
    an outcome out of m = its requests; cluster-robust (:func:`proxy.reports.ratio_estimate`)."""
    est = ratio_estimate(control, candidate)
    rc = control.y / control.m if control.m > 0 else None
    rx = candidate.y / candidate.m if candidate.m > 0 else None
    return _coverage(est, rc, rx, subject, alpha)
