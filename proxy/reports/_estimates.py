"""Estimates of candidate − baseline with an honest variance, and their always-valid test.

One shape for every comparison: an :class:`Estimate` (the difference, the variance of that
difference, the sample sizes behind it), built from counts (:func:`proportion_estimate`), from
per-unit sums when assignment is sticky (:func:`ratio_estimate`, :func:`mean_estimate`), or
combined over periods of constant allocation (:func:`stratified_estimate`); and one test,
:func:`always_valid` (the normal-mixture mSPRT of ``_sequential``), which gives the always-valid
p-value against any θ₀ and the confidence sequence.

Variances — why they can be trusted
-----------------------------------

**Edge-safe** (``edge_safe=True``, the default everywhere). A plug-in variance collapses when
an arm is at 0 % or 100 % (p̂(1−p̂) = 0), which made 23/450 vs 0/50 look decisive
(always-valid p = 1.6e-4 where Fisher's exact p = 0.15). Every estimator here returns the
*largest* of the plain plug-in variance and two well-known alternatives:

* the **variance under the null of no difference** — both arms drawn from one population, so
  each arm's variance is estimated from *all* units pooled (for proportions the pooled
  p̄(1−p̄)(1/n₁ + 1/n₂) of the classical two-proportion score test; for means the pooled
  variance around the common mean; for ratios the pooled residual variance around the common
  ratio). It is the right variance for the test of "no difference" and never collapses
  because one arm happens to show no events;
* the **unpooled variance** for intervals: for proportions (and ratios of events out of trials)
  with **Agresti & Caffo**'s adjustment — one success and one failure added to each arm
  (Agresti & Caffo, "Simple and effective confidence intervals for proportions and differences
  of proportions result from adding two successes and two failures", The American
  Statistician 54(4):280–288, 2000, §2) — so it stays positive at 0/n and n/n and keeps the
  confidence sequence honest at θ ≠ 0 (non-inferiority margins); for means, Welch's.

The estimate itself (``diff``) is always the plain observed difference: the pseudo-counts only
widen the variance. (Centering on Agresti–Caffo's adjusted rates would pull a small arm toward
½, which with unequal splits biases an A/A difference; added per stratum it would also bias a
stratified estimate.) Taking the largest variance costs almost nothing in power when arms have
hundreds of outcomes — the two agree to O(effect × (1 − 2p)) — and is measured in
``tests/reports/test_verdict_simulation.py`` and the README ("Why you can trust a verdict").

**Clusters** (:func:`ratio_estimate`). With sticky assignment the unit of randomization is the
user or episode, not the request; requests of one user are correlated, so a request-level
variance that treats them as independent is too small. The ratio Σy/Σm per arm gets the
delta-method variance over units (Deng, Knoblich & Lu, "Applying the Delta Method in Metric
Analytics: A Practical Guide with Novel Ideas", KDD 2018, §3 eq. 3; Deng, Lu & Litz,
"Trustworthy Analysis of Online A/B Tests: Pitfalls, Challenges and Solutions", WSDM 2017, §3):

    Var(Σy/Σm) ≈ Σᵢ (yᵢ − R·mᵢ)² / (Σm)²  ·  n/(n − 1),    R = Σy/Σm,

which equals the cluster-robust (sandwich) variance of the request-level mean with clusters =
units (statsmodels OLS ``cov_type="cluster"``; checked in ``tests/reports/test_estimates.py``).

**Strata** (:func:`stratified_estimate`). Pooling counts across periods whose allocation
differs (canary stages 1 → 5 → 25 → 50 %) while the success rate drifts is Simpson's paradox:
most candidate outcomes come late, so any trend moves the pooled difference. The stratified
estimate is a weighted mean of the per-period differences with the **Mantel–Haenszel weights
for a risk difference**, wₛ = n₁ₛ·n₂ₛ / (n₁ₛ + n₂ₛ) (Greenland & Robins, "Estimation of a
common effect parameter from sparse follow-up data", Biometrics 41(1):55–68, 1985, eq. 2;
the Cochran–Mantel–Haenszel weighting). The weights depend on sample sizes only — not on the
observed rates, so they cannot correlate with the per-stratum estimates as inverse-variance
weights do with small strata — and give a stratum weight 0 when one arm has no units in it.
Var = Σ wₛ²·Vₛ / (Σ wₛ)², strata being independent — true when each unit falls in one stratum
(lone requests, or periods long enough that units do not return). A sticky user active in two
periods is in both strata and correlates them; the report engine adds those covariances
(``proxy.reports._units.estimate_over_periods``, from per-unit cross products).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._sequential import (
    DEFAULT_TUNE_N,
    SequentialResult,
    msprt,
    optimal_mixing_ratio,
    proportion_variance,
)

__all__ = [
    "Estimate",
    "UnitSums",
    "always_valid",
    "mean_estimate",
    "proportion_estimate",
    "ratio_estimate",
    "stratified_estimate",
    "unit_sums",
]


@dataclass(frozen=True, slots=True)
class Estimate:
    """candidate − baseline, with the variance of that difference, and the sample sizes behind it."""

    diff: float
    variance: float
    n_baseline: int  # units of analysis (sticky units, or outcomes/requests when unclustered)
    n_candidate: int


@dataclass(frozen=True, slots=True)
class UnitSums:
    """Per-arm sums over units of analysis for a ratio metric y/m (e.g. guard failures per request,
    successes per inference outcome), where each unit (a sticky user/episode, or a lone request) has
    y_i events out of m_i trials. Unclustered data is the special case m_i = 1."""

    units: int
    y: float
    m: float
    yy: float
    mm: float
    ym: float  # Σy_i, Σm_i, Σy_i², Σm_i², Σy_i·m_i


def unit_sums(ys: Sequence[float], ms: Sequence[float] | None = None) -> UnitSums:
    """The :class:`UnitSums` of per-unit values ``ys`` (and trials ``ms``; 1 each when omitted)."""
    if ms is None:
        ms = [1.0] * len(ys)
    if len(ms) != len(ys):
        raise ValueError("ys and ms must have the same length")
    return UnitSums(
        units=len(ys), y=float(sum(ys)), m=float(sum(ms)),
        yy=float(sum(y * y for y in ys)), mm=float(sum(m * m for m in ms)),
        ym=float(sum(y * m for y, m in zip(ys, ms))),
    )


_UNKNOWN = math.inf  # the variance of a difference with an empty arm: unknown, weight 0


def proportion_estimate(s1: int, n1: int, s2: int, n2: int, *, edge_safe: bool = True) -> Estimate:
    """p₂ − p₁ for control s1/n1 and candidate s2/n2, with an edge-safe variance: the largest of
    the pooled (null) variance, Agresti–Caffo's and the plug-in (module docstring). An empty arm gives
    diff 0 with an infinite variance (nothing known; weight 0 in a stratified estimate).
    ``edge_safe=False``: the plain plug-in Σ p̂(1−p̂)/n (for reference only)."""
    for s, n in ((s1, n1), (s2, n2)):
        if n < 0 or not 0 <= s <= n:
            raise ValueError(f"need 0 <= successes <= n, got {s}, {n}")
    if n1 == 0 or n2 == 0:
        return Estimate(0.0, _UNKNOWN, n1, n2)
    diff = s2 / n2 - s1 / n1
    return Estimate(diff, proportion_variance(s1, n1, s2, n2, edge_safe=edge_safe), n1, n2)


def _check_sums(a: UnitSums) -> None:
    if a.units < 0 or a.m < 0 or a.yy < 0 or a.mm < 0:
        raise ValueError(f"invalid unit sums: {a}")


def _residual_ss(a: UnitSums, r: float) -> float:
    """Σ (yᵢ − r·mᵢ)² from the sums (clipped at 0 against rounding)."""
    return max(a.yy - 2.0 * r * a.ym + r * r * a.mm, 0.0)


def _ratio_var(a: UnitSums) -> float:
    """Delta-method variance of Σy/Σm over units (Deng et al. 2018, eq. 3), ddof 1."""
    if a.units < 2 or a.m <= 0:
        return _UNKNOWN
    r = a.y / a.m
    return _residual_ss(a, r) / (a.m * a.m) * a.units / (a.units - 1)


def _with_pseudo_unit(a: UnitSums) -> UnitSums:
    """Agresti–Caffo for events out of trials: one more unit with 1 event out of 2 trials."""
    return UnitSums(a.units + 1, a.y + 1.0, a.m + 2.0, a.yy + 1.0, a.mm + 4.0, a.ym + 2.0)


def ratio_estimate(baseline: UnitSums, candidate: UnitSums, *, edge_safe: bool = True) -> Estimate:
    """Σy/Σm (candidate) − Σy/Σm (baseline) with the cluster-robust (delta-method) variance over
    units. Edge-safe: the largest of the null variance (residuals around the pooled ratio,
    pooled over both arms' units), the unpooled one with an Agresti–Caffo pseudo-unit
    (1 event in 2 trials) per arm — which assumes 0 ≤ yᵢ ≤ mᵢ (events out of trials) — and
    the plain one.
    ``edge_safe=False``: the plain delta-method variance (equals statsmodels' cluster-robust
    variance per arm with its small-sample correction G/(G−1))."""
    _check_sums(baseline)
    _check_sums(candidate)
    n1, n2 = baseline.units, candidate.units
    if baseline.m <= 0 or candidate.m <= 0 or n1 < 1 or n2 < 1:
        return Estimate(0.0, _UNKNOWN, n1, n2)
    diff = candidate.y / candidate.m - baseline.y / baseline.m
    if not edge_safe:
        return Estimate(diff, _ratio_var(baseline) + _ratio_var(candidate), n1, n2)
    plain = _ratio_var(baseline) + _ratio_var(candidate)
    adjusted = _ratio_var(_with_pseudo_unit(baseline)) + _ratio_var(_with_pseudo_unit(candidate))
    # Null: one population. Mean squared residual per unit around the pooled ratio, over all
    # units, gives each arm's Σ(y − R̄m)² as nᵢ times it (ddof: 2 arms' worth of units − 1).
    n = n1 + n2
    pooled_r = (baseline.y + candidate.y) / (baseline.m + candidate.m)
    per_unit = (_residual_ss(baseline, pooled_r) + _residual_ss(candidate, pooled_r)) / max(n - 1, 1)
    null = per_unit * (n1 / baseline.m**2 + n2 / candidate.m**2)
    return Estimate(diff, max(null, adjusted, plain), n1, n2)


def _mean_var(a: UnitSums) -> float:
    if a.units < 2:
        return _UNKNOWN
    return max(a.yy - a.y * a.y / a.units, 0.0) / (a.units - 1)


def mean_estimate(baseline: UnitSums, candidate: UnitSums, *, edge_safe: bool = True) -> Estimate:
    """Difference of per-unit means of y (m ignored), e.g. per-unit mean log latency, with
    Welch's variance s₁²/n₁ + s₂²/n₂ — edge-safe: at least the null (pooled around the common
    mean) variance S²·(1/n₁ + 1/n₂), so an arm whose few values happen to be identical does
    not make the difference look exact. Fewer than 2 units in an arm: infinite variance."""
    _check_sums(baseline)
    _check_sums(candidate)
    n1, n2 = baseline.units, candidate.units
    if n1 < 2 or n2 < 2:
        diff = candidate.y / n2 - baseline.y / n1 if n1 and n2 else 0.0
        return Estimate(diff, _UNKNOWN, n1, n2)
    diff = candidate.y / n2 - baseline.y / n1
    welch = _mean_var(baseline) / n1 + _mean_var(candidate) / n2
    if not edge_safe:
        return Estimate(diff, welch, n1, n2)
    n = n1 + n2
    total, total_sq = baseline.y + candidate.y, baseline.yy + candidate.yy
    pooled = max(total_sq - total * total / n, 0.0) / (n - 1)
    return Estimate(diff, max(welch, pooled * (1.0 / n1 + 1.0 / n2)), n1, n2)


def stratified_estimate(strata: Sequence[Estimate]) -> Estimate:
    """Combine per-period estimates (periods of constant allocation: canary stages, days) with
    Mantel–Haenszel risk-difference weights wₛ = n₁ₛn₂ₛ/(n₁ₛ + n₂ₛ) (module docstring).
    Strata with an empty arm get weight 0. No usable stratum: diff 0, infinite variance.
    The sample sizes of the result are the totals over the strata. The result is linear in
    the strata's differences with weights that depend on sample sizes only; the variance
    assumes independent strata (module docstring)."""
    n1 = sum(e.n_baseline for e in strata)
    n2 = sum(e.n_candidate for e in strata)
    wsum = diff = var = 0.0
    for e in strata:
        if e.n_baseline <= 0 or e.n_candidate <= 0:
            continue
        if not math.isfinite(e.variance) or e.variance < 0:
            # an arm too small for a variance (a single unit): its difference is unknown; it
            # cannot be averaged in without one, so it is left out
            continue
        w = e.n_baseline * e.n_candidate / (e.n_baseline + e.n_candidate)
        wsum += w
        diff += w * e.diff
        var += w * w * e.variance
    if wsum == 0.0:
        return Estimate(0.0, _UNKNOWN, n1, n2)
    return Estimate(diff / wsum, var / (wsum * wsum), n1, n2)


def _default_tau2(estimate: Estimate, alpha: float, tune_n: float) -> float:
    """τ² = r*·(σ₁² + σ₂²)/tune_n as in ``_sequential``, with the per-unit variance recovered
    from the estimate's variance assuming equal per-unit variances in the two arms:
    σ² = V / (1/n₁ + 1/n₂)."""
    n1, n2 = estimate.n_baseline, estimate.n_candidate
    unit = 2.0 * estimate.variance / (1.0 / n1 + 1.0 / n2)
    if unit <= 0.0:
        return 1.0
    return optimal_mixing_ratio(alpha) * unit / tune_n


def always_valid(
    estimate: Estimate,
    *,
    confidence: float = 0.95,
    theta0: float = 0.0,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
    previous_p: float | None = None,
    previous_interval: tuple[float, float] | None = None,
) -> SequentialResult:
    """The normal-mixture mSPRT (``_sequential``) on an estimate: the always-valid p-value
    against H₀: θ = ``theta0`` and the (1 − α) confidence sequence (low, high) for θ.

    ``previous_p`` / ``previous_interval``: the last look's p-value against the same θ₀ and
    its interval — the p-value then never increases and the sequence is the running
    intersection. An estimate with an empty or single-unit arm (infinite variance) gives
    p = 1 and (−inf, inf). ``tau2=None`` tunes the mixture to ``tune_n`` units per arm.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    v = estimate.variance
    if not math.isfinite(v) or estimate.n_baseline <= 0 or estimate.n_candidate <= 0:
        p = 1.0 if previous_p is None else min(1.0, previous_p)
        low, high = previous_interval if previous_interval is not None else (-math.inf, math.inf)
        return SequentialResult(diff=estimate.diff, variance=math.inf, tau2=tau2 or math.nan,
                                p_value=p, low=low, high=high)
    if tau2 is None:
        tau2 = _default_tau2(estimate, alpha, tune_n)
    res = msprt(estimate.diff - theta0, v, tau2, alpha=alpha, previous_p=previous_p)
    low, high = res.low + theta0, res.high + theta0
    if previous_interval is not None:
        low, high = max(low, previous_interval[0]), min(high, previous_interval[1])
        if low > high:  # only with probability <= alpha; keep it a point
            low = high = estimate.diff
    return SequentialResult(diff=estimate.diff, variance=v, tau2=tau2, p_value=res.p_value,
                            low=low, high=high)
