"""Simulations (seeded, plain loops): the always-valid test keeps its false-positive rate
under repeated looks where a naive fixed-horizon z-test does not, and still has power.

Measured at these seeds (see the asserts), with the edge-safe variance of issue 18: A/A 2,000
experiments × 20 looks × 50 per arm per look: sequential 0.0115 (0.0135 with the plug-in
variance before), naive z-test at every look 0.2705. 0.5 vs 0.6, 20 looks up to 1,000 per arm:
detected in 0.956 of 500 experiments (0.958 before). Unequal splits and rare events are in
``test_verdict_simulation.py``.
"""

from __future__ import annotations

import random

import pytest

from scipy import stats

from proxy.reports import (
    confidence_sequence,
    confidence_sequence_means,
    sequential_p_value,
    sequential_p_value_means,
    two_proportion_ztest,
)

ALPHA = 0.05


def _simulate(p1: float, p2: float, *, experiments: int, looks: int, step: int, seed: int):
    """Fraction of experiments in which (sequential test, naive z-test) rejected at some
    look, and in which the confidence sequence missed the true difference at some look."""
    rnd = random.Random(seed).random
    seq_hits = naive_hits = cs_misses = 0
    for _ in range(experiments):
        s1 = s2 = n = 0
        prev_p: float | None = None
        prev_cs: tuple[float, float] | None = None
        naive = missed = False
        for _ in range(looks):
            s1 += sum(rnd() < p1 for _ in range(step))
            s2 += sum(rnd() < p2 for _ in range(step))
            n += step
            prev_p = sequential_p_value(s1, n, s2, n, previous=prev_p)
            prev_cs = confidence_sequence(s1, n, s2, n, previous=prev_cs)
            naive = naive or two_proportion_ztest(s1, n, s2, n)[1] < ALPHA
            missed = missed or not prev_cs[0] <= p2 - p1 <= prev_cs[1]
        seq_hits += prev_p < ALPHA
        naive_hits += naive
        cs_misses += missed
    return seq_hits / experiments, naive_hits / experiments, cs_misses / experiments


def test_aa_sequential_false_positive_rate_is_below_alpha_where_naive_peeking_is_not():
    seq, naive, cs_miss = _simulate(0.5, 0.5, experiments=2000, looks=20, step=50, seed=1)
    assert seq <= ALPHA
    assert cs_miss <= ALPHA
    assert naive > 2 * ALPHA  # peeking at a fixed-horizon test 20 times: ~25%
    assert 0.15 < naive < 0.35 and seq < 0.03  # measured: 0.2705 and 0.0115


def test_aa_low_base_rate_and_small_looks():
    seq, naive, _ = _simulate(0.1, 0.1, experiments=1000, looks=20, step=20, seed=2)
    assert seq <= ALPHA
    assert naive > ALPHA


def test_real_ten_point_difference_is_detected():
    seq, naive, cs_miss = _simulate(0.5, 0.6, experiments=500, looks=20, step=50, seed=3)
    assert seq >= 0.9
    assert cs_miss <= ALPHA


def test_aa_means_false_positive_rate():
    rng = random.Random(4)
    hits = 0
    experiments, looks, step = 500, 20, 25
    for _ in range(experiments):
        xs1: list[float] = []
        xs2: list[float] = []
        prev = None
        for _ in range(looks):
            xs1 += [rng.gauss(10.0, 3.0) for _ in range(step)]
            xs2 += [rng.gauss(10.0, 3.0) for _ in range(step)]
            m1, m2 = sum(xs1) / len(xs1), sum(xs2) / len(xs2)
            v1 = sum((x - m1) ** 2 for x in xs1) / (len(xs1) - 1)
            v2 = sum((x - m2) ** 2 for x in xs2) / (len(xs2) - 1)
            prev = sequential_p_value_means(m1, v1, len(xs1), m2, v2, len(xs2), previous=prev)
        hits += prev < ALPHA
    assert hits / experiments <= ALPHA


# ----------------------------------------------------------------- properties of one look


def test_p_value_is_one_at_no_difference_and_monotone_with_previous():
    assert sequential_p_value(50, 100, 50, 100) == 1.0
    first = sequential_p_value(100, 1000, 160, 1000)
    later = sequential_p_value(220, 2000, 230, 2000, previous=first)
    assert later == first < sequential_p_value(220, 2000, 230, 2000)


def test_p_value_and_confidence_sequence_agree():
    for s2 in range(380, 520, 7):
        p = sequential_p_value(400, 1000, s2, 1000)
        low, high = confidence_sequence(400, 1000, s2, 1000)
        assert (p < ALPHA) == (not low <= 0.0 <= high)


def test_confidence_sequence_is_wider_than_a_fixed_interval_and_narrows():
    small = confidence_sequence(50, 100, 55, 100)
    big = confidence_sequence(5000, 10000, 5500, 10000)
    assert big[1] - big[0] < small[1] - small[0]
    assert small[0] < 0.05 < small[1] and big[0] > 0
    # z ≈ 7: fixed 95% half-width is 1.96·se; the sequence's is ≈ 3.25·se at 10k per arm
    se = (0.25 / 10000 + 0.2475 / 10000) ** 0.5
    assert (big[1] - big[0]) / 2 / se == pytest.approx(3.25, abs=0.02)


def test_explicit_tau2_is_used():
    a = sequential_p_value(450, 1000, 520, 1000, tau2=0.01)
    b = sequential_p_value(450, 1000, 520, 1000, tau2=0.0001)
    assert a != b


def test_means_confidence_sequence_contains_the_estimate():
    low, high = confidence_sequence_means(1.0, 4.0, 200, 1.5, 4.0, 200)
    assert low < 0.5 < high


# ----------------------------------------------------------------- the count-based API at the edges


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), [(23, 450, 0, 50), (500, 500, 30, 30), (0, 500, 0, 30),
                                                    (270, 300, 30, 30), (2, 2970, 3, 30)])
def test_count_based_sequence_and_p_value_are_edge_safe(s1, n1, s2, n2):
    """The canary reads ``confidence_sequence`` and the reports ``sequential_p_value``: neither
    may collapse when an arm is at 0 % or 100 %. Each is at least as cautious as Fisher's
    exact test at this one look, and the sequence is never a point."""
    p = sequential_p_value(s1, n1, s2, n2)
    fisher = stats.fisher_exact([[s2, n2 - s2], [s1, n1 - s1]])[1]
    assert p >= fisher or p >= ALPHA
    low, high = confidence_sequence(s1, n1, s2, n2)
    assert high - low > 0.05
    # 30/30 vs 500/500: a candidate with only 30 outcomes is not shown non-inferior at a 2-point margin
    if (s1, n1, s2, n2) == (500, 500, 30, 30):
        assert low < -0.02


def test_means_api_is_edge_safe_like_mean_estimate():
    from proxy.reports import always_valid, mean_estimate, unit_sums

    xs = [float(i % 7) for i in range(40)]
    ys = [4.0] * 31  # a small arm whose values happen to be equal: Welch's variance ignores it
    m1, m2 = sum(xs) / 40, 4.0
    v1 = sum((x - m1) ** 2 for x in xs) / 39
    res = always_valid(mean_estimate(unit_sums(xs), unit_sums(ys)))
    assert res.variance > 1.2 * v1 / 40
    assert sequential_p_value_means(m1, v1, 40, m2, 0.0, 31) == pytest.approx(res.p_value, rel=1e-9)
    assert confidence_sequence_means(m1, v1, 40, m2, 0.0, 31) == pytest.approx((res.low, res.high), rel=1e-9)
