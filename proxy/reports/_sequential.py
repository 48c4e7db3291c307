"""Always-valid (sequential) inference for the difference candidate − control.

Method: the **mixture sequential probability ratio test (mSPRT) with a normal mixing
distribution** on the difference θ, as in Johari, Pekelis & Walsh, "Always Valid Inference:
Continuous Monitoring of A/B Tests", Operations Research 70(3):1806–1821 (2022; arXiv
1512.04922, 2015) — the method behind Optimizely's Stats Engine. With the estimate
θ̂ = mean₂ − mean₁, its variance V = σ₁²/n₁ + σ₂²/n₂ and the mixture θ ~ N(0, τ²), the
mixture likelihood ratio against H₀: θ = θ₀ is (Johari et al., the two-stream normal case)

    Λ = sqrt(V / (V + τ²)) · exp( τ²·(θ̂ − θ₀)² / (2·V·(V + τ²)) ).

Λ is a nonnegative martingale under H₀, so by Ville's inequality P(∃n: Λₙ ≥ 1/α) ≤ α:

* the always-valid p-value is pₙ = min(pₙ₋₁, 1/Λₙ) — non-increasing over looks when the
  caller passes the previous value, and P(∃n: pₙ ≤ α) ≤ α however often anyone looks;
* the confidence sequence is {θ₀ : Λ(θ₀) < 1/α}, i.e. θ̂ ± sqrt(V)·b with
  b² = (1 + 1/r)·(2·log(1/α) + log(1 + r)), r = τ²/V — the same expression as the
  normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
  nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), 2021 (normal
  mixture), which GrowthBook's sequential method uses; the running intersection over
  looks is also valid.

Variances are estimates, which makes the guarantee asymptotic (Waudby-Smith et al.,
"Time-uniform central limit theory and asymptotic confidence sequences", 2021) — exact for
Gaussian data with known variance, and checked by simulation in
``tests/reports/test_sequential_simulation.py`` and ``test_verdict_simulation.py``. They are
**edge-safe** (issue 18): a plug-in p̂(1−p̂)/n is 0 for an arm at 0/n or n/n, which made
23/450 vs 0/50 look decisive; :func:`proportion_variance` takes the largest of the plug-in,
the pooled variance under the null and Agresti & Caffo's (2000), and the means functions at
least the null (pooled) variance — the same rules as ``proxy.reports._estimates``, where they
are explained.

Choice of τ² (the mixing variance, in the squared units of the difference). The boundary
in z units depends only on r = τ²/V; b(r) is smallest where r = 2·log(1/α) + log(1 + r),
r* ≈ 8.21 at α = 0.05 (b ≈ 3.03; Howard et al. and GrowthBook tune the mixture the same
way, with the approximation ρ² = (2·log(1/α) + log(2·log(1/α) + 1))/N*, i.e. r ≈ 7.93).
So τ² says *at which sample size the test is sharpest*. By default (``tau2=None``) we
tune it to ``tune_n`` = 1,000 outcomes per arm:

    τ² = r* · (σ̂₁² + σ̂₂²) / tune_n        (for proportions near 0.5: τ ≈ 0.064, i.e. a prior
                                            that effects of a few points up to ~15 points occur)

which keeps the z boundary (1.96 for a single fixed-horizon look) at 3.19 / 3.03 / 3.25 /
3.57 for 300 / 1,000 / 10,000 / 100,000 outcomes per arm, 3.82 at 100 and 5.6 at 30 (the
minimum ``verdict`` accepts): flat where experiments on LLM features with effects of 2–10
points live, at the price of being slow to call very small experiments. Being scale-free,
the same rule serves float metrics. Pass an explicit ``tau2`` (e.g. from the distribution
of effects seen in past experiments, as Johari et al. recommend) to override.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TUNE_N",
    "SequentialResult",
    "confidence_sequence",
    "confidence_sequence_means",
    "msprt",
    "optimal_mixing_ratio",
    "proportion_variance",
    "sequential_boundary",
    "sequential_p_value",
    "sequential_p_value_means",
]

DEFAULT_TUNE_N = 1_000
"""Outcomes per arm at which the default mixing variance makes the test sharpest."""


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """One look of the mSPRT: the always-valid p-value and the confidence sequence for
    candidate − control at this look, with the inputs behind them."""

    diff: float
    variance: float
    tau2: float
    p_value: float
    low: float
    high: float


def optimal_mixing_ratio(alpha: float = 0.05) -> float:
    """r* = τ²/V minimising the mSPRT boundary: the root of r = 2·log(1/α) + log(1 + r)."""
    c = 2.0 * math.log(1.0 / alpha)
    r = c
    for _ in range(100):
        nxt = c + math.log1p(r)
        if abs(nxt - r) < 1e-14:
            break
        r = nxt
    return r


def sequential_boundary(ratio: float, alpha: float = 0.05) -> float:
    """b(r): the confidence sequence is θ̂ ± b·sqrt(V); reject H₀ when |z| ≥ b. r = τ²/V."""
    if ratio <= 0:
        return math.inf
    return math.sqrt((1.0 + 1.0 / ratio) * (2.0 * math.log(1.0 / alpha) + math.log1p(ratio)))


def _default_tau2(unit_variance: float, alpha: float, tune_n: float) -> float:
    return optimal_mixing_ratio(alpha) * unit_variance / tune_n


def msprt(
    diff: float,
    variance: float,
    tau2: float,
    *,
    alpha: float = 0.05,
    previous_p: float | None = None,
    previous_interval: tuple[float, float] | None = None,
) -> SequentialResult:
    """The normal-mixture mSPRT at one look, from the estimate and its variance.

    ``previous_p`` / ``previous_interval``: the values from the last look, to make the
    p-value non-increasing and the confidence sequence a running intersection.
    A zero variance with a zero difference gives p = 1 and the point interval.
    """
    if variance < 0 or tau2 <= 0:
        raise ValueError("need variance >= 0 and tau2 > 0")
    if variance == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        low = high = diff
    else:
        ratio = tau2 / variance
        log_lr = -0.5 * math.log1p(ratio) + (
            diff * diff * tau2 / (2.0 * variance * (variance + tau2))
        )
        p = min(1.0, math.exp(-log_lr))
        half = sequential_boundary(ratio, alpha) * math.sqrt(variance)
        low, high = diff - half, diff + half
    if previous_p is not None:
        p = min(p, previous_p)
    if previous_interval is not None:
        low, high = max(low, previous_interval[0]), min(high, previous_interval[1])
        if low > high:  # can only happen with probability <= alpha; keep it a point
            low = high = diff
    return SequentialResult(diff=diff, variance=variance, tau2=tau2, p_value=p, low=low, high=high)


def proportion_variance(s1: int, n1: int, s2: int, n2: int, *, edge_safe: bool = True) -> float:
    """Variance of p̂₂ − p̂₁ that does not collapse at 0 % or 100 %: the largest of

    * the pooled variance under H₀: p₁ = p₂, p̄(1−p̄)(1/n₁ + 1/n₂) with p̄ = (s₁+s₂)/(n₁+n₂)
      (the variance of the classical two-proportion score test), and
    * Agresti & Caffo's (Am. Statistician 54(4), 2000): p̃ᵢ = (sᵢ+1)/(nᵢ+2), Σ p̃ᵢ(1−p̃ᵢ)/(nᵢ+2)
      — one success and one failure added per arm, so it is positive even at 0/n or n/n,
    * and the plug-in Σ p̂ᵢ(1−p̂ᵢ)/nᵢ itself (Agresti–Caffo's can be a little smaller near ½),
      so the edge-safe variance is never below the textbook one.

    ``edge_safe=False``: the plug-in Σ p̂ᵢ(1−p̂ᵢ)/nᵢ, which is 0 when both arms are at an edge
    and only the other arm's when one is (what made 23/450 vs 0/50 look decisive)."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both arms need at least one outcome")
    for s, n in ((s1, n1), (s2, n2)):
        if not 0 <= s <= n:
            raise ValueError(f"need 0 <= successes <= n, got {s}, {n}")
    p1, p2 = s1 / n1, s2 / n2
    plug_in = p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2
    if not edge_safe:
        return plug_in
    pooled = (s1 + s2) / (n1 + n2)
    null = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    t1, t2 = (s1 + 1) / (n1 + 2), (s2 + 1) / (n2 + 2)
    adjusted = t1 * (1.0 - t1) / (n1 + 2) + t2 * (1.0 - t2) / (n2 + 2)
    return max(null, adjusted, plug_in)


def _proportion_parts(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """(p2 − p1, its edge-safe variance V, per-unit variance σ₁² + σ₂² for the default τ²).

    The per-unit variance is recovered from V as 2·V/(1/n₁ + 1/n₂) (equal per-unit variances),
    so τ² tracks the variance actually used and r = τ²/V depends on the sample sizes only."""
    var = proportion_variance(s1, n1, s2, n2)
    return (s2 / n2 - s1 / n1, var, 2.0 * var / (1.0 / n1 + 1.0 / n2))


def _sequential_proportions(
    s1: int, n1: int, s2: int, n2: int, alpha: float, tau2: float | None, tune_n: float,
    previous_p: float | None = None, previous_interval: tuple[float, float] | None = None,
) -> SequentialResult:
    diff, var, unit = _proportion_parts(s1, n1, s2, n2)
    if tau2 is None:
        tau2 = _default_tau2(unit, alpha, tune_n) if unit > 0 else 1.0
    return msprt(diff, var, tau2, alpha=alpha, previous_p=previous_p,
                 previous_interval=previous_interval)


def sequential_p_value(
    s1: int,
    n1: int,
    s2: int,
    n2: int,
    *,
    previous: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> float:
    """Always-valid p-value for H₀: p2 = p1 (control s1/n1, candidate s2/n2), by the
    normal-mixture mSPRT (Johari et al. 2022). Pass the previous look's value as
    ``previous`` to keep it non-increasing. ``tau2=None``: tuned to ``tune_n`` per arm.

    The p-value does not depend on α; the default τ² rule uses α = 0.05 for r*.
    """
    return _sequential_proportions(s1, n1, s2, n2, 0.05, tau2, tune_n, previous).p_value


def confidence_sequence(
    s1: int,
    n1: int,
    s2: int,
    n2: int,
    *,
    confidence: float = 0.95,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
    previous: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Always-valid (1 − α) confidence sequence for p2 − p1: covers the true difference at
    every look simultaneously with probability ≥ 1 − α. ``previous`` intersects with the
    last look's interval."""
    alpha = 1.0 - confidence
    res = _sequential_proportions(s1, n1, s2, n2, alpha, tau2, tune_n,
                                  previous_interval=previous)
    return (max(res.low, -1.0), min(res.high, 1.0))


def _mean_parts(mean1: float, var1: float, n1: int, mean2: float, var2: float,
                n2: int) -> tuple[float, float]:
    """(V, per-unit variance for τ²): Welch's s₁²/n₁ + s₂²/n₂, but at least the variance under
    the null — all n₁ + n₂ values pooled around their common mean, S²·(1/n₁ + 1/n₂) — so an arm
    whose few values happen to be equal does not make the difference look exact (the same
    rule as ``proxy.reports.mean_estimate``)."""
    if n1 < 2 or n2 < 2:
        raise ValueError("need at least 2 observations per arm")
    if var1 < 0 or var2 < 0:
        raise ValueError("variances must be non-negative")
    n = n1 + n2
    grand = (n1 * mean1 + n2 * mean2) / n
    pooled = ((n1 - 1) * var1 + (n2 - 1) * var2
              + n1 * (mean1 - grand) ** 2 + n2 * (mean2 - grand) ** 2) / (n - 1)
    var = max(var1 / n1 + var2 / n2, pooled * (1.0 / n1 + 1.0 / n2))
    return (var, 2.0 * var / (1.0 / n1 + 1.0 / n2))


def sequential_p_value_means(
    mean1: float,
    var1: float,
    n1: int,
    mean2: float,
    var2: float,
    n2: int,
    *,
    previous: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> float:
    """Always-valid p-value for H₀: μ2 = μ1 from summary statistics (sample variances)."""
    var, unit = _mean_parts(mean1, var1, n1, mean2, var2, n2)
    if tau2 is None:
        tau2 = _default_tau2(unit, 0.05, tune_n) if unit > 0 else 1.0
    return msprt(mean2 - mean1, var, tau2, previous_p=previous).p_value


def confidence_sequence_means(
    mean1: float,
    var1: float,
    n1: int,
    mean2: float,
    var2: float,
    n2: int,
    *,
    confidence: float = 0.95,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
    previous: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Always-valid confidence sequence for μ2 − μ1 from summary statistics."""
    alpha = 1.0 - confidence
    var, unit = _mean_parts(mean1, var1, n1, mean2, var2, n2)
    if tau2 is None:
        tau2 = _default_tau2(unit, alpha, tune_n) if unit > 0 else 1.0
    res = msprt(mean2 - mean1, var, tau2, alpha=alpha, previous_interval=previous)
    return (res.low, res.high)
