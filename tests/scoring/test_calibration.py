"""Judge calibration: kappa equals statsmodels to 1e-9; intervals, sens/spec, Rogan–Gladen,
and the trust rule behave as documented in ``proxy.scoring._calibration``."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("numpy")
pytest.importorskip("statsmodels")

import numpy as np  # noqa: E402
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa  # noqa: E402

from proxy.config import TrustAfter  # noqa: E402
from proxy.scoring._calibration import (  # noqa: E402
    Calibration,
    agreement,
    calibrate,
    cohens_kappa,
    confusion_matrix,
    corrected_pass_rate,
    default_positive,
    kappa_interval,
    render_calibration,
    rogan_gladen,
    sensitivity_specificity,
)

TOL = dict(rel=1e-9, abs=1e-12)
PF = ["pass", "fail"]


def pairs_from_table(table: list[list[int]], labels: list[str]) -> list[tuple[str, str]]:
    """Expand a contingency table ``table[human][judge]`` into (judge, human) pairs."""
    out: list[tuple[str, str]] = []
    for h, human in enumerate(labels):
        for j, judge in enumerate(labels):
            out += [(judge, human)] * table[h][j]
    return out


def as_table(confusion: dict[str, dict[str, int]], labels: list[str]) -> list[list[int]]:
    return [[confusion[h][j] for j in labels] for h in labels]


# --------------------------------------------------------------------------- kappa vs statsmodels

THREE = ["pass", "minor", "major"]
FIXTURES = {
    "binary": (PF, [[40, 9], [6, 45]]),
    "three labels": (THREE, [[30, 4, 1], [5, 20, 3], [2, 6, 29]]),
    "perfect agreement": (PF, [[37, 0], [0, 13]]),
    "perfect agreement, three labels": (THREE, [[5, 0, 0], [0, 7, 0], [0, 0, 11]]),
    "chance level": (PF, [[12, 18], [28, 42]]),  # rows ∝ columns: p_o == p_e
    "skewed": (PF, [[90, 5], [3, 2]]),
    "worse than chance": (PF, [[3, 20], [25, 2]]),
    "complete disagreement": (PF, [[0, 10], [10, 0]]),
    "four labels, uneven": (
        ["a", "b", "c", "d"],
        [[17, 2, 0, 1], [3, 1, 4, 0], [0, 5, 44, 2], [1, 0, 3, 9]],
    ),
}


@pytest.mark.parametrize("name", list(FIXTURES))
def test_kappa_equals_statsmodels(name: str) -> None:
    labels, table = FIXTURES[name]
    pairs = pairs_from_table(table, labels)
    ours = cohens_kappa(pairs, labels)
    ref = sm_cohens_kappa(np.array(table, dtype=float), return_results=False)
    assert ours is not None
    assert ours == pytest.approx(float(ref), **TOL)
    # The table we build is the one statsmodels was given (rows human, cols judge), and
    # kappa is symmetric, so the transposed table gives the same value.
    assert as_table(confusion_matrix(pairs, labels), labels) == table
    ref_t = sm_cohens_kappa(np.array(table, dtype=float).T, return_results=False)
    assert ours == pytest.approx(float(ref_t), **TOL)


def test_kappa_known_values() -> None:
    assert cohens_kappa(pairs_from_table(FIXTURES["perfect agreement"][1], PF), PF) == 1.0
    assert cohens_kappa(pairs_from_table(FIXTURES["chance level"][1], PF), PF) == pytest.approx(
        0.0, abs=1e-15
    )
    assert cohens_kappa(pairs_from_table(FIXTURES["complete disagreement"][1], PF), PF) == -1.0
    # Hand-computed: p_o = 85/100, p_e = (.49·.46 + .51·.54) = .5008 -> κ = .3492/.4992.
    kappa = cohens_kappa(pairs_from_table(FIXTURES["binary"][1], PF), PF)
    assert kappa == pytest.approx((0.85 - 0.5008) / (1 - 0.5008), **TOL)


def test_kappa_is_undefined_when_chance_agreement_is_one() -> None:
    assert cohens_kappa([], PF) is None
    assert cohens_kappa([("pass", "pass")] * 30, PF) is None
    assert cohens_kappa([("minor", "minor")] * 3, THREE) is None
    # statsmodels gives NaN here; we give None.
    with np.errstate(invalid="ignore", divide="ignore"):
        undefined = sm_cohens_kappa(np.array([[30.0, 0.0], [0.0, 0.0]]), return_results=False)
    assert math.isnan(undefined)
    # One disagreement makes it defined again (p_e < 1).
    assert cohens_kappa([("pass", "pass")] * 30 + [("fail", "pass")], PF) is not None


# --------------------------------------------------------------------------- agreement, confusion


def test_agreement_and_confusion_hand_checked() -> None:
    pairs = [
        ("pass", "pass"),
        ("pass", "pass"),
        ("fail", "pass"),  # judge says fail, human says pass
        ("fail", "fail"),
        ("pass", "fail"),  # judge missed a failure
        ("pass", "fail"),
        ("fail", "fail"),
    ]
    assert agreement(pairs) == pytest.approx(4 / 7, **TOL)
    assert confusion_matrix(pairs, PF) == {
        "pass": {"pass": 2, "fail": 1},
        "fail": {"pass": 2, "fail": 2},
    }
    assert list(confusion_matrix(pairs, ["fail", "pass"])) == ["fail", "pass"]  # labels' order
    three = [("minor", "pass"), ("major", "major"), ("pass", "pass")]
    assert confusion_matrix(three, THREE) == {
        "pass": {"pass": 1, "minor": 1, "major": 0},
        "minor": {"pass": 0, "minor": 0, "major": 0},
        "major": {"pass": 0, "minor": 0, "major": 1},
    }
    assert agreement(three) == pytest.approx(2 / 3, **TOL)
    with pytest.raises(ValueError, match="no pairs"):
        agreement([])


def test_unknown_labels_raise_a_clear_error() -> None:
    pairs = [("pass", "pass"), ("maybe", "fail"), ("fail", "Pass")]
    with pytest.raises(ValueError) as exc:
        confusion_matrix(pairs, PF)
    msg = str(exc.value)
    assert "'maybe'" in msg and "judge" in msg
    assert "'Pass'" in msg and "human" in msg
    for fn in (cohens_kappa, kappa_interval):
        with pytest.raises(ValueError, match="maybe"):
            fn(pairs, PF)
    with pytest.raises(ValueError, match="maybe"):
        calibrate("j", pairs, PF, TrustAfter())
    with pytest.raises(ValueError, match="unique"):
        confusion_matrix([], ["pass", "pass"])
    with pytest.raises(ValueError, match="positive"):
        calibrate("j", [], PF, TrustAfter(), positive="bad")


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_estimate_and_is_reproducible() -> None:
    labels, table = FIXTURES["binary"]
    pairs = pairs_from_table(table, labels)
    kappa = cohens_kappa(pairs, labels)
    assert kappa is not None
    lo, hi = kappa_interval(pairs, labels, n_boot=1000, seed=7)  # type: ignore[misc]
    assert lo < kappa < hi
    assert -1.0 <= lo and hi <= 1.0
    assert kappa_interval(pairs, labels, n_boot=1000, seed=7) == (lo, hi)
    assert kappa_interval(pairs, labels, n_boot=1000, seed=8) != (lo, hi)
    narrower = kappa_interval(pairs, labels, n_boot=1000, seed=7, level=0.5)
    assert narrower is not None and lo < narrower[0] < narrower[1] < hi


def test_bootstrap_interval_narrows_with_more_data() -> None:
    labels, table = FIXTURES["three labels"]
    small = pairs_from_table(table, labels)
    big = pairs_from_table([[10 * c for c in row] for row in table], labels)
    s_lo, s_hi = kappa_interval(small, labels, n_boot=500, seed=1)  # type: ignore[misc]
    b_lo, b_hi = kappa_interval(big, labels, n_boot=500, seed=1)  # type: ignore[misc]
    assert (b_hi - b_lo) < 0.5 * (s_hi - s_lo)  # ~1/sqrt(10) in theory


def test_bootstrap_width_matches_asymptotic_standard_error() -> None:
    # Independent check of the bootstrap's scale: the 95% width should be close to
    # 2·1.96·(asymptotic SE of kappa), statsmodels' std_kappa (Fleiss, Cohen & Everitt 1969).
    labels, table = FIXTURES["four labels, uneven"]
    table = [[3 * c for c in row] for row in table]
    pairs = pairs_from_table(table, labels)
    lo, hi = kappa_interval(pairs, labels, n_boot=1500, seed=3)  # type: ignore[misc]
    res = sm_cohens_kappa(np.array(table, dtype=float))
    expected = 2 * 1.959964 * res["std_kappa"]
    assert (hi - lo) == pytest.approx(expected, rel=0.15)


def test_bootstrap_interval_undefined_cases() -> None:
    assert kappa_interval([], PF) is None
    assert kappa_interval([("pass", "pass")] * 20, PF, n_boot=50) is None
    # One "fail" in 200 pairs, all agreeing: ~37% of resamples miss it and are all-"pass"
    # (kappa undefined); they are skipped, not counted as 0, so every kept kappa is 1.
    rare = [("pass", "pass")] * 199 + [("fail", "fail")]
    assert kappa_interval(rare, PF, n_boot=200) == (1.0, 1.0)
    with pytest.raises(ValueError, match="n_boot"):
        kappa_interval([("pass", "pass")], PF, n_boot=1)
    with pytest.raises(ValueError, match="level"):
        kappa_interval([("pass", "pass")], PF, level=1.0)


# --------------------------------------------------------------------------- sens / spec


def test_sensitivity_specificity_hand_checked() -> None:
    # human fail: 10, judge caught 8; human pass: 30, judge passed 27.
    pairs = (
        [("fail", "fail")] * 8
        + [("pass", "fail")] * 2
        + [("pass", "pass")] * 27
        + [("fail", "pass")] * 3
    )
    sens, spec = sensitivity_specificity(pairs, "fail")
    assert sens == pytest.approx(0.8, **TOL)
    assert spec == pytest.approx(0.9, **TOL)
    # One-vs-rest with three labels: "major" positive, "minor" and "pass" negative.
    three = [("major", "major"), ("minor", "major"), ("minor", "minor"), ("major", "pass")]
    assert sensitivity_specificity(three, "major") == (0.5, 0.5)
    assert sensitivity_specificity([("pass", "pass")], "fail") == (None, 1.0)
    assert sensitivity_specificity([("pass", "fail")], "fail") == (0.0, None)
    assert sensitivity_specificity([], "fail") == (None, None)


def test_default_positive() -> None:
    assert default_positive(["pass", "fail"]) == "fail"
    assert default_positive(["bad", "pass"]) == "bad"
    assert default_positive(["good", "bad"]) == "good"  # first label that is not "pass"
    assert default_positive(THREE) is None  # not binary: not guessed
    assert default_positive(["pass"]) is None


# --------------------------------------------------------------------------- Rogan–Gladen


def test_rogan_gladen_exact_and_clipped() -> None:
    sens, spec, true = 0.8, 0.9, 0.1
    expected_observed = sens * true + (1 - spec) * (1 - true)  # 0.17
    assert rogan_gladen(expected_observed, sens, spec) == pytest.approx(true, **TOL)
    assert corrected_pass_rate(1 - expected_observed, sens, spec) == pytest.approx(1 - true, **TOL)
    # An observed rate below the false-positive rate clips to 0, above sens to 1.
    assert rogan_gladen(0.05, sens, spec) == 0.0
    assert rogan_gladen(0.95, sens, spec) == 1.0
    assert corrected_pass_rate(0.95, sens, spec) == 1.0
    assert corrected_pass_rate(0.05, sens, spec) == 0.0
    # Chance-level or worse judges carry no information.
    assert rogan_gladen(0.3, 0.5, 0.5) is None
    assert rogan_gladen(0.3, 0.4, 0.3) is None
    assert corrected_pass_rate(0.7, 0.5, 0.5) is None
    # A perfect judge: nothing to correct.
    assert rogan_gladen(0.37, 1.0, 1.0) == pytest.approx(0.37, **TOL)
    with pytest.raises(ValueError, match="observed_rate"):
        rogan_gladen(1.2, 0.9, 0.9)
    with pytest.raises(ValueError, match="sensitivity"):
        rogan_gladen(0.2, -0.1, 0.9)


@pytest.mark.parametrize("p_obs", [0.0, 0.13, 0.5, 0.71, 1.0])
def test_corrected_pass_rate_is_one_minus_corrected_failure_rate(p_obs: float) -> None:
    for sens, spec in [(0.8, 0.9), (0.95, 0.6), (0.7, 0.7)]:
        fail = rogan_gladen(1 - p_obs, sens, spec)
        assert fail is not None
        assert corrected_pass_rate(p_obs, sens, spec) == pytest.approx(1 - fail, abs=1e-12)


def test_rogan_gladen_recovers_true_prevalence_from_simulated_judge() -> None:
    rng = np.random.default_rng(20240601)
    sens_true, spec_true, prevalence = 0.8, 0.9, 0.1

    def judge(truth_fail: np.ndarray) -> np.ndarray:
        u = rng.random(truth_fail.size)
        return np.where(truth_fail, u < sens_true, u >= spec_true)  # True = judge says fail

    # Calibration set: human-labelled items, judge errors measured against them.
    n_cal = 4000
    cal_truth = rng.random(n_cal) < 0.3
    cal_judge = judge(cal_truth)
    label = np.where
    pairs = list(
        zip(label(cal_judge, "fail", "pass").tolist(), label(cal_truth, "fail", "pass").tolist())
    )
    sens, spec = sensitivity_specificity(pairs, "fail")
    assert sens is not None and spec is not None

    # Production items: only the judge's labels are seen.
    n = 40_000
    truth = rng.random(n) < prevalence
    observed = float(judge(truth).mean())
    assert abs(observed - prevalence) > 0.05  # the uncorrected rate is badly off

    estimate = rogan_gladen(observed, sens, spec)
    assert estimate is not None
    # Delta-method SE, including the calibration set's uncertainty in sens/spec.
    youden = sens + spec - 1
    n_pos, n_neg = int(cal_truth.sum()), int((~cal_truth).sum())
    var = (
        observed * (1 - observed) / n
        + estimate**2 * sens * (1 - sens) / n_pos
        + (1 - estimate) ** 2 * spec * (1 - spec) / n_neg
    ) / youden**2
    assert abs(estimate - prevalence) < 3 * math.sqrt(var)
    pass_rate = corrected_pass_rate(1 - observed, sens, spec)
    assert pass_rate == pytest.approx(1 - estimate, abs=1e-12)


# --------------------------------------------------------------------------- trust


def agreeing(n: int) -> list[tuple[str, str]]:
    """n labels, 90% agreement, balanced classes: kappa ≈ 0.8."""
    base = [("pass", "pass")] * 9 + [("fail", "fail")] * 9 + [("fail", "pass"), ("pass", "fail")]
    return (base * (n // len(base) + 1))[:n]


def test_trust_flips_once_enough_labels() -> None:
    rule = TrustAfter()  # 50 labels, kappa 0.6
    assert (rule.min_human_labels, rule.min_kappa) == (50, 0.6)
    pairs = agreeing(50)
    before = calibrate("judge_a", pairs[:49], PF, rule)
    after = calibrate("judge_a", pairs, PF, rule)
    assert before.kappa is not None and before.kappa >= 0.6  # kappa alone would pass
    assert not before.trusted
    assert before.reason == "needs 50 human labels, has 49"
    assert after.trusted
    assert after.n_labels == 50
    assert after.kappa is not None and after.kappa_low is not None and after.kappa_high is not None
    assert after.kappa_low <= after.kappa <= after.kappa_high
    assert after.reason == (
        f"trusted: kappa {after.kappa:.2f} [{after.kappa_low:.2f}, {after.kappa_high:.2f}]"
        " on 50 labels"
    )


def test_stays_untrusted_with_low_kappa() -> None:
    # 200 labels, 70% agreement, balanced: kappa = 0.4.
    pairs = pairs_from_table([[70, 30], [30, 70]], PF)
    cal = calibrate("judge_b", pairs, PF, TrustAfter(), n_boot=200)
    assert cal.kappa == pytest.approx(0.4, **TOL)
    assert not cal.trusted
    assert cal.reason == "kappa 0.40 < 0.6"
    # The trust rule uses the configured thresholds.
    assert calibrate("judge_b", pairs, PF, TrustAfter(min_kappa=0.35), n_boot=50).trusted
    assert not calibrate("judge_b", pairs, PF, TrustAfter(min_human_labels=201), n_boot=50).trusted


def test_reason_shows_enough_digits_near_the_threshold() -> None:
    # kappa just below 0.6 must not print as "0.60 < 0.6".
    pairs = pairs_from_table([[80, 20], [20, 80]], PF)  # kappa = 0.6 exactly
    assert calibrate("j", pairs, PF, TrustAfter(), n_boot=50).trusted
    pairs = pairs_from_table([[799, 201], [200, 800]], PF)  # kappa = 0.599
    cal = calibrate("j", pairs, PF, TrustAfter(), n_boot=50)
    assert cal.kappa == pytest.approx(0.599, **TOL)
    assert not cal.trusted
    assert cal.reason == "kappa 0.599 < 0.6"


def test_untrusted_when_kappa_undefined_or_no_labels() -> None:
    cal = calibrate("j", [("pass", "pass")] * 60, PF, TrustAfter())
    assert cal.agreement == 1.0 and cal.kappa is None and not cal.trusted
    assert "undefined" in cal.reason and "'pass'" in cal.reason
    empty = calibrate("j", [], PF, TrustAfter(min_human_labels=0))
    assert empty.agreement is None and empty.kappa is None and not empty.trusted
    assert empty.reason == "kappa undefined: no human labels"
    assert calibrate("j", [], PF, TrustAfter()).reason == "needs 50 human labels, has 0"


def test_calibration_fields_dict_and_render() -> None:
    pairs = pairs_from_table([[40, 9], [6, 45]], PF)
    cal = calibrate("helpfulness", pairs, PF, TrustAfter(), seed=3, n_boot=500)
    assert isinstance(cal, Calibration)
    assert cal == calibrate("helpfulness", pairs, PF, TrustAfter(), seed=3, n_boot=500)
    assert cal.positive == "fail"
    assert cal.sensitivity == pytest.approx(45 / 51, **TOL)
    assert cal.specificity == pytest.approx(40 / 49, **TOL)
    assert cal.agreement == pytest.approx(0.85, **TOL)
    assert cal.confusion == {"pass": {"pass": 40, "fail": 9}, "fail": {"pass": 6, "fail": 45}}
    with pytest.raises(AttributeError):
        cal.trusted = False  # type: ignore[misc]

    d = cal.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["scorer"] == "helpfulness" and d["labels"] == PF and d["trusted"] is True
    assert d["confusion"]["fail"]["pass"] == 6
    d["confusion"]["fail"]["pass"] = 99
    assert cal.confusion["fail"]["pass"] == 6  # a copy

    text = render_calibration(cal)
    lines = text.splitlines()
    assert lines[0] == "judge helpfulness: 100 human labels"
    assert "agreement 0.85" in text and f"kappa {cal.kappa:.2f} [" in text
    assert "95% bootstrap" in text
    header = next(line for line in lines if "human \\ judge" in line)
    assert header.split()[-2:] == ["pass", "fail"]
    assert any(line.split() == ["pass", "40", "9"] for line in lines)
    assert any(line.split() == ["fail", "6", "45"] for line in lines)
    assert "sensitivity 0.88" in text and "specificity 0.82" in text
    assert lines[-1].strip() == cal.reason


def test_three_label_calibration_and_explicit_positive() -> None:
    labels, table = FIXTURES["three labels"]
    pairs = pairs_from_table(table, labels)
    cal = calibrate("severity", pairs, labels, TrustAfter(min_human_labels=100), n_boot=200)
    assert cal.positive is None and cal.sensitivity is None and cal.specificity is None
    assert cal.kappa == pytest.approx(
        float(sm_cohens_kappa(np.array(table, dtype=float), return_results=False)), **TOL
    )
    text = render_calibration(cal)
    assert "sensitivity" not in text
    assert any(line.split() == ["minor", "5", "20", "3"] for line in text.splitlines())
    rule = TrustAfter(min_human_labels=200)
    explicit = calibrate("severity", pairs, labels, rule, positive="major", n_boot=200)
    assert explicit.positive == "major"
    assert (explicit.sensitivity, explicit.specificity) == sensitivity_specificity(pairs, "major")
    assert render_calibration(explicit).splitlines()[-1].startswith("  NOT TRUSTED: needs 200")
