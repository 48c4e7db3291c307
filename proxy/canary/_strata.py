"""A canary run's periods of constant allocation, and the stratified, cluster-robust estimate over them.

Why strata. The candidate's share grows stage by stage (1 → 5 → 25 → 50 %), so most of its outcomes come
late; pooling the counts of all stages compares late candidate traffic with mostly early baseline traffic,
and any trend in the success rate (a weekly cycle, a product change) moves the pooled difference — Simpson's
paradox. Within a period of constant allocation both arms are sampled over the same hours at a fixed ratio,
so their difference is unbiased whatever the trend; the periods' differences are then combined.

Method
------
1. **Periods** (:func:`periods`): each stage of the run, cut every ``stratum_hours`` from the stage's
   start (a day by default: weekday/weekend swings stay inside a period). The first ``SETTLE_S`` seconds after
   each stage change are left out: serving processes re-read the stage every 2 s, so for those seconds the
   allocation is mixed. Stages of 0 % or 100 % have one arm only and no period.
2. **Per period**, the arms' per-unit sums (a unit = a sticky bucket of the run, or a lone request; see
   ``proxy.canary._figures``) give an edge-safe estimate from ``proxy.reports``: ``ratio_estimate`` for
   events per trial (successes per outcome, guard failures per request: the delta-method variance over
   units, Deng, Knoblich & Lu, KDD 2018), ``mean_estimate`` for per-unit means (log latency).
3. **Combined** by ``stratified_estimate`` (Mantel–Haenszel risk-difference weights, Greenland & Robins 1985).
4. **Units that span periods.** A sticky user is in many periods (and, when a stage change hands its bucket
   to the candidate, in both arms). Its contributions are correlated — a user who often fails fails in every
   period — which a sum of per-period variances (independent strata) ignores: the variance comes out too
   small and an A/A canary is rolled back too often. The combined estimate θ̂ = Σₛ wₛ·(R̂₂ₛ − R̂₁ₛ) is,
   linearised, a sum over units of uᵢ = Σₛ wₛ·gᵢₛ with gᵢₛ = ±(yᵢₛ − R̂ₐₛ·mᵢₛ)/Mₐₛ (+ candidate, − baseline;
   for means gᵢₛ = ±(ȳᵢₛ − ȳₐₛ)/nₐₛ), so its cluster-robust (sandwich) variance is Σᵢ uᵢ² — clusters that
   cross strata, as in survey sampling (Wolter, *Introduction to Variance Estimation*, 2nd ed., 2007, ch. 6,
   Taylor-series linearisation; Cameron & Miller, "A Practitioner's Guide to Cluster-Robust Inference",
   J. Human Resources 50(2), 2015, §II). We keep the per-period (edge-safe) variances of step 3 and add the
   cross-period terms:

       V = V_strata + Σᵢ [ (Σₛ wₛ·gᵢₛ)² − Σₛ wₛ²·gᵢₛ² ].

   The weights wₛ are read from ``stratified_estimate`` itself (its change when one period's difference
   moves by 1; they depend on sample sizes only), so the weighting stays the one the reports use.
   A unit of one request has no cross terms and is summed per period (``lone``).

Everything here is pure Python over per-(period, arm) columns of sticky units' sums: sticky units are
buckets (at most 10,000 per period and arm), so a run's cells stay small enough to fetch and sum at every
evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from math import fsum
from operator import mul, truediv
from typing import Literal

from proxy.reports import Estimate, UnitSums, mean_estimate, ratio_estimate, stratified_estimate

__all__ = ["SETTLE_S", "Cell", "Group", "MetricCells", "Period", "Stratified", "lone_sums", "periods", "stratified"]

SETTLE_S = 10.0
"""Seconds left out after each stage change (serving processes re-read the stage every 2 s)."""

BASELINE, CANDIDATE = 0, 1

Cell = tuple[int, int, Hashable, float, float]
"""(period index, arm (0 baseline, 1 candidate), unit, y, m): one sticky unit's sums in one period and arm.
Ratio metrics: y events out of m trials. Mean metrics: y = Σ values, m = their count (the unit's value is
y / m)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Period:
    """A period of constant allocation: the candidate had ``stage`` percent from ``start`` to ``end``."""

    index: int
    stage: float
    start: float
    end: float


def periods(changes: Sequence[tuple[float, float]], now: float, *, stratum_hours: float,
            settle_s: float = SETTLE_S) -> list[Period]:
    """The run's periods from its stage changes ((time, stage), oldest first, the first at the run's start)."""
    if stratum_hours <= 0:
        raise ValueError("stratum_hours must be > 0")
    step = stratum_hours * 3600.0
    out: list[Period] = []
    for i, (at, stage) in enumerate(changes):
        end = min(changes[i + 1][0], now) if i + 1 < len(changes) else now
        if not 0.0 < stage < 100.0:
            continue  # one arm only: nothing to compare
        lo = at + settle_s
        while lo < end:
            hi = min(lo + step, end)
            out.append(Period(len(out), float(stage), lo, hi))
            lo = hi
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """The sticky units of one (period, arm), column-wise: unit ids, y and m (m > 0)."""

    units: list[Hashable]
    y: list[float]
    m: list[float]


@dataclasses.dataclass(frozen=True, slots=True)
class MetricCells:
    """One metric of a run: sticky units per (period, arm) (``groups``), and lone requests (units of one)
    summed per (period, arm) (``lone``)."""

    kind: Literal["ratio", "mean"]
    groups: Mapping[tuple[int, int], Group] = dataclasses.field(default_factory=dict)
    lone: Mapping[tuple[int, int], UnitSums] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_cells(cls, kind: Literal["ratio", "mean"], cells: Iterable[Cell],
                   lone: Mapping[tuple[int, int], UnitSums] | None = None) -> MetricCells:
        groups: dict[tuple[int, int], Group] = {}
        for p, a, u, y, m in cells:
            if m > 0:
                g = groups.get((p, a))
                if g is None:
                    g = groups[(p, a)] = Group([], [], [])
                g.units.append(u)
                g.y.append(y)
                g.m.append(m)
        return cls(kind, groups, dict(lone or {}))


def lone_sums(count: int, y: float, yy: float, m: float | None = None) -> UnitSums:
    """The :class:`UnitSums` of ``count`` units of one trial (or one value) each: Σy, Σy²; m_i = 1."""
    m = float(count) if m is None else m
    return UnitSums(units=count, y=y, m=m, yy=yy, mm=m, ym=y)


@dataclasses.dataclass(frozen=True, slots=True)
class Stratified:
    """The combined estimate (candidate − baseline; variance with the cross-period terms; distinct units
    per arm) and what it was built from."""

    estimate: Estimate
    periods: int  # periods that carried weight
    strata_variance: float  # Σ wₛ²·Vₛ: what independent periods would give
    cross_variance: float  # the added cross-period terms (negative when units changed arms)


_EMPTY = Stratified(Estimate(0.0, math.inf, 0, 0), 0, math.inf, 0.0)


def _values(kind: str, g: Group) -> tuple[list[float], list[float]]:
    """The unit values and trials the sums are over: (y, m), or for means (ȳ per unit, 1)."""
    if kind == "mean":
        return list(map(truediv, g.y, g.m)), [1.0] * len(g.y)
    return g.y, g.m


def stratified(metric: MetricCells) -> Stratified:
    """Stratified, cluster-robust candidate − baseline of one metric (module docstring)."""
    mean = metric.kind == "mean"
    sums: dict[tuple[int, int], list[float]] = {}
    values: dict[tuple[int, int], tuple[list[float], list[float]]] = {}
    for key, g in metric.groups.items():
        if not g.units:
            continue
        y, m = values[key] = _values(metric.kind, g)
        sums[key] = [len(y), fsum(y), fsum(m), fsum(map(mul, y, y)), fsum(map(mul, m, m)), fsum(map(mul, y, m))]
    lone_units = [0, 0]
    for key, x in metric.lone.items():
        if x.units <= 0:
            continue
        s = sums.setdefault(key, [0.0] * 6)
        for i, v in enumerate((x.units, x.y, x.m, x.yy, x.mm, x.ym)):
            s[i] += v
        lone_units[key[1]] += x.units
    distinct = [set(), set()]
    for (p, a), g in metric.groups.items():
        distinct[a].update(g.units)
    n_base = len(distinct[BASELINE]) + lone_units[BASELINE]
    n_cand = len(distinct[CANDIDATE]) + lone_units[CANDIDATE]
    keys = sorted({p for p, _ in sums})
    if not keys:
        return dataclasses.replace(_EMPTY, estimate=Estimate(0.0, math.inf, n_base, n_cand))
    estimate = mean_estimate if mean else ratio_estimate
    zero = [0.0] * 6
    arms = {p: tuple(UnitSums(int(v[0]), *v[1:]) for v in (sums.get((p, 0), zero), sums.get((p, 1), zero)))
            for p in keys}
    per_period = [estimate(*arms[p]) for p in keys]
    combined = stratified_estimate(per_period)
    if not math.isfinite(combined.variance):
        return dataclasses.replace(_EMPTY, estimate=Estimate(0.0, math.inf, n_base, n_cand))
    # each period's weight in the combined difference: its derivative in that period's difference
    weights: dict[int, float] = {}
    for i, p in enumerate(keys):
        moved = list(per_period)
        moved[i] = dataclasses.replace(per_period[i], diff=per_period[i].diff + 1.0)
        weights[p] = stratified_estimate(moved).diff - combined.diff
    # each sticky unit's contribution uᵢ = Σₛ wₛ·gᵢₛ, gᵢₛ = ±(yᵢₛ − centre·mᵢₛ)/scale
    by_unit: dict[Hashable, float] = {}
    diagonal = 0.0
    for (p, a), (y, m) in values.items():
        w = weights.get(p, 0.0)
        if abs(w) < 1e-15:
            continue
        x = arms[p][a]
        scale = x.units if mean else x.m
        centre = x.y / scale
        k = (w if a == CANDIDATE else -w) / scale
        g = [(yi - centre * mi) * k for yi, mi in zip(y, m)]
        diagonal += fsum(map(mul, g, g))
        get = by_unit.get
        for u, gi in zip(metric.groups[(p, a)].units, g):
            by_unit[u] = get(u, 0.0) + gi
    cross = fsum(v * v for v in by_unit.values()) - diagonal
    variance = combined.variance + cross
    if not variance > 0.0:  # only by rounding: the sandwich Σuᵢ² is never negative
        variance = combined.variance
    used = sum(1 for p in keys if abs(weights[p]) > 1e-15)
    return Stratified(Estimate(combined.diff, variance, n_base, n_cand), used, combined.variance, cross)
