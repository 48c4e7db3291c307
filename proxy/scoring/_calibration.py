"""Judge calibration against human labels: agreement, Cohen's kappa, confusion, and trust.

Pure functions over label pairs, standard library only (the bootstrap uses
``random.Random(seed)``, so every interval is reproducible). Checked against statsmodels in
``tests/scoring/test_calibration.py``.

Conventions:

* a **pair** is ``(judge_label, human_label)``; the human label is the ground truth;
* ``labels`` is the scorer's configured label list (``JudgeScorer.labels``, e.g.
  ``["pass", "fail"]``) and fixes the order of every table; a label outside it is an error;
* confusion matrices are ``confusion[human][judge]`` — rows are the human label (truth),
  columns the judge label (prediction);
* ``positive`` is the label meaning "failure detected". Its default
  (:func:`default_positive`) is the first label that is not ``"pass"``, and it is only
  applied when the scorer has exactly two labels: with more, which labels are "failures" is
  not ours to guess, so pass ``positive`` explicitly to get a one-vs-rest reading;
* sensitivity = P(judge says positive | human says positive), specificity =
  P(judge says not positive | human says not positive).

Judge-corrected rates (:func:`rogan_gladen`, :func:`corrected_pass_rate`) rest on these
assumptions, and are wrong to the extent they fail:

1. human labels are the ground truth (human error is not modelled);
2. the judge's sensitivity and specificity measured on the human-labelled items are the same
   on the items being corrected — across variants, over time, and for whichever items were
   sent to humans (a judge that is worse on the candidate's outputs, or drifts, biases the
   corrected rate);
3. labels are binary: positive (failure) vs. everything else;
4. the sensitivity and specificity are treated as known; their own sampling error (small
   calibration sets) is not propagated into the corrected rate.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "Calibration",
    "TrustRule",
    "agreement",
    "calibrate",
    "cohens_kappa",
    "confusion_matrix",
    "corrected_pass_rate",
    "default_positive",
    "kappa_interval",
    "render_calibration",
    "rogan_gladen",
    "sensitivity_specificity",
]

Pair = tuple[str, str]  # (judge_label, human_label)


class TrustRule(Protocol):
    """What :func:`calibrate` needs from a scorer's ``trust_after`` (``config.TrustAfter``)."""

    @property
    def min_human_labels(self) -> int: ...

    @property
    def min_kappa(self) -> float: ...


# --------------------------------------------------------------------------- tables


def _check_labels(labels: Sequence[str]) -> list[str]:
    out = list(labels)
    if not out:
        raise ValueError("labels must not be empty")
    dupes = sorted({x for x in out if out.count(x) > 1})
    if dupes:
        raise ValueError(f"labels must be unique, repeated: {dupes}")
    return out


def _codes(pairs: Iterable[Pair], labels: Sequence[str]) -> tuple[int, list[int]]:
    """(k, one cell code ``human_index * k + judge_index`` per pair); unknown labels raise."""
    label_list = _check_labels(labels)
    index = {label: i for i, label in enumerate(label_list)}
    k = len(label_list)
    codes: list[int] = []
    bad_judge: set[str] = set()
    bad_human: set[str] = set()
    for judge, human in pairs:
        j = index.get(judge)
        h = index.get(human)
        if j is None:
            bad_judge.add(judge)
        if h is None:
            bad_human.add(human)
        if j is not None and h is not None:
            codes.append(h * k + j)
    if bad_judge or bad_human:
        parts = []
        if bad_judge:
            parts.append(f"judge gave {sorted(bad_judge, key=repr)}")
        if bad_human:
            parts.append(f"human gave {sorted(bad_human, key=repr)}")
        raise ValueError(f"labels not among the scorer's labels {label_list}: " + "; ".join(parts))
    return k, codes


def _kappa_from_cells(cells: Mapping[int, int], k: int, n: int) -> float | None:
    """Cohen's kappa from cell counts, in exact integer arithmetic up to the last division.

    κ = (p_o − p_e)/(1 − p_e) with p_o = Σ n_ii/n, p_e = Σ r_i c_i/n², i.e.
    κ = (n·Σ n_ii − Σ r_i c_i)/(n² − Σ r_i c_i). Undefined (None) when n = 0 or p_e = 1
    (every pair is the same label on both sides).
    """
    if n == 0:
        return None
    rows = [0] * k
    cols = [0] * k
    diag = 0
    for code, count in cells.items():
        h, j = divmod(code, k)
        rows[h] += count
        cols[j] += count
        if h == j:
            diag += count
    chance = sum(r * c for r, c in zip(rows, cols))
    denom = n * n - chance
    if denom == 0:
        return None
    return (n * diag - chance) / denom


def confusion_matrix(pairs: Iterable[Pair], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts ``confusion[human][judge]``: rows = human label (truth), columns = judge label,
    both in ``labels`` order, zeros included. A label outside ``labels`` raises ValueError
    naming it (and which side gave it)."""
    k, codes = _codes(pairs, labels)
    cells = Counter(codes)
    label_list = list(labels)
    return {
        human: {judge: cells.get(h * k + j, 0) for j, judge in enumerate(label_list)}
        for h, human in enumerate(label_list)
    }


def agreement(pairs: Iterable[Pair]) -> float:
    """Raw agreement: the share of pairs where the judge and the human gave the same label.

    Raises ValueError when there are no pairs (agreement is undefined)."""
    total = same = 0
    for judge, human in pairs:
        total += 1
        same += judge == human
    if total == 0:
        raise ValueError("agreement of no pairs is undefined")
    return same / total


def cohens_kappa(pairs: Iterable[Pair], labels: Sequence[str]) -> float | None:
    """Cohen's kappa (unweighted) between judge and human labels.

    Cohen (1960), Educ. Psychol. Meas. 20:37. Equals statsmodels
    ``inter_rater.cohens_kappa(table)`` on the confusion matrix. None when undefined: no
    pairs, or chance agreement p_e = 1 (judge and humans only ever used one and the same
    label — statsmodels gives NaN there).
    """
    k, codes = _codes(pairs, labels)
    return _kappa_from_cells(Counter(codes), k, len(codes))


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (Hyndman & Fan type 7, numpy's default)."""
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def kappa_interval(
    pairs: Iterable[Pair],
    labels: Sequence[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval for Cohen's kappa (Efron & Tibshirani 1993, §13.3).

    Resamples the pairs with replacement ``n_boot`` times (``random.Random(seed)``, so the
    same inputs and seed give the same interval), computes kappa on each resample, and takes
    the (1 − level)/2 and (1 + level)/2 quantiles (linear interpolation, as numpy's default).
    Resamples where kappa is undefined (every resampled pair the same label on both sides)
    are skipped, which can only happen when agreement is high; the interval is then
    conditional on kappa being defined. None when there are no pairs or fewer than half of
    the resamples have a defined kappa. A resample is undefined only if all its pairs fall
    in one diagonal cell (probability Σ_k (n_kk/n)^n, at most ½ once the point kappa is
    defined), so in practice None means no pairs, an undefined kappa, or a mere two pairs.
    """
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    k, codes = _codes(pairs, labels)
    n = len(codes)
    if n == 0:
        return None
    rng = random.Random(seed)
    values: list[float] = []
    for _ in range(n_boot):
        kappa = _kappa_from_cells(Counter(rng.choices(codes, k=n)), k, n)
        if kappa is not None:
            values.append(kappa)
    if len(values) < max(2, (n_boot + 1) // 2):
        return None
    values.sort()
    tail = (1.0 - level) / 2.0
    return (_quantile(values, tail), _quantile(values, 1.0 - tail))


# --------------------------------------------------------------------------- binary view


def default_positive(labels: Sequence[str]) -> str | None:
    """The label meaning "failure detected" when none is configured: the first label that is
    not ``"pass"`` — but only for a binary scorer (exactly two labels); otherwise None."""
    label_list = list(labels)
    if len(label_list) != 2:
        return None
    return next((x for x in label_list if x != "pass"), None)


def sensitivity_specificity(
    pairs: Iterable[Pair], positive: str
) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) of the judge for ``positive``, the human label as truth.

    Sensitivity = #(judge = positive, human = positive) / #(human = positive);
    specificity = #(judge ≠ positive, human ≠ positive) / #(human ≠ positive). With more than
    two labels every label other than ``positive`` counts as negative (one-vs-rest). Each is
    None when its denominator is 0 (no human-positive, or no human-negative items).
    """
    tp = pos = tn = neg = 0
    for judge, human in pairs:
        if human == positive:
            pos += 1
            tp += judge == positive
        else:
            neg += 1
            tn += judge != positive
    return (tp / pos if pos else None, tn / neg if neg else None)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def rogan_gladen(observed_rate: float, sensitivity: float, specificity: float) -> float | None:
    """True prevalence of the positive label (failure) from the judge's observed rate.

    Rogan & Gladen (1978), Am. J. Epidemiol. 107:71:
    π̂ = (p_obs + spec − 1)/(sens + spec − 1), clipped to [0, 1], where ``observed_rate`` is
    the share of items the **judge** labelled positive (failure), and sens/spec are the
    judge's, measured against human labels (:func:`sensitivity_specificity`). None when
    sens + spec ≤ 1 (the judge is no better than chance, so its labels carry no information
    about prevalence). Assumptions: see the module docstring (human labels are truth; judge
    error rates are the same on these items as on the calibration items, across variants
    and over time; binary labels; sens/spec treated as known).
    """
    _check_rate("observed_rate", observed_rate)
    _check_rate("sensitivity", sensitivity)
    _check_rate("specificity", specificity)
    youden = sensitivity + specificity - 1.0
    if youden <= 0.0:
        return None
    estimate = (observed_rate + specificity - 1.0) / youden
    return min(max(estimate, 0.0), 1.0)


def corrected_pass_rate(
    observed_pass_rate: float, sensitivity: float, specificity: float
) -> float | None:
    """True pass rate (1 − true failure prevalence) from the judge's observed pass rate.

    ``observed_pass_rate`` is the share of items the judge labelled **not** positive (for
    ``["pass", "fail"]``: labelled "pass"); ``sensitivity``/``specificity`` are for detecting
    the positive (failure) label, as from :func:`sensitivity_specificity`. Equals
    ``1 − rogan_gladen(1 − observed_pass_rate, sensitivity, specificity)``; computed as
    Rogan–Gladen with the roles swapped (specificity is the sensitivity for "pass"), which
    avoids two subtractions. Clipped to [0, 1]; None when sens + spec ≤ 1.
    """
    return rogan_gladen(observed_pass_rate, specificity, sensitivity)


# --------------------------------------------------------------------------- trust


def _fmt_vs(value: float, threshold: float) -> str:
    """``value`` to 2 decimals, or more if 2 would hide which side of ``threshold`` it is."""
    for digits in range(2, 10):
        text = f"{value:.{digits}f}"
        if (float(text) >= threshold) == (value >= threshold):
            return text
    return repr(value)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """One judge scorer's calibration against human labels, and whether it is trusted.

    ``agreement`` and ``kappa`` are None with no labels; ``kappa`` (and its bootstrap
    interval ``kappa_low``/``kappa_high``) also None when undefined. ``confusion`` is
    ``[human][judge]``. ``sensitivity``/``specificity`` are for ``positive`` (None when no
    positive label applies or a class has no human labels). ``reason`` says why it is, or is
    not, trusted.
    """

    scorer: str
    n_labels: int
    agreement: float | None
    kappa: float | None
    kappa_low: float | None
    kappa_high: float | None
    confusion: dict[str, dict[str, int]]
    sensitivity: float | None
    specificity: float | None
    positive: str | None
    trusted: bool
    reason: str
    labels: tuple[str, ...] = ()
    min_human_labels: int = 50
    min_kappa: float = 0.6
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (fresh containers; the tuple of labels as a list)."""
        out = dataclasses.asdict(self)
        out["labels"] = list(self.labels)
        return out


def calibrate(
    scorer_name: str,
    pairs: Iterable[Pair],
    labels: Sequence[str],
    trust_after: TrustRule,
    *,
    positive: str | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Calibration:
    """Calibrate one judge scorer on its human-labelled items.

    Trusted when ``n_labels >= trust_after.min_human_labels`` AND kappa is defined AND the
    kappa **point estimate** ``>= trust_after.min_kappa`` (the bootstrap interval is reported
    but does not gate trust). ``positive`` defaults to :func:`default_positive` (binary
    scorers only); an explicit ``positive`` must be one of ``labels``.
    """
    label_list = _check_labels(labels)
    pair_list = list(pairs)
    if positive is None:
        positive = default_positive(label_list)
    elif positive not in label_list:
        raise ValueError(f"positive label {positive!r} is not among the labels {label_list}")
    confusion = confusion_matrix(pair_list, label_list)  # validates every label
    n = len(pair_list)
    kappa = cohens_kappa(pair_list, label_list)
    interval = (
        kappa_interval(pair_list, label_list, n_boot=n_boot, seed=seed, level=level)
        if kappa is not None
        else None
    )
    sens, spec = (
        sensitivity_specificity(pair_list, positive) if positive is not None else (None, None)
    )
    min_n = trust_after.min_human_labels
    min_kappa = trust_after.min_kappa

    trusted = False
    if n < min_n:
        reason = f"needs {min_n} human labels, has {n}"
    elif kappa is None:
        if n == 0:
            reason = "kappa undefined: no human labels"
        else:
            only = pair_list[0][1]
            reason = f"kappa undefined: judge and humans labelled all {n} items {only!r}"
    elif kappa < min_kappa:
        reason = f"kappa {_fmt_vs(kappa, min_kappa)} < {min_kappa:g}"
    else:
        trusted = True
        shown = (
            f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval is not None else "(no interval)"
        )
        reason = f"trusted: kappa {_fmt_vs(kappa, min_kappa)} {shown} on {n} labels"

    return Calibration(
        scorer=scorer_name,
        n_labels=n,
        agreement=agreement(pair_list) if n else None,
        kappa=kappa,
        kappa_low=interval[0] if interval is not None else None,
        kappa_high=interval[1] if interval is not None else None,
        confusion=confusion,
        sensitivity=sens,
        specificity=spec,
        positive=positive,
        trusted=trusted,
        reason=reason,
        labels=tuple(label_list),
        min_human_labels=min_n,
        min_kappa=min_kappa,
        level=level,
    )


# --------------------------------------------------------------------------- text


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_calibration(cal: Calibration) -> str:
    """A short terminal block: agreement, kappa with its interval, the confusion matrix
    (rows = human, columns = judge), sensitivity/specificity, and the trust line."""
    labels = list(cal.labels) or list(cal.confusion)
    out = [f"judge {cal.scorer}: {cal.n_labels} human labels"]
    if cal.kappa_low is not None and cal.kappa_high is not None:
        interval = f" [{cal.kappa_low:.2f}, {cal.kappa_high:.2f}] ({cal.level:.0%} bootstrap)"
    else:
        interval = ""
    out.append(f"  agreement {_f(cal.agreement)}   kappa {_f(cal.kappa)}{interval}")
    if labels and cal.n_labels:
        head = "human \\ judge"
        width = max(
            [len(x) for x in labels]
            + [len(str(c)) for row in cal.confusion.values() for c in row.values()]
        )
        first = max(len(head), *(len(x) for x in labels))
        out.append("  " + head.ljust(first) + "".join("  " + x.rjust(width) for x in labels))
        for human in labels:
            row = cal.confusion.get(human, {})
            cells = "".join("  " + str(row.get(judge, 0)).rjust(width) for judge in labels)
            out.append("  " + human.ljust(first) + cells)
    if cal.positive is not None:
        out.append(
            f"  sensitivity {_f(cal.sensitivity)}   specificity {_f(cal.specificity)}"
            f"   (positive = {cal.positive!r})"
        )
    out.append(f"  {cal.reason}" if cal.trusted else f"  NOT TRUSTED: {cal.reason}")
    return "\n".join(out) + "\n"
