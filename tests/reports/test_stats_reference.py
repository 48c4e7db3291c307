"""proxy.reports statistics equal statsmodels / scipy (test-only references) to 1e-9.

Our differences are candidate − control (arm 2 − arm 1); statsmodels and scipy compute
arm 1 − arm 2, so the references are called with the arms swapped.
"""

from __future__ import annotations

import math
import warnings

import pytest

pytest.importorskip("scipy")
pytest.importorskip("statsmodels")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.stats.multitest import multipletests  # noqa: E402
from statsmodels.stats.proportion import (  # noqa: E402
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from proxy.reports import (  # noqa: E402
    chi2_sf,
    chi_square_srm,
    holm,
    mcnemar,
    newcombe_diff_interval,
    student_t_quantile,
    student_t_sf,
    two_proportion_ztest,
    welch_interval,
    welch_ttest,
    wilson_interval,
)

TOL = dict(rel=1e-9, abs=1e-12)

# (successes, n): 0 and n successes, tiny n, large n.
SINGLE = [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 5), (1, 5), (3, 5), (5, 5),
          (7, 20), (0, 100), (100, 100), (1, 100), (49, 100), (412, 1000),
          (5123, 10000), (0, 1_000_000), (999_999, 1_000_000), (123_457, 1_000_000)]
CONFIDENCES = [0.95, 0.90, 0.99, 0.999]

PAIRS = [((0, 1), (1, 1)), ((1, 1), (0, 1)), ((1, 2), (2, 2)), ((0, 5), (5, 5)),
         ((5, 5), (0, 5)), ((0, 5), (0, 5)), ((5, 5), (5, 5)), ((3, 5), (1, 2)),
         ((0, 10), (1, 10)), ((7, 20), (12, 30)), ((49, 100), (61, 100)),
         ((100, 100), (97, 100)), ((412, 1000), (455, 1000)), ((5000, 10000), (5150, 10000)),
         ((50_000, 100_000), (50_600, 100_000)), ((123_457, 1_000_000), (124_001, 999_000)),
         ((1, 1_000_000), (0, 3))]


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("s", "n"), SINGLE)
def test_wilson_matches_statsmodels(s, n, confidence):
    ref = proportion_confint(s, n, alpha=1 - confidence, method="wilson")
    assert wilson_interval(s, n, confidence) == pytest.approx(ref, **TOL)


def test_wilson_empty_arm():
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(("control", "candidate"), PAIRS)
def test_newcombe_matches_statsmodels(control, candidate, confidence):
    (s1, n1), (s2, n2) = control, candidate
    ref = confint_proportions_2indep(s2, n2, s1, n1, method="newcomb", compare="diff",
                                     alpha=1 - confidence)
    got = newcombe_diff_interval(s1, n1, s2, n2, confidence)
    assert got == pytest.approx(tuple(float(x) for x in ref), **TOL)
    diff = s2 / n2 - s1 / n1
    assert got[0] <= diff <= got[1]


def test_newcombe_sign_is_candidate_minus_control():
    low, high = newcombe_diff_interval(10, 100, 90, 100)
    assert 0 < low < high


@pytest.mark.parametrize(("control", "candidate"), PAIRS)
def test_ztest_matches_statsmodels(control, candidate):
    (s1, n1), (s2, n2) = control, candidate
    z, p = two_proportion_ztest(s1, n1, s2, n2)
    pooled = (s1 + s2) / (n1 + n2)
    if pooled in (0.0, 1.0):  # statsmodels: nan; ours: no evidence
        assert (z, p) == (0.0, 1.0)
        return
    ref_z, ref_p = proportions_ztest(np.array([s2, s1]), np.array([n2, n1]))
    assert z == pytest.approx(float(ref_z), **TOL)
    assert p == pytest.approx(float(ref_p), **TOL)


# (mean1, sd1, n1, mean2, sd2, n2): control then candidate.
WELCH = [(0.0, 1.0, 2, 1.0, 1.0, 2), (0.3, 0.2, 2, 0.1, 3.0, 5), (5.0, 2.0, 5, 5.0, 2.0, 5),
         (1.0, 0.5, 10, 1.3, 2.5, 40), (100.0, 15.0, 30, 92.0, 25.0, 31),
         (0.51, 0.5, 1000, 0.55, 0.49, 1200), (3.2, 1e-3, 3, 3.2005, 1e-3, 3),
         (10.0, 4.0, 10_000, 10.05, 4.2, 9_000), (0.0, 1.0, 1_000_000, 0.003, 1.0, 1_000_000),
         (2.0, 0.0, 10, 2.5, 1.0, 12)]


@pytest.mark.parametrize("row", WELCH)
def test_welch_matches_scipy(row):
    m1, sd1, n1, m2, sd2, n2 = row
    t, df, p = welch_ttest(m1, sd1**2, n1, m2, sd2**2, n2)
    ref = stats.ttest_ind_from_stats(m2, sd2, n2, m1, sd1, n1, equal_var=False)
    assert t == pytest.approx(float(ref.statistic), **TOL)
    assert p == pytest.approx(float(ref.pvalue), **TOL)
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    assert df == pytest.approx((v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)), **TOL)


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
@pytest.mark.parametrize("row", WELCH)
def test_welch_interval_matches_scipy(row, confidence):
    m1, sd1, n1, m2, sd2, n2 = row
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = stats.t.ppf(1 - (1 - confidence) / 2, df) * math.sqrt(v1 + v2)
    got = welch_interval(m1, sd1**2, n1, m2, sd2**2, n2, confidence)
    assert got == pytest.approx((m2 - m1 - half, m2 - m1 + half), **TOL)


def test_welch_interval_matches_scipy_on_raw_samples():
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(1.0, 1.0, 23), rng.normal(1.4, 2.0, 17)
    ref = stats.ttest_ind(x2, x1, equal_var=False).confidence_interval(0.95)
    got = welch_interval(float(x1.mean()), float(x1.var(ddof=1)), 23,
                         float(x2.mean()), float(x2.var(ddof=1)), 17)
    assert got == pytest.approx((float(ref.low), float(ref.high)), **TOL)


def test_welch_zero_variances():
    assert welch_ttest(1.0, 0.0, 5, 1.0, 0.0, 5) == (0.0, 8.0, 1.0)
    t, _, p = welch_ttest(1.0, 0.0, 5, 2.0, 0.0, 5)
    assert t == math.inf and p == 0.0


@pytest.mark.parametrize("df", [0.5, 1, 1.7, 2, 5, 30, 1000, 1e5, 2e6])
@pytest.mark.parametrize("t", [0.0, 0.1, 1.0, 1.96, 3.0, 8.0, -2.5])
def test_student_t_sf_matches_scipy(t, df):
    assert student_t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), **TOL)


@pytest.mark.parametrize("df", [1, 1.5, 3, 10, 100, 1e4, 1e6])
@pytest.mark.parametrize("p", [0.025, 0.6, 0.95, 0.975, 0.995, 0.9999])
def test_student_t_quantile_matches_scipy(p, df):
    assert student_t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), **TOL)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 50, 1000])
@pytest.mark.parametrize("x", [0.001, 0.5, 1.0, 3.0, 10.0, 60.0, 1500.0])
def test_chi2_sf_matches_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(float(stats.chi2.sf(x, df)), **TOL)


SRM = [([50, 50], [1, 1]), ([0, 10], [1, 1]), ([1, 0], [0.5, 0.5]), ([3, 1], [1, 1]),
       ([5120, 4880], [50, 50]), ([9000, 1000], [90, 10]), ([9100, 900], [0.9, 0.1]),
       ([500_000, 501_500], [1, 1]), ([310, 330, 360], [1, 1, 1]),
       ([100, 250, 650], [10, 25, 65]), ([1, 2, 3, 4, 5], [1, 1, 1, 1, 1])]


@pytest.mark.parametrize(("observed", "weights"), SRM)
def test_chi_square_srm_matches_scipy(observed, weights):
    total = sum(observed)
    expected = [total * w / sum(weights) for w in weights]
    ref = stats.chisquare(observed, f_exp=expected)
    chi2, p = chi_square_srm(observed, weights)
    assert chi2 == pytest.approx(float(ref.statistic), **TOL)
    assert p == pytest.approx(float(ref.pvalue), **TOL)


def test_chi_square_srm_flags_a_broken_split():
    assert chi_square_srm([5300, 4700], [1, 1])[1] < 0.001
    assert chi_square_srm([5030, 4970], [1, 1])[1] > 0.1
    assert chi_square_srm([0, 0], [1, 1]) == (0.0, 1.0)


HOLM = [[0.01], [0.01, 0.04], [0.04, 0.01, 0.03], [0.2, 0.2, 0.2], [0.001, 0.5, 0.02, 0.04],
        [0.9, 0.8, 0.7], [0.0, 1.0, 0.049, 0.05], [0.3, 0.01, 0.01, 0.02, 0.6, 0.045]]


@pytest.mark.parametrize("p_values", HOLM)
def test_holm_matches_statsmodels(p_values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = multipletests(p_values, method="holm")[1]
    assert holm(p_values) == pytest.approx([float(x) for x in ref], **TOL)


def test_holm_empty():
    assert holm([]) == []


@pytest.mark.parametrize("b, c", [(0, 1), (3, 9), (12, 12), (7, 0), (24, 0), (30, 41), (150, 90), (1, 2000)])
@pytest.mark.parametrize("exact", [True, False])
def test_mcnemar_matches_statsmodels(b, c, exact):
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    ref = sm_mcnemar([[50, b], [c, 40]], exact=exact, correction=True)
    stat, p = mcnemar(b, c, exact=exact)
    assert stat == pytest.approx(float(ref.statistic), **TOL)
    assert p == pytest.approx(float(ref.pvalue), **TOL)


def test_mcnemar_picks_exact_below_25_discordant_pairs():
    assert mcnemar(3, 9) == mcnemar(3, 9, exact=True)
    assert mcnemar(30, 41) == mcnemar(30, 41, exact=False)
    assert mcnemar(0, 0) == (0.0, 1.0)
