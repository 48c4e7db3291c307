"""Units of analysis and periods of constant allocation: what the report's comparisons are made of.

**The unit of analysis is the unit of randomization** (DESIGN.md, "Decisions you can act on").
Assignment is sticky per key (episode, user, …: ``proxy.routing``), so the requests of one key are
one randomized unit and are correlated; a request without a sticky key is a unit of its own. Every
request-level figure that feeds a verdict or the canary (inference-level metrics, guard failures,
errors, coverage, latency) is summed per unit in SQL (``_queries.create_units``/``unit_outcomes``),
then per arm into :class:`~proxy.reports.UnitSums` (Σy, Σm, Σy², Σm², Σym), and compared with the
cluster-robust delta-method ratio (:func:`~proxy.reports.ratio_estimate`; Deng, Knoblich & Lu,
"Applying the Delta Method in Metric Analytics", KDD 2018). The sample-ratio check counts units
(Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD 2019, §4:
the check belongs on the randomization unit; request rates per user differ by arm by design).

**Periods.** Where the allocation changed inside the report's window — a new policy version on the
route (a reweighted split, or any reload: a finer partition costs little), a canary stage change,
or a boundary the caller asks for — the window is cut into periods, each arm is summed per period,
and the per-period differences are combined by :func:`~proxy.reports.stratified_estimate`; counts
are never pooled across an allocation change (Simpson's paradox when the split and the rates move
together). Within a period each active unit is assigned afresh by its bucket under that period's
weights, so each period is a randomized comparison of its own.

**Units that span periods.** A sticky user active in two periods is in both strata, so the
strata are *not* independent: the same user's persistent level shows up in both differences.
``stratified_estimate`` assumes independent strata; :func:`estimate_over_periods` adds the
covariances between strata from the per-unit cross products Σᵢ yᵢₛyᵢₜ, yᵢₛmᵢₜ, … (SQL:
``_queries.unit_cross_query``), i.e. the variance of the stratified estimator linearised over
units (the delta method again, with each unit's influence summed over the cells it appears in):

    Var(Σₛ ωₛ Dₛ) = Σₛ ωₛ² Var(Dₛ) + 2 Σ_{cells c < c'} ω_c ω_c' Cov(R_c, R_c'),
    Cov(R_c, R_c') = Σᵢ (y_ic − R_c m_ic)(y_ic' − R_c' m_ic') / (M_c M_c'),

with ωₛ the stratum weights ``stratified_estimate`` uses (read back from it, so they always agree)
and signs + for the candidate's cells, − for the baseline's. The same term covers a unit seen in
both arms of one period (a sticky key whose requests went two ways: counted and warned).
``tests/reports/test_clustered_report.py`` measures it: an A/A ramp with sticky users active
across stages stays at α with it and does not without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from ._estimates import Estimate, UnitSums, ratio_estimate, stratified_estimate
from ._queries import UNIT_KINDS, sticky_unit_parts
from ._stats import chi_square_srm

__all__ = [
    "EMPTY",
    "SRM_ALPHA",
    "FigureSums",
    "Period",
    "allocation_periods",
    "estimate_over_periods",
    "route_estimate",
    "srm_on_units",
    "unit_label",
]

SRM_ALPHA = 0.001
EMPTY = UnitSums(0, 0.0, 0.0, 0.0, 0.0, 0.0)

Cell = tuple[int, str]  # (period, arm)
Cross = tuple[float, float, float, float]  # Σ yₐy_b, yₐm_b, mₐy_b, mₐm_b over units in both cells


@dataclasses.dataclass(slots=True)
class FigureSums:
    """One figure (y events out of m trials per unit) of one route: the unit sums per (period, arm)
    and the cross products of units present in two cells (keys ordered: (period, arm) a < b)."""

    cells: dict[Cell, UnitSums] = dataclasses.field(default_factory=dict)
    cross: dict[tuple[int, str, int, str], Cross] = dataclasses.field(default_factory=dict)

    def pooled(self, arm: str, units: int | None = None) -> UnitSums:
        """The arm's sums over the whole window, each unit once (its cells added up): the cells' sums
        plus twice the cross products of its units seen in two periods. ``units``: the arm's distinct
        units (else the cells' units added up)."""
        y = m = yy = mm = ym = 0.0
        n = 0
        for (_, a), s in self.cells.items():
            if a == arm:
                y, m, yy, mm, ym, n = y + s.y, m + s.m, yy + s.yy, mm + s.mm, ym + s.ym, n + s.units
        for (_, a, _, b), (c_yy, c_ym, c_my, c_mm) in self.cross.items():
            if a == arm and b == arm:
                yy, mm, ym = yy + 2 * c_yy, mm + 2 * c_mm, ym + c_ym + c_my
        return UnitSums(units if units is not None else n, y, m, yy, mm, ym)

    def periods(self) -> list[int]:
        return sorted({p for p, _ in self.cells})


def _weights(strata: Sequence[Estimate]) -> list[float]:
    """The normalised weight ``stratified_estimate`` gives each stratum, read back from it: it is linear
    in the strata's differences with weights that do not depend on them, so a difference of 1 in
    stratum k alone returns ωₖ."""
    if len(strata) == 1:
        return [1.0 if math.isfinite(strata[0].variance) else 0.0]
    return [stratified_estimate([dataclasses.replace(e, diff=float(i == k)) for i, e in enumerate(strata)]).diff
            for k in range(len(strata))]


def estimate_over_periods(fig: FigureSums, baseline: str, candidate: str, *, edge_safe: bool = True,
                          periods: Sequence[int] | None = None,
                          units: tuple[int, int] | None = None) -> tuple[Estimate, list[Estimate]]:
    """candidate − baseline of the ratio Σy/Σm: per period :func:`ratio_estimate` (cluster-robust),
    combined by :func:`stratified_estimate`, with the covariance of units seen in several cells added
    (module docstring). Returns the combined estimate and the per-period ones. ``edge_safe``: passed
    to ``ratio_estimate`` (its Agresti–Caffo pseudo-unit assumes events out of trials, 0 ≤ y ≤ m).
    ``units``: the arms' distinct units over the window, as the combined estimate's sample sizes
    (the strata's sizes added up count a unit once per period it was active in)."""
    order = list(periods) if periods is not None else fig.periods()
    strata = [ratio_estimate(fig.cells.get((p, baseline), EMPTY), fig.cells.get((p, candidate), EMPTY),
                             edge_safe=edge_safe) for p in order]
    if not strata:
        return Estimate(0.0, math.inf, 0, 0), []
    combined = strata[0] if len(strata) == 1 else stratified_estimate(strata)
    if units is not None and len(strata) > 1:
        combined = dataclasses.replace(combined, n_baseline=units[0], n_candidate=units[1])
    if not math.isfinite(combined.variance):
        return combined, strata
    omega = dict(zip(order, _weights(strata)))
    extra = 0.0
    for (s, a, t, b), (c_yy, c_ym, c_my, c_mm) in fig.cross.items():
        if a not in (baseline, candidate) or b not in (baseline, candidate):
            continue
        w_a, w_b = omega.get(s, 0.0), omega.get(t, 0.0)
        if not w_a or not w_b:
            continue
        cell_a, cell_b = fig.cells.get((s, a)), fig.cells.get((t, b))
        if cell_a is None or cell_b is None or cell_a.m <= 0 or cell_b.m <= 0:
            continue
        r_a, r_b = cell_a.y / cell_a.m, cell_b.y / cell_b.m
        cov = (c_yy - r_b * c_ym - r_a * c_my + r_a * r_b * c_mm) / (cell_a.m * cell_b.m)
        sign = (1.0 if a == candidate else -1.0) * (1.0 if b == candidate else -1.0)
        extra += 2.0 * sign * w_a * w_b * cov
    # the edge-safe per-stratum variances are at least the plain ones, so the sum stays ≥ the plain
    # linearised variance Σᵢψᵢ² ≥ 0; the floor only guards rounding
    variance = max(combined.variance + extra, 0.0)
    return dataclasses.replace(combined, variance=variance), strata


# --------------------------------------------------------------------------- periods


@dataclasses.dataclass(slots=True)
class Period:
    """A stretch of the window with one allocation: [start, end) (None: open)."""

    index: int
    start: float | None
    end: float | None
    because: str  # why it starts ("start of the window", "policy version a → b", "canary stage 5% → 25%")
    policy_versions: list[str | None] = dataclasses.field(default_factory=list)
    canary_stage: float | None = None


def _stage(events: list[tuple[float, float | None, float | None]], first_stage: float, t: float) -> float | None:
    """The canary stage in force at time t: set by the last change (at, from, to) at or before t;
    before the first change, that change's `from` stage (else the first configured stage)."""
    current = None
    for at, _, to in events:
        if at <= t:
            current = to
    if current is not None:
        return current
    if events and events[0][1] is not None:
        return events[0][1]
    return first_stage


def allocation_periods(versions: list[tuple[Any, float, float, int]],
                       decisions: list[tuple[float, float | None, float | None, str]],
                       canary_state: tuple[float, float] | None, first_stage: float | None,
                       extra_cuts: Sequence[float], first: float, last: float) -> tuple[list[float], list[Period],
                                                                                        list[dict[str, Any]]]:
    """The cuts (period k starts at cut k − 1), the periods and the allocation changes of one route.

    ``versions``: (policy version, first request, last request, requests) seen in the window;
    ``decisions``: the canary decisions up to the window's end (at, from, to, action);
    ``canary_state``: (stage, updated_at) stored now; ``first_stage``: the canary's first stage
    (None: not a canary); ``extra_cuts``: the caller's own boundaries (e.g. days);
    ``first`` / ``last``: the route's first and last request in the window."""
    cuts: dict[float, list[str]] = defaultdict(list)
    changes: list[dict[str, Any]] = []
    ordered = sorted(versions, key=lambda v: v[1])
    if len(ordered) > 1:
        for prev, nxt in zip(ordered, ordered[1:]):
            cuts[nxt[1]].append(f"policy version {prev[0]} → {nxt[0]}")
            changes.append({"at": nxt[1], "kind": "policy_version", "from": prev[0], "to": nxt[0],
                            "change": f"policy version {prev[0]} → {nxt[0]}"})
        for v in ordered:
            # a version that stops while another one that started earlier goes on (a roll-back to an
            # earlier version) ends a period too; otherwise the next version's start is the cut
            end = math.nextafter(v[2], math.inf)
            if end <= last and any(u is not v and u[1] < end <= u[2] for u in ordered):
                cuts[end].append(f"policy version {v[0]} no longer seen")
    events = [(at, frm, to, action) for at, frm, to, action in decisions]
    if canary_state is not None and (not events or canary_state[1] > events[-1][0] + 1e-6):
        # a stored stage set without a decision row (a restart): a change of its own
        events.append((canary_state[1], events[-1][2] if events else first_stage, canary_state[0], "state"))
    for at, frm, to, action in events:
        if first < at <= last and frm != to:
            what = f"canary stage {_pct(frm)} → {_pct(to)} ({action})"
            cuts[at].append(what)
            changes.append({"at": at, "kind": "canary_stage", "from": frm, "to": to, "change": what})
    stage_events = [(at, frm, to) for at, frm, to, _ in events]
    for cut in extra_cuts:
        if first < cut <= last:
            cuts[float(cut)].append("period boundary")
    bounds = sorted(c for c in cuts if first < c <= last)
    periods = []
    starts = [None, *bounds]
    ends = [*bounds, None]
    for k, (start, end) in enumerate(zip(starts, ends)):
        lo = first if start is None else start
        present = [v[0] for v in ordered if (v[1] < end if end is not None else True) and v[2] >= lo]
        stage = _stage(stage_events, first_stage, lo) if first_stage is not None else None
        periods.append(Period(index=k, start=start, end=end,
                              because="start of the window" if start is None else "; ".join(cuts[start]),
                              policy_versions=present, canary_stage=stage))
    changes.sort(key=lambda c: c["at"])
    return bounds, periods, changes


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:g}%"


# --------------------------------------------------------------------------- SRM and labels


def srm_on_units(units: Mapping[str, int], weights: Mapping[str, float], *,
                 threshold: float = SRM_ALPHA) -> dict[str, Any] | None:
    """Sample-ratio check on assignment units: Pearson's chi-square of the distinct units per arm
    against the configured weights (``chi_square_srm``); None with fewer than two weighted arms.
    A variant with weight 0 is not tested (it should get nothing)."""
    variants = [v for v in weights if weights[v] > 0]
    if len(variants) < 2:
        return None
    observed = [int(units.get(v, 0)) for v in variants]
    chi2, p = chi_square_srm(observed, [weights[v] for v in variants])
    return {"weights": {v: weights[v] for v in variants}, "observed": dict(zip(variants, observed)),
            "chi2": chi2, "p": p, "threshold": threshold, "warning": p < threshold}


def unit_label(sticky_by: Sequence[str], kinds: Mapping[str, int]) -> str:
    """'user (sticky key)' — the unit most requests belong to, and how the others are counted."""
    if not kinds:
        return "request (no requests)"
    parts = sticky_unit_parts(tuple(sticky_by))
    main = max(kinds, key=lambda k: kinds[k])
    if main == "q":
        label = "request (no sticky key)"
    else:
        label = f"{UNIT_KINDS[main]} (sticky key)"
    others = [f"{kinds[k]} {UNIT_KINDS[k]}{'s' if kinds[k] != 1 else ''}" for k in sorted(kinds) if k != main]
    if others:
        label += "; also " + ", ".join(others)
    if not parts and main != "q":
        label += " — sticky_by reads a field the records do not keep: units are hash buckets"
    return label


def route_estimate(route_report: Mapping[str, Any], figure: str, baseline: str, candidate: str, *,
                   metric: str | None = None, edge_safe: bool = True) -> Estimate:
    """candidate − baseline on one of a report route's unit figures — ``errors``, ``guard_failures``,
    ``critical_failures``, ``coverage``, ``log_latency`` — or, with ``figure="metric"``, the metric
    ``metric``: stratified over the route's periods with the covariance of units spanning them. For
    callers that hold the report JSON (the canary controller); :func:`estimate_over_periods` on the
    same figures the report itself used."""
    fig = figure_from_report(route_report, figure, metric)
    est, _ = estimate_over_periods(fig, baseline, candidate, edge_safe=edge_safe)
    return est


def figure_from_report(route_report: Mapping[str, Any], figure: str, metric: str | None = None) -> FigureSums:
    """The :class:`FigureSums` of a figure back from the report's ``unit_sums`` section (JSON)."""
    key = f"metric:{metric}" if figure == "metric" else figure
    section = route_report["unit_sums"]
    fig = FigureSums()
    for c in section["cells"]:
        if c["figure"] == key:
            fig.cells[(int(c["period"]), c["arm"])] = UnitSums(*(c[k] for k in ("units", "y", "m", "yy", "mm", "ym")))
    for c in section["cross"]:
        if c["figure"] == key:
            fig.cross[(int(c["period_a"]), c["arm_a"], int(c["period_b"]), c["arm_b"])] = (
                c["yy"], c["ym"], c["my"], c["mm"])
    return fig


def _f(x: Any) -> float:
    return float(x or 0)


def unit_figures(unit_rows: list[tuple], unit_cross_rows: list[tuple], outcome_rows: list[tuple],
                 outcome_cross_rows: list[tuple], levels: Mapping[str, str]) -> dict[str, dict[str, FigureSums]]:
    """route -> figure -> :class:`FigureSums` from the rows of ``_queries.unit_sums_query``,
    ``unit_cross_query``, ``outcome_sums_query`` and ``outcome_cross_query``. Metrics are figures
    ``metric:<name>``; outcomes stored at another level than ``levels`` declares are left out (as in
    the per-arm figures)."""
    from ._queries import LOG_SCALE, UNIT_FIGURES

    out: dict[str, dict[str, FigureSums]] = defaultdict(lambda: defaultdict(FigureSums))
    names = list(UNIT_FIGURES)
    for row in unit_rows:
        rt, period, arm, *sums = row
        for k, name in enumerate(names):
            units, y, m, yy, mm, ym = sums[6 * k:6 * k + 6]
            c = float(LOG_SCALE) if name == "log_latency" else 1.0  # y in thousandths of ln(ms)
            if units:
                out[rt][name].cells[(int(period), arm)] = UnitSums(int(units), _f(y) / c, _f(m), _f(yy) / (c * c),
                                                                   _f(mm), _f(ym) / c)
    for row in unit_cross_rows:
        rt, pa, aa, pb, ab, *sums = row
        for k, name in enumerate(names):
            c = float(LOG_SCALE) if name == "log_latency" else 1.0
            c_yy, c_ym, c_my, c_mm = (_f(x) for x in sums[4 * k:4 * k + 4])
            cross = (c_yy / (c * c), c_ym / c, c_my / c, c_mm)
            if any(cross) and (int(pa), aa) in out[rt][name].cells and (int(pb), ab) in out[rt][name].cells:
                out[rt][name].cross[(int(pa), aa, int(pb), ab)] = cross
    for rt, period, arm, metric, level, units, y, m, yy, mm, ym, _ in outcome_rows:
        if levels.get(metric, level) != level or not units:
            continue
        out[rt][f"metric:{metric}"].cells[(int(period), arm)] = UnitSums(int(units), _f(y), _f(m), _f(yy), _f(mm),
                                                                         _f(ym))
    for rt, metric, level, pa, aa, pb, ab, *cross in outcome_cross_rows:
        if levels.get(metric, level) != level:
            continue
        c_yy, c_ym, c_my, c_mm = (_f(x) for x in cross)
        out[rt][f"metric:{metric}"].cross[(int(pa), aa, int(pb), ab)] = (c_yy, c_ym, c_my, c_mm)
    return out


def figures_json(figures: Mapping[str, FigureSums]) -> dict[str, list[dict[str, Any]]]:
    """A route's figures as the report's ``unit_sums`` section (``figure_from_report`` reads it back)."""
    cells, cross = [], []
    for name, fig in sorted(figures.items()):
        for (period, arm), s in sorted(fig.cells.items()):
            cells.append({"figure": name, "period": period, "arm": arm, **dataclasses.asdict(s)})
        for (pa, aa, pb, ab), (yy, ym, my, mm) in sorted(fig.cross.items()):
            cross.append({"figure": name, "period_a": pa, "arm_a": aa, "period_b": pb, "arm_b": ab,
                          "yy": yy, "ym": ym, "my": my, "mm": mm})
    return {"cells": cells, "cross": cross}
