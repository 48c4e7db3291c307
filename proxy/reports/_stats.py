"""Fixed-horizon statistics for reports: intervals, tests, SRM check, Holm correction.

Pure functions over summary numbers (counts, means, variances) with no dependency beyond
the standard library, so the server install stays small. Each is checked against
statsmodels / scipy in ``tests/reports/test_stats_reference.py`` to 1e-9.

Conventions used throughout ``proxy.reports``:

* arm 1 is the **control**, arm 2 the **candidate**;
* every difference is **arm 2 − arm 1** (candidate − control), so a positive difference
  means the candidate's metric is higher. (statsmodels and scipy compute arm 1 − arm 2;
  our functions equal theirs with the arguments swapped — see the tests.)
* ``confidence`` is the coverage (0.95), ``alpha`` the two-sided level (0.05).

Distribution functions: the normal CDF via ``math.erfc``, its quantile via
``statistics.NormalDist.inv_cdf`` (Wichura's AS241, ~1e-16); the Student t CDF via the
regularized incomplete beta function and the chi-square survival function via the
regularized upper incomplete gamma function, both by the continued fractions of
Press et al., *Numerical Recipes* (3rd ed., §6.2 ``gcf``/``gser`` and §6.4 ``betacf``),
iterated to 1e-15 relative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

__all__ = [
    "chi2_sf",
    "chi_square_srm",
    "holm",
    "mcnemar",
    "newcombe_diff_interval",
    "normal_quantile",
    "normal_sf",
    "student_t_quantile",
    "student_t_sf",
    "two_proportion_ztest",
    "welch_interval",
    "welch_ttest",
    "wilson_interval",
]

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITER = 100_000
_STD_NORMAL = NormalDist()


# --------------------------------------------------------------------------- distributions


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z; erfc keeps full relative accuracy in the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """The standard normal quantile Φ⁻¹(p) (Wichura 1988, AS241, via the stdlib)."""
    return _STD_NORMAL.inv_cdf(p)


def _two_sided_crit(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return normal_quantile(1.0 - (1.0 - confidence) / 2.0)


def _gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its series (NR 6.2 ``gser``); x < a + 1."""
    ap = a
    total = delta = 1.0 / a
    for _ in range(_MAX_ITER):
        ap += 1.0
        delta *= x / ap
        total += delta
        if abs(delta) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_cf(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by modified Lentz (NR 6.2 ``gcf``); x ≥ a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: float) -> float:
    """Survival function of the chi-square distribution: Q(df/2, x/2)."""
    if df <= 0:
        raise ValueError("df must be positive")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    a, half = df / 2.0, x / 2.0
    if half < a + 1.0:
        return 1.0 - _gamma_series(a, half)
    return _gamma_cf(a, half)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (NR 6.4 ``betacf``, modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_ITER):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def _stirling_correction(x: float) -> float:
    """lgamma(x) − [(x − ½)·log x − x + ½·log 2π], by its asymptotic series (x ≥ 100:
    the first omitted term is below 1e-21)."""
    x2 = x * x
    return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * x2)) / x2) / x2) / x


def _log_beta(a: float, b: float) -> float:
    """log B(a, b) = lgamma(a) + lgamma(b) − lgamma(a + b), without the cancellation of
    three large lgamma values when one argument is large (t tails with df ~ 1e6)."""
    big, small = (a, b) if a >= b else (b, a)
    if big < 100.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(big+small) − lgamma(big) by Stirling, arranged to avoid cancellation.
    total = big + small
    ratio = (
        (big - 0.5) * math.log1p(small / big)
        + small * math.log(total)
        - small
        + _stirling_correction(total)
        - _stirling_correction(big)
    )
    return math.lgamma(small) - ratio


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given x and y = 1 − x (passed separately so a
    y near 0 or 1 keeps its precision)."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    log_front = -_log_beta(a, b) + a * log_x + b * log_y
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (real, > 0) degrees of freedom.

    Two-sided tail: P(|T| > |t|) = I_{df/(df+t²)}(df/2, 1/2) (Abramowitz & Stegun 26.7.1).
    """
    if df <= 0:
        raise ValueError("df must be positive")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    x = df / (df + t2)
    y = t2 / (df + t2)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x, y)
    return tail if t >= 0 else 1.0 - tail


def _student_t_pdf(t: float, df: float) -> float:
    log_c = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def student_t_quantile(p: float, df: float) -> float:
    """The Student t quantile: the t with P(T ≤ t) = p. Newton's method on the CDF from the
    normal quantile, safeguarded by bisection; converges to ~1e-14 relative."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    q = 1.0 - p  # upper tail probability, solve student_t_sf(t) = q for t > 0
    lo, hi = 0.0, 1.0
    while student_t_sf(hi, df) > q:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    t = min(max(normal_quantile(p), lo), hi)
    for _ in range(200):
        f = student_t_sf(t, df) - q
        if f > 0:
            lo = t
        else:
            hi = t
        step = f / _student_t_pdf(t, df)  # d(sf)/dt = -pdf, so Newton: t + f/pdf
        new = t + step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - t) <= 1e-15 * max(1.0, abs(t)):
            return new
        t = new
    return t


# --------------------------------------------------------------------------- proportions


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0.0, 1.0) when n == 0.

    Wilson (1927), JASA 22:209; center (p̂ + z²/2n)/(1 + z²/n), half-width
    z·sqrt(p̂(1−p̂)/n + z²/4n²)/(1 + z²/n), clipped to [0, 1] (as statsmodels does).
    """
    _check_counts(successes, n)
    if n == 0:
        return (0.0, 1.0)
    z = _two_sided_crit(confidence)
    z2 = z * z
    p = successes / n
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    return (min(max(center - half, 0.0), 1.0), min(max(center + half, 0.0), 1.0))


def newcombe_diff_interval(
    s1: int, n1: int, s2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for p2 − p1 (candidate − control): Newcombe's hybrid score method 10.

    Newcombe (1998), Statistics in Medicine 17:873, method 10, from the two Wilson intervals
    (l1, u1) and (l2, u2):  d − sqrt((p2−l2)² + (u1−p1)²) … d + sqrt((u2−p2)² + (p1−l1)²).
    Equals statsmodels ``confint_proportions_2indep(s2, n2, s1, n1, method="newcomb")``.
    With an empty arm the difference is unknown: (−1.0, 1.0).
    """
    _check_counts(s1, n1)
    _check_counts(s2, n2)
    if n1 == 0 or n2 == 0:
        return (-1.0, 1.0)
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, confidence)
    l2, u2 = wilson_interval(s2, n2, confidence)
    diff = p2 - p1
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return (low, high)


def two_proportion_ztest(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test, two-sided: z = (p2 − p1)/sqrt(p̄(1−p̄)(1/n1 + 1/n2)).

    Equals statsmodels ``proportions_ztest([s2, s1], [n2, n1])``. Where statsmodels
    returns NaN (an empty arm, or p̄ ∈ {0, 1} so both arms are all-fail or all-success and
    identical) we return (0.0, 1.0): no evidence of a difference.
    """
    _check_counts(s1, n1)
    _check_counts(s2, n2)
    if n1 == 0 or n2 == 0:
        return (0.0, 1.0)
    pooled = (s1 + s2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0.0:
        return (0.0, 1.0)
    z = (s2 / n2 - s1 / n1) / math.sqrt(var)
    return (z, 2.0 * normal_sf(abs(z)))


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")


# --------------------------------------------------------------------------- means


def _welch_parts(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int
) -> tuple[float, float, float]:
    """(difference mean2 − mean1, its standard error, Welch–Satterthwaite df)."""
    if n1 < 2 or n2 < 2:
        raise ValueError("Welch's test needs at least 2 observations per arm")
    if var1 < 0 or var2 < 0:
        raise ValueError("variances must be non-negative")
    v1, v2 = var1 / n1, var2 / n2
    se2 = v1 + v2
    if se2 == 0.0:
        df = float(n1 + n2 - 2)
    else:
        df = se2 * se2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    return (mean2 - mean1, math.sqrt(se2), df)


def welch_ttest(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int
) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test from summary statistics (sample variances, ddof=1).

    Welch (1947), Biometrika 34:28; t = (m2 − m1)/sqrt(v1/n1 + v2/n2), df by
    Welch–Satterthwaite. Returns (t, df, two-sided p). Equals scipy
    ``ttest_ind_from_stats(m2, sqrt(v2), n2, m1, sqrt(v1), n1, equal_var=False)``. When both
    variances are 0 (scipy: NaN): t = 0, p = 1 for equal means, else t = ±inf, p = 0.
    """
    diff, se, df = _welch_parts(mean1, var1, n1, mean2, var2, n2)
    if se == 0.0:
        if diff == 0.0:
            return (0.0, df, 1.0)
        return (math.copysign(math.inf, diff), df, 0.0)
    t = diff / se
    return (t, df, min(1.0, 2.0 * student_t_sf(abs(t), df)))


def welch_interval(
    mean1: float,
    var1: float,
    n1: int,
    mean2: float,
    var2: float,
    n2: int,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Welch confidence interval for mean2 − mean1: d ± t_{df, 1−α/2}·se (Welch 1947).

    Equals scipy's ``ttest_ind(x2, x1, equal_var=False).confidence_interval(confidence)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff, se, df = _welch_parts(mean1, var1, n1, mean2, var2, n2)
    if se == 0.0:
        return (diff, diff)
    half = student_t_quantile(1.0 - (1.0 - confidence) / 2.0, df) * se
    return (diff - half, diff + half)


# --------------------------------------------------------------------------- SRM and Holm


def chi_square_srm(
    observed: Sequence[int], expected_weights: Sequence[float]
) -> tuple[float, float]:
    """Sample-ratio-mismatch check: Pearson's chi-square goodness of fit of the observed
    counts per variant against the configured split weights.

    χ² = Σ (o_i − e_i)²/e_i with e_i = N·w_i/Σw, df = k − 1, p = Q((k−1)/2, χ²/2).
    Equals scipy ``chisquare(observed, f_exp=expected)``. Warn at p < 0.001 (DESIGN.md).
    With no observations at all: (0.0, 1.0).
    """
    if len(observed) != len(expected_weights):
        raise ValueError("observed and expected_weights must have the same length")
    if len(observed) < 2:
        raise ValueError("need at least two variants")
    if any(w <= 0 for w in expected_weights):
        raise ValueError("expected weights must be positive")
    if any(o < 0 for o in observed):
        raise ValueError("observed counts must be non-negative")
    total = float(sum(observed))
    if total == 0:
        return (0.0, 1.0)
    wsum = float(sum(expected_weights))
    chi2 = 0.0
    for o, w in zip(observed, expected_weights):
        e = total * w / wsum
        chi2 += (o - e) ** 2 / e
    return (chi2, chi2_sf(chi2, len(observed) - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    Holm (1979), Scand. J. Statist. 6:65: sort ascending, p̃_(i) = max_{j≤i} (m − j + 1)·p_(j),
    capped at 1. Equals statsmodels ``multipletests(p, method="holm")[1]``. Valid under any
    dependence between the tests, and for always-valid (sequential) p-values too.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, (m - rank) * p_values[idx])
        adjusted[idx] = min(running, 1.0)
    return adjusted


MCNEMAR_EXACT_BELOW = 25  # discordant pairs; below this the exact binomial test, above it chi-square


def mcnemar(b: int, c: int, *, exact: bool | None = None) -> tuple[float, float]:
    """McNemar's test for paired binary results: ``b`` pairs where only the first passed, ``c``
    where only the second did (concordant pairs carry no information). Returns
    (statistic, two-sided p).

    ``exact=True``: the binomial test on the discordant pairs, statistic min(b, c) and
    p = min(1, 2·P(X ≤ min(b, c))), X ~ Bin(b + c, ½). ``exact=False``: the chi-square
    statistic with continuity correction (|b − c| − 1)² / (b + c), 1 degree of freedom.
    ``None`` picks exact below 25 discordant pairs. Both equal statsmodels'
    ``mcnemar([[·, b], [c, ·]], exact=…, correction=True)``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"need b, c >= 0 (got {b}, {c})")
    n = b + c
    if exact is None:
        exact = n < MCNEMAR_EXACT_BELOW
    if n == 0:
        return (0.0, 1.0)
    if exact:
        k = min(b, c)
        cdf = 1.0 if k >= n else _betainc(n - k, k + 1, 0.5, 0.5)  # P(X <= k) = I_½(n − k, k + 1)
        return (float(k), min(1.0, 2.0 * cdf))
    stat = (abs(b - c) - 1.0) ** 2 / n
    return (stat, chi2_sf(stat, 1))
