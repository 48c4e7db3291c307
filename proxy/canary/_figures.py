"""A canary run's figures from the store: per (period, arm, sticky unit) sums of the success metric, of guard
failures, critical failures and log latency — the cells ``proxy.canary._strata`` combines.

These are the canary's own queries, not the report engine's: the canary compares within its own periods
(the run's stages cut by ``stratum_hours``, minus the settle seconds after each change) at every evaluation,
and needs the cells of units that span periods, which a per-arm summary cannot give.

What is counted
---------------
* **Requests**: attempt 1 of each request of the route, whose variant is the canary's baseline or candidate
  (the assignment; intention-to-treat: a fallback or retry stays in the assigned arm), started in one of the
  run's periods — so nothing from before the run.
* **Unit**: the sticky bucket (``records.bucket``). Assignment is a function of the bucket, so all requests
  of a bucket share their arm within a period: clustering by it is valid however the route's sticky key is
  configured (several keys may share one of the 10,000 buckets — a coarser cluster, which costs a little
  precision, never validity). A request without a sticky key (bucket NULL) is its own unit.
* **Guard failures**: requests with a failed guard on any non-shadow attempt (as the report counts them);
  **critical**: requests with a failed guard of severity ``critical``.
* **Latency**: attempt 1's own latency when it answered (the assigned variant's latency; cache hits carry
  none), as ln(ms).
* **Success metric**: the latest outcome per subject (a correction replaces the first report). Inference
  level: per request. Episode level: per episode whose first request started in the run, in that request's
  arm, unit and period.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from proxy.canary._strata import MetricCells, Period, lone_sums
from proxy.reports import UnitSums

__all__ = ["ArmTotals", "RunData", "run_data"]

_CRITICAL = "CAST({col} AS TEXT) LIKE '%\"critical\"]%'"  # failed_guards: [[class, severity], …]
_NEWER = """NOT EXISTS (SELECT 1 FROM outcomes n WHERE n.level = o.level AND n.metric = o.metric
        AND n.{key} = o.{key} AND (n.received_at > o.received_at OR (n.received_at = o.received_at AND n.id > o.id)))"""


@dataclasses.dataclass(frozen=True, slots=True)
class ArmTotals:
    """One arm over the run (for the figures and the per-stage sample gate)."""

    requests: int = 0
    guard_failures: int = 0
    critical_failures: int = 0
    outcomes: int = 0
    successes: float = 0.0
    latency_n: int = 0
    latency_log_sum: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class RunData:
    periods: Sequence[Period]
    success: MetricCells
    guard_failures: MetricCells
    critical: MetricCells
    log_latency: MetricCells
    # per arm (0 baseline, 1 candidate): totals over the run, and outcomes per period
    totals: tuple[ArmTotals, ArmTotals] = (ArmTotals(), ArmTotals())
    outcomes_by_period: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)

    def outcomes_since(self, start: float) -> tuple[int, int]:
        """Outcomes per arm in the periods that began at or after ``start`` (the current stage's)."""
        first = {p.index for p in self.periods if p.start >= start}
        return tuple(sum(n for (p, a), n in self.outcomes_by_period.items() if a == arm and p in first)
                     for arm in (0, 1))  # type: ignore[return-value]


def _period_case(column: str, periods: Sequence[Period]) -> tuple[str, list[Any]]:
    whens, params = "", []
    for p in periods:
        whens += f" WHEN {column} >= ? AND {column} < ? THEN {p.index}"
        params += [p.start, p.end]
    return f"CASE{whens} END", params


def _requests_sql(route: str, baseline: str, candidate: str, periods: Sequence[Period]) -> tuple[str, list[Any]]:
    case, case_params = _period_case("r.started_at", periods)
    lo, hi = periods[0].start, periods[-1].end
    crit_late = _CRITICAL.format(col="failed_guards")
    crit = _CRITICAL.format(col="r.failed_guards")
    served = "r.served = 1 AND r.latency_ms > 0"
    sql = f"""SELECT x.period, x.arm, x.bucket, count(*), sum(x.grd), sum(x.crit), sum(x.lat_n), sum(x.lat_log),
        sum(x.lat_log * x.lat_log)
    FROM (
        SELECT {case} AS period, CASE WHEN r.variant = ? THEN 1 ELSE 0 END AS arm, r.bucket AS bucket,
            CASE WHEN r.guard_failures > 0 OR l.grd > 0 THEN 1 ELSE 0 END AS grd,
            CASE WHEN {crit} OR l.crit > 0 THEN 1 ELSE 0 END AS crit,
            CASE WHEN {served} THEN 1 ELSE 0 END AS lat_n,
            CASE WHEN {served} THEN ln(r.latency_ms) ELSE 0 END AS lat_log
        FROM records r
        LEFT JOIN (SELECT request_id, max(guard_failures) AS grd, max(CASE WHEN {crit_late} THEN 1 ELSE 0 END) AS crit
                   FROM records WHERE attempt > 1 AND route = ? AND started_at >= ?
                       AND coalesce(attempt_reason, '') != 'shadow'
                   GROUP BY request_id) l ON l.request_id = r.request_id
        WHERE r.route = ? AND r.attempt = 1 AND r.started_at >= ? AND r.started_at < ? AND r.variant IN (?, ?)
    ) x WHERE x.period IS NOT NULL GROUP BY x.period, x.arm, x.bucket"""
    return sql, [*case_params, candidate, route, lo, route, lo, hi, baseline, candidate]


def _inference_sql(route: str, baseline: str, candidate: str, metric: str,
                   periods: Sequence[Period]) -> tuple[str, list[Any]]:
    case, case_params = _period_case("r.started_at", periods)
    lo, hi = periods[0].start, periods[-1].end
    sql = f"""SELECT x.period, x.arm, x.bucket, count(*), sum(x.v), sum(x.v * x.v) FROM (
        SELECT {case} AS period, CASE WHEN r.variant = ? THEN 1 ELSE 0 END AS arm, r.bucket AS bucket, o.value AS v
        FROM records r JOIN outcomes o ON o.request_id = r.request_id
        WHERE r.route = ? AND r.attempt = 1 AND r.started_at >= ? AND r.started_at < ? AND r.variant IN (?, ?)
            AND o.level = 'inference' AND o.metric = ? AND {_NEWER.format(key="request_id")}
    ) x WHERE x.period IS NOT NULL GROUP BY x.period, x.arm, x.bucket"""
    return sql, [*case_params, candidate, route, lo, hi, baseline, candidate, metric]


def _episode_sql(route: str, baseline: str, candidate: str, metric: str,
                 periods: Sequence[Period]) -> tuple[str, list[Any]]:
    case, case_params = _period_case("f.t0", periods)
    lo, hi = periods[0].start, periods[-1].end
    sql = f"""WITH ep AS (
        SELECT e.episode_id AS episode_id, min(e.started_at) AS t0 FROM records e
        WHERE e.route = ? AND e.attempt = 1 AND e.episode_id IN (
            SELECT s.episode_id FROM records s WHERE s.route = ? AND s.attempt = 1 AND s.started_at >= ?
                AND s.started_at < ? AND s.episode_id IS NOT NULL)
        GROUP BY e.episode_id),
    fe AS (
        SELECT ep.episode_id AS episode_id, ep.t0 AS t0, min(r.variant) AS variant, min(r.bucket) AS bucket
        FROM ep JOIN records r ON r.episode_id = ep.episode_id AND r.route = ? AND r.attempt = 1
            AND r.started_at = ep.t0
        WHERE ep.t0 >= ? AND ep.t0 < ? GROUP BY ep.episode_id, ep.t0)
    SELECT x.period, x.arm, x.bucket, count(*), sum(x.v), sum(x.v * x.v) FROM (
        SELECT {case} AS period, CASE WHEN f.variant = ? THEN 1 ELSE 0 END AS arm, f.bucket AS bucket, o.value AS v
        FROM fe f JOIN outcomes o ON o.episode_id = f.episode_id
        WHERE f.variant IN (?, ?) AND o.level = 'episode' AND o.metric = ? AND {_NEWER.format(key="episode_id")}
    ) x WHERE x.period IS NOT NULL GROUP BY x.period, x.arm, x.bucket"""
    return sql, [route, route, lo, hi, route, lo, hi, *case_params, candidate, baseline, candidate, metric]


def _num(x: Any) -> float:
    return float(x) if x is not None else 0.0


async def run_data(store: Any, *, route: str, baseline: str, candidate: str, metric: str, level: str,
                   periods: Sequence[Period]) -> RunData:
    """The run's cells and totals (module docstring); empty when the run has no period yet."""
    periods = list(periods)
    if not periods:
        return RunData(periods, MetricCells("ratio"), MetricCells("ratio"), MetricCells("ratio"), MetricCells("mean"))
    outcome_sql = _episode_sql if level == "episode" else _inference_sql
    # two read lanes at once (each query scans the run's requests once)
    request_rows, outcome_rows = await asyncio.gather(
        store.fetch(*_requests_sql(route, baseline, candidate, periods), lane=0),
        store.fetch(*outcome_sql(route, baseline, candidate, metric, periods), lane=1))

    guard, critical, latency = [], [], []
    guard_lone, critical_lone, latency_lone = {}, {}, {}
    totals = [[0, 0, 0, 0, 0.0, 0, 0.0], [0, 0, 0, 0, 0.0, 0, 0.0]]
    for period, arm, bucket, m, grd, crit, lat_n, lat_log, lat_log2 in request_rows:
        p, a, m, grd, crit, lat_n = int(period), int(arm), int(m), int(grd or 0), int(crit or 0), int(lat_n or 0)
        lat_log, lat_log2 = _num(lat_log), _num(lat_log2)
        t = totals[a]
        t[0] += m
        t[1] += grd
        t[2] += crit
        t[5] += lat_n
        t[6] += lat_log
        if bucket is None:
            guard_lone[(p, a)] = lone_sums(m, grd, grd)
            critical_lone[(p, a)] = lone_sums(m, crit, crit)
            if lat_n:
                latency_lone[(p, a)] = UnitSums(lat_n, lat_log, lat_n, lat_log2, lat_n, lat_log)
        else:
            guard.append((p, a, bucket, grd, m))
            critical.append((p, a, bucket, crit, m))
            if lat_n:
                latency.append((p, a, bucket, lat_log, lat_n))
    success, success_lone = [], {}
    by_period: dict[tuple[int, int], int] = {}
    for period, arm, bucket, n, s, ss in outcome_rows:
        p, a, n, s, ss = int(period), int(arm), int(n), _num(s), _num(ss)
        totals[a][3] += n
        totals[a][4] += s
        by_period[(p, a)] = by_period.get((p, a), 0) + n
        if bucket is None:
            success_lone[(p, a)] = UnitSums(n, s, n, ss, n, s)
        else:
            success.append((p, a, bucket, s, n))
    return RunData(
        periods, MetricCells.from_cells("ratio", success, success_lone),
        MetricCells.from_cells("ratio", guard, guard_lone), MetricCells.from_cells("ratio", critical, critical_lone),
        MetricCells.from_cells("mean", latency, latency_lone),
        (ArmTotals(*totals[0]), ArmTotals(*totals[1])), by_period)  # type: ignore[arg-type]
