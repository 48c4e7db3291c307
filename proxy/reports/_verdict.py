"""The verdict for one comparison (candidate vs control on one metric), with the numbers.

Labels: ``better``, ``worse``, ``no difference detected (powered)``,
``inconclusive — need ~N more outcomes per arm``.

Decision rule (in this order):

1. Either arm has fewer than ``min_n`` outcomes (default 30) → inconclusive, never a
   verdict; N = max(needed_n, min_n) − the smaller arm.
2. The **always-valid sequential p-value** (mSPRT, ``_sequential``) is below α →
   ``better`` or ``worse`` by the sign of candidate − control and the metric's goal. The
   sequential test, not the fixed-horizon z/Welch p-value, decides, because reports are
   looked at repeatedly (DESIGN.md); the fixed p-value and interval are reported alongside.
3. Otherwise, when the smaller arm has reached ``needed_n`` → ``no difference detected
   (powered)``: **"powered" is the power-calculation definition** — the sample was large
   enough for the test we actually run to detect a difference of ``mde`` with probability
   ``power`` (80%). We did not choose the "confidence sequence inside ±MDE" definition
   because it has no sample size one can announce in advance (it depends on the observed
   difference, and never triggers when the true difference is near the MDE).
4. Otherwise → inconclusive, N = needed_n − the smaller arm.

``needed_n`` (per arm), for proportions at the control's rate p₁ and p₂ = p₁ ± mde (the
direction of the goal; the other one if that leaves [0, 1]), u = p₁(1−p₁) + p₂(1−p₂):

* fixed-horizon (``sequential=False``), the textbook normal-approximation formula
  (e.g. Chow, Shao & Wang, *Sample Size Calculations in Clinical Research*, §4.2, unpooled):
  n = ⌈(z_{1−α/2} + z_{power})² · u / mde²⌉ — 9,804 per arm at p₁ = 0.5, mde = 0.02;
* sequential (``sequential=True``, the default, used by ``verdict``): the same normal
  power equation with z_{1−α/2} replaced by the mSPRT boundary b(r(n)) at that n:
  the smallest n with mde / sqrt(u/n) ≥ b(τ²·n/u) + z_{power}. This is the honest
  requirement for the test that decides (≈2.2× the fixed n at the defaults: 21,996 per arm
  at p₁ = 0.5, mde = 0.02; 740 vs 385 for mde = 0.1); it ignores the extra chances to
  reject at earlier looks, so it is slightly conservative.

For float metrics u = 2·s₁² (the control's sample variance, equal variances assumed) and
``mde`` is in the metric's units (no default).

When the control arm has fewer than ``min_n`` outcomes its rate is too noisy to plan with;
we then use the rate within its 95% Wilson interval closest to 0.5 (the largest variance,
so the conservative N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ._sequential import DEFAULT_TUNE_N, msprt, optimal_mixing_ratio, sequential_boundary
from ._sequential import _proportion_parts  # noqa: PLC2701 (same package)
from ._stats import (
    newcombe_diff_interval,
    normal_quantile,
    two_proportion_ztest,
    welch_interval,
    welch_ttest,
    wilson_interval,
)

__all__ = [
    "DEFAULT_MDE",
    "DEFAULT_MIN_N",
    "Goal",
    "Verdict",
    "sample_size_per_arm",
    "sample_size_per_arm_means",
    "verdict",
    "verdict_means",
]

Goal = Literal["maximize", "minimize"]
Code = Literal["better", "worse", "no_difference", "inconclusive"]

DEFAULT_MIN_N = 30
DEFAULT_MDE = 0.02
NO_DIFFERENCE_LABEL = "no difference detected (powered)"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verdict with the numbers behind it. ``diff`` and both intervals are candidate −
    control; ``interval`` is the fixed-horizon one (Newcombe / Welch) matching ``p_value``
    (z-test / Welch); ``confidence_sequence`` and ``sequential_p`` are always-valid and are
    what decided. ``needed_n`` is per arm; ``more_needed`` = needed − the smaller arm when
    inconclusive, else 0."""

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


# --------------------------------------------------------------------------- sample size


def _needed_n(unit: float, mde: float, alpha: float, power: float, sequential: bool,
              tau2: float | None, tune_n: float) -> int:
    if mde <= 0:
        raise ValueError("mde must be positive")
    if not 0.0 < power < 1.0 or not 0.0 < alpha < 1.0:
        raise ValueError("alpha and power must be in (0, 1)")
    if unit <= 0:
        return 1
    z_power = normal_quantile(power)
    fixed = math.ceil((normal_quantile(1.0 - alpha / 2.0) + z_power) ** 2 * unit / mde**2)
    if not sequential:
        return max(fixed, 1)
    r_star = optimal_mixing_ratio(alpha)

    def ok(n: int) -> bool:
        ratio = tau2 * n / unit if tau2 is not None else r_star * n / tune_n
        return mde * math.sqrt(n / unit) >= sequential_boundary(ratio, alpha) + z_power

    lo, hi = max(fixed, 1), max(fixed, 1)  # the boundary is ≥ z_{1−α/2}: fixed n is a floor
    while not ok(hi):
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest n with ok(n) (monotone near the crossing)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _alternative(p1: float, mde: float, goal: Goal) -> float:
    p2 = p1 + mde if goal == "maximize" else p1 - mde
    if not 0.0 <= p2 <= 1.0:
        p2 = p1 - mde if goal == "maximize" else p1 + mde
    return min(max(p2, 0.0), 1.0)


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
    """Outcomes per arm for ``power`` to detect an absolute change ``mde`` from the control
    rate ``p_control`` at two-sided ``alpha`` (formulas in the module docstring)."""
    if not 0.0 <= p_control <= 1.0:
        raise ValueError("p_control must be in [0, 1]")
    p2 = _alternative(p_control, mde, goal)
    unit = p_control * (1 - p_control) + p2 * (1 - p2)
    return _needed_n(unit, mde, alpha, power, sequential, tau2, tune_n)


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
    """Observations per arm to detect a mean difference ``mde`` (metric units), equal
    variances ``var_control`` assumed."""
    return _needed_n(2.0 * var_control, mde, alpha, power, sequential, tau2, tune_n)


# --------------------------------------------------------------------------- decision


def _decide(
    *, goal: Goal, diff: float, interval: tuple[float, float], p_value: float,
    seq_p: float, cs: tuple[float, float], n1: int, n2: int, needed: int, mde: float,
    alpha: float, min_n: int,
) -> Verdict:
    if goal not in ("maximize", "minimize"):
        raise ValueError(f"goal must be maximize or minimize, got {goal!r}")
    smaller = min(n1, n2)
    common = dict(goal=goal, diff=diff, interval=interval, p_value=p_value,
                  sequential_p=seq_p, confidence_sequence=cs, n_control=n1, n_candidate=n2,
                  mde=mde, alpha=alpha)
    if smaller < min_n:
        target = max(needed, min_n)
        more = target - smaller
        return Verdict(label=f"inconclusive — need ~{more} more outcomes per arm",
                       code="inconclusive", needed_n=target, more_needed=more,
                       reason=f"fewer than {min_n} outcomes in an arm ({smaller}): no verdict",
                       **common)
    if seq_p < alpha:
        higher = diff > 0
        code: Code = "better" if higher == (goal == "maximize") else "worse"
        return Verdict(label=code, code=code, needed_n=needed, more_needed=0,
                       reason=(f"always-valid p = {seq_p:.3g} < α = {alpha}; candidate − control"
                               f" = {diff:+.4g}, goal {goal}"), **common)
    if smaller >= needed:
        return Verdict(label=NO_DIFFERENCE_LABEL, code="no_difference", needed_n=needed,
                       more_needed=0,
                       reason=(f"always-valid p = {seq_p:.3g} ≥ α with {smaller} ≥ {needed}"
                               f" per arm, enough for 80% power at a difference of {mde}"),
                       **common)
    more = needed - smaller
    return Verdict(label=f"inconclusive — need ~{more} more outcomes per arm",
                   code="inconclusive", needed_n=needed, more_needed=more,
                   reason=(f"always-valid p = {seq_p:.3g} ≥ α and {smaller} < {needed} per arm"
                           f" needed to detect a difference of {mde}"), **common)


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
    previous_sequential_p: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> Verdict:
    """Verdict on a boolean (success) metric: control s/n vs candidate s/n.

    ``mde`` is an absolute difference in rate (0.02 = 2 points). With several metrics,
    pass a Holm-adjusted level or compare Holm-adjusted ``sequential_p`` values yourself
    (``holm`` is valid for always-valid p-values). ``previous_sequential_p`` carries the
    running minimum between looks.
    """
    min_n = max(int(min_n), 1)
    if n_control >= min_n:
        p_plan = s_control / n_control
    else:  # too few to plan with: the most conservative rate the data allow
        lo, hi = wilson_interval(s_control, n_control)
        p_plan = min(max(0.5, lo), hi)
    needed = sample_size_per_arm(p_plan, mde, alpha=alpha, power=power, goal=goal,
                                 tau2=tau2, tune_n=tune_n)
    if n_control == 0 or n_candidate == 0:
        diff = 0.0  # unknown with an empty arm
        seq_p, cs = 1.0, (-1.0, 1.0)
    else:
        diff, var, unit = _proportion_parts(s_control, n_control, s_candidate, n_candidate)
        t2 = tau2 if tau2 is not None else (
            optimal_mixing_ratio(alpha) * unit / tune_n if unit > 0 else 1.0)
        res = msprt(diff, var, t2, alpha=alpha, previous_p=previous_sequential_p)
        seq_p, cs = res.p_value, (max(res.low, -1.0), min(res.high, 1.0))
    interval = newcombe_diff_interval(s_control, n_control, s_candidate, n_candidate,
                                      1.0 - alpha)
    _, p_value = two_proportion_ztest(s_control, n_control, s_candidate, n_candidate)
    return _decide(goal=goal, diff=diff, interval=interval, p_value=p_value, seq_p=seq_p,
                   cs=cs, n1=n_control, n2=n_candidate, needed=needed, mde=mde, alpha=alpha,
                   min_n=min_n)


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
    previous_sequential_p: float | None = None,
    tau2: float | None = None,
    tune_n: float = DEFAULT_TUNE_N,
) -> Verdict:
    """Verdict on a float metric from summary statistics (sample variances, ddof = 1);
    ``mde`` in the metric's units. Fixed-horizon figures are Welch's."""
    min_n = max(int(min_n), 2)
    plan_var = var_control if n_control >= 2 else max(var_candidate, 0.0)
    needed = sample_size_per_arm_means(plan_var, mde, alpha=alpha, power=power, tau2=tau2,
                                       tune_n=tune_n)
    if n_control < 2 or n_candidate < 2:
        diff = (mean_candidate - mean_control) if n_control and n_candidate else 0.0
        return _decide(goal=goal, diff=diff, interval=(-math.inf, math.inf), p_value=1.0,
                       seq_p=1.0, cs=(-math.inf, math.inf), n1=n_control, n2=n_candidate,
                       needed=needed, mde=mde, alpha=alpha, min_n=min_n)
    diff = mean_candidate - mean_control
    var = var_control / n_control + var_candidate / n_candidate
    unit = var_control + var_candidate
    t2 = tau2 if tau2 is not None else (
        optimal_mixing_ratio(alpha) * unit / tune_n if unit > 0 else 1.0)
    res = msprt(diff, var, t2, alpha=alpha, previous_p=previous_sequential_p)
    _, _, p_value = welch_ttest(mean_control, var_control, n_control,
                                mean_candidate, var_candidate, n_candidate)
    interval = welch_interval(mean_control, var_control, n_control,
                              mean_candidate, var_candidate, n_candidate, 1.0 - alpha)
    return _decide(goal=goal, diff=diff, interval=interval, p_value=p_value,
                   seq_p=res.p_value, cs=(res.low, res.high), n1=n_control, n2=n_candidate,
                   needed=needed, mde=mde, alpha=alpha, min_n=min_n)
