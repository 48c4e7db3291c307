"""Verdicts: better / worse / powered no-difference / inconclusive with the needed N, and
never a verdict under the minimum number of outcomes."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import pytest

from proxy.reports import (
    Verdict,
    newcombe_diff_interval,
    sample_size_per_arm,
    sample_size_per_arm_means,
    sequential_p_value,
    two_proportion_ztest,
    verdict,
    verdict_means,
)


def test_better_when_maximizing():
    v = verdict(500, 1000, 600, 1000, goal="maximize")
    assert (v.label, v.code) == ("better", "better")
    assert v.diff == pytest.approx(0.1)
    assert v.sequential_p < 0.05 and v.confidence_sequence[0] > 0
    assert v.interval == newcombe_diff_interval(500, 1000, 600, 1000)
    assert v.p_value == two_proportion_ztest(500, 1000, 600, 1000)[1]
    assert (v.n_control, v.n_candidate, v.more_needed) == (1000, 1000, 0)


def test_worse_when_maximizing_and_better_when_minimizing():
    assert verdict(600, 1000, 500, 1000, goal="maximize").label == "worse"
    assert verdict(600, 1000, 500, 1000, goal="minimize").label == "better"
    assert verdict(500, 1000, 600, 1000, goal="minimize").label == "worse"


def test_powered_no_difference():
    n = sample_size_per_arm(0.5, 0.02)
    v = verdict(n // 2, n, n // 2 + 10, n)
    assert v.label == "no difference detected (powered)" and v.code == "no_difference"
    assert v.needed_n == n and v.more_needed == 0
    # at that n the confidence sequence also rules out ±0.02 for a null-ish observation
    assert -0.02 < v.confidence_sequence[0] < v.confidence_sequence[1] < 0.02


def test_inconclusive_reports_needed_n():
    v = verdict(5000, 10000, 5050, 10000)
    needed = sample_size_per_arm(0.5, 0.02)
    assert v.code == "inconclusive"
    assert v.needed_n == needed and v.more_needed == needed - 10000
    assert v.label == f"inconclusive — need ~{needed - 10000} more outcomes per arm"
    # fixed-horizon test at the same data would not call it either; the numbers are there
    assert v.p_value > 0.05 and v.sequential_p > 0.05


def test_needed_n_formulas():
    # textbook fixed-horizon: (1.959964 + 0.841621)² · (0.25 + 0.2499) / 0.02² = 9,803.3
    assert sample_size_per_arm(0.5, 0.02, sequential=False) == 9804
    assert sample_size_per_arm(0.1, 0.02, sequential=False) == math.ceil(
        (1.959963984540054 + 0.8416212335729143) ** 2 * (0.09 + 0.1056) / 0.0004)
    seq = sample_size_per_arm(0.5, 0.02)
    assert 2 * 9804 < seq < 2.5 * 9804  # the always-valid test needs more
    assert sample_size_per_arm(0.99, 0.02) > 0  # 1.01 is out of range: uses 0.97
    assert sample_size_per_arm_means(4.0, 0.5, sequential=False) == math.ceil(
        (1.959963984540054 + 0.8416212335729143) ** 2 * 8.0 / 0.25)


@pytest.mark.parametrize(("n1", "n2"), [(0, 0), (0, 100), (29, 1000), (1000, 29), (5, 5)])
def test_never_a_verdict_under_the_minimum(n1, n2):
    # even an overwhelming observed difference
    v = verdict(0, n1, n2, n2)
    assert v.code == "inconclusive"
    assert (v.more_control, v.more_candidate) == (max(v.needed_control - n1, 0),
                                                  max(v.needed_candidate - n2, 0))
    assert v.more_needed == max(v.more_control, v.more_candidate) > 0
    assert min(v.needed_control, v.needed_candidate) >= 30


def test_minimum_is_a_parameter():
    assert verdict(100, 500, 200, 500).code == "better"
    v = verdict(100, 500, 200, 500, min_n=600)
    assert v.code == "inconclusive" and v.more_needed == v.needed_n - 500


def test_small_control_plans_conservatively():
    # 0/10 in control: plan with the Wilson bound nearest 0.5, not 0.0
    v = verdict(0, 10, 0, 10)
    assert v.needed_n > sample_size_per_arm(0.0, 0.02)


def test_previous_sequential_p_carries_over():
    first = verdict(450, 1000, 560, 1000)
    assert first.code == "better"
    later = verdict(900, 2000, 960, 2000, previous_sequential_p=first.sequential_p)
    assert later.sequential_p == first.sequential_p
    assert later.code == "better"
    assert sequential_p_value(900, 2000, 960, 2000) > first.sequential_p


def test_verdict_is_frozen():
    v = verdict(1, 2, 1, 2)
    assert isinstance(v, Verdict)
    with pytest.raises(FrozenInstanceError):
        v.label = "better"  # type: ignore[misc]


def test_bad_goal_is_rejected():
    with pytest.raises(ValueError):
        verdict(500, 1000, 600, 1000, goal="up")  # type: ignore[arg-type]


def test_means_verdicts():
    assert verdict_means(10.0, 9.0, 500, 11.0, 9.0, 500, mde=0.5).code == "better"
    assert verdict_means(10.0, 9.0, 500, 11.0, 9.0, 500, mde=0.5, goal="minimize").code == "worse"
    n = sample_size_per_arm_means(9.0, 0.5)
    v = verdict_means(10.0, 9.0, n, 10.01, 9.0, n, mde=0.5)
    assert v.code == "no_difference"
    v = verdict_means(10.0, 9.0, 100, 10.1, 9.0, 100, mde=0.5)
    assert v.code == "inconclusive" and v.more_needed == n - 100
    v = verdict_means(10.0, 9.0, 1, 50.0, 9.0, 1, mde=0.5)
    assert v.code == "inconclusive" and v.interval == (-math.inf, math.inf)


# ----------------------------------------------------------------- estimates, planning, edges


def test_verdict_is_the_always_valid_test_on_the_edge_safe_estimate():
    from proxy.reports import always_valid, proportion_estimate, verdict_estimate

    for counts in [(23, 450, 0, 50), (450, 1000, 520, 1000), (30, 30, 470, 500)]:
        v = verdict(*counts)
        res = always_valid(proportion_estimate(*counts))
        assert v.sequential_p == res.p_value
        assert v.confidence_sequence == (max(res.low, -1.0), min(res.high, 1.0))
        e = verdict_estimate(proportion_estimate(*counts), mde=0.02, bounds=(-1.0, 1.0))
        assert (e.sequential_p, e.confidence_sequence, e.code) == (v.sequential_p, v.confidence_sequence,
                                                                   v.code)


def test_verdict_estimate_on_clustered_units():
    from proxy.reports import ratio_estimate, unit_sums, verdict_estimate

    # 200 users per arm, 20 requests each; candidate users succeed more often
    base = unit_sums([10] * 100 + [14] * 100, [20] * 200)
    cand = unit_sums([14] * 100 + [18] * 100, [20] * 200)
    v = verdict_estimate(ratio_estimate(base, cand), mde=0.05, bounds=(-1.0, 1.0))
    assert v.code == "better" and (v.n_control, v.n_candidate) == (200, 200)
    assert v.diff == pytest.approx(0.2)
    # too few units: no verdict, however large the difference
    few = verdict_estimate(ratio_estimate(unit_sums([0] * 5, [20] * 5), unit_sums([20] * 5, [20] * 5)),
                           mde=0.05)
    assert few.code == "inconclusive" and few.more_needed > 0


def test_verdict_means_uses_the_edge_safe_variance():
    from proxy.reports import always_valid, mean_estimate, unit_sums

    xs = [float(i % 7) for i in range(40)]
    ys = [3.0] * 31
    v = verdict_means(sum(xs) / 40, _var(xs), 40, 3.0, 0.0, 31, mde=0.5)
    res = always_valid(mean_estimate(unit_sums(xs), unit_sums(ys)))
    assert v.sequential_p == pytest.approx(res.p_value, rel=1e-9)
    # not the Welch variance, to which the constant arm adds nothing: the null (pooled) one
    assert v.variance > 1.25 * _var(xs) / 40


def _var(xs):
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def test_outcomes_needed_at_a_split():
    from proxy.reports import OutcomesNeeded, outcomes_needed, units_needed

    even = outcomes_needed(0.6, 0.03)
    assert even == OutcomesNeeded(sample_size_per_arm(0.6, 0.03), sample_size_per_arm(0.6, 0.03))
    ninety = outcomes_needed(0.6, 0.03, allocation=0.1)
    assert ninety.baseline == pytest.approx(9 * ninety.candidate, abs=9)
    mirrored = outcomes_needed(0.6, 0.03, allocation=0.9)  # the candidate is the big arm now
    assert mirrored.candidate == pytest.approx(9 * mirrored.baseline, abs=9)
    assert mirrored.total == pytest.approx(ninety.total, rel=0.01)  # σ₂² = 0.63·0.37 ≈ σ₁² = 0.24
    # fixed horizon, unequal split: (z + z)² · (σ₁²/(1−w) + σ₂²/w) / Δ² in all, closed form
    fixed = outcomes_needed(0.6, 0.03, allocation=0.25, sequential=False)
    total = (1.959963984540054 + 0.8416212335729143) ** 2 * (0.24 / 0.75 + 0.63 * 0.37 / 0.25) / 0.03**2
    assert fixed.candidate == math.ceil(total * 0.25)
    # non-inferiority at a margin: the candidate as good as the baseline
    ni = outcomes_needed(0.8, 0.02, p_candidate=0.8, allocation=0.05)
    assert ni.candidate < ni.baseline and ni.more(100, 10) == (ni.baseline - 100, ni.candidate - 10)
    assert units_needed(0.0, 0.0, 0.1) == OutcomesNeeded(1, 1)
    with pytest.raises(ValueError):
        outcomes_needed(0.6, 0.03, allocation=1.0)


def test_planning_for_0_60_vs_0_63_before_and_after():
    # README "Why you can trust a verdict": 8,706 per arm before issue 18 (plug-in variance),
    # 8,714 with the edge-safe (pooled-at-least) variance; fixed horizon 4,126
    assert sample_size_per_arm(0.60, 0.03) == 8714
    assert sample_size_per_arm(0.60, 0.03, sequential=False) == 4126


def test_coverage_check_units_is_cluster_robust():
    from proxy.reports import always_valid, coverage_check, coverage_check_units, ratio_estimate, unit_sums

    # 300 users per arm, 20 requests each; whole users either report outcomes or not
    base = unit_sums([20] * 180 + [0] * 120, [20] * 300)  # 60% of requests covered
    cand = unit_sums([20] * 165 + [0] * 135, [20] * 300)  # 55%
    clustered = coverage_check_units(base, cand)
    assert clustered.p_value == always_valid(ratio_estimate(base, cand), confidence=0.99).p_value
    assert (clustered.rate_control, clustered.rate_candidate) == (0.6, 0.55)
    assert not clustered.warning  # 300 users per arm: a 5-point gap is within noise
    naive = coverage_check(3600, 6000, 3300, 6000)  # the same requests taken as independent
    assert naive.warning and naive.p_value < clustered.p_value
