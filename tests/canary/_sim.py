"""Seeded canary simulations through the controller's own assembly: per look, a `RunData` (the cells the
store queries would return) -> `canary_figures` -> `decide`; a promotion starts a new stage (a new period),
a rollback or `promoted` ends the run. Counts are simulated with numpy, per hour, or per request of
simulated users.

Two harnesses:

* `run_counts` — independent outcomes (no sticky units): per hour, the candidate gets its stage's share of
  the outcomes, each a success with the hour's rate (trends, weekly swings, pre-canary levels);
* `run_users` — sticky users with user-level variation: each user has many requests over the run, its own
  guard-failure rate, success rate and latency level, and a bucket that decides its arm at each stage (the
  gateway's nested buckets: a stage increase hands some baseline users to the candidate).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from proxy.canary import Decision, decide, periods
from proxy.canary._controller import canary_figures
from proxy.canary._figures import ArmTotals, RunData
from proxy.canary._strata import Group, MetricCells, lone_sums
from proxy.config import Canary
from proxy.reports import UnitSums, always_valid, proportion_estimate

HOUR = 3600.0


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k of n (scipy's beta quantiles)."""
    from scipy.stats import beta

    a = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return low, high


def make_canary(**over: Any) -> Canary:
    data: dict[str, Any] = {"baseline": "base", "candidate": "cand", "stages": [1, 5, 25, 50, 100],
                            "min_samples": 200, "success_metric": "resolved", "guardrails": {}}
    data.update(over)
    return Canary.model_validate(data)


def _period_of(changes: list[tuple[float, float]], t: float, stratum_hours: float) -> int | None:
    cut = periods(changes, t + 1e-6, stratum_hours=stratum_hours)
    return cut[-1].index if cut and cut[-1].start <= t else None


@dataclasses.dataclass
class Outcome:
    """How one simulated run ended, and the decisions on the way."""

    decisions: list[Decision]
    pooled_rollback: bool = False  # what pooling every period's counts (the old controller) would have done

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    @property
    def rolled_back(self) -> bool:
        return self.last.action == "rollback"

    @property
    def promoted(self) -> bool:
        return any(d.action in ("promote", "promoted") for d in self.decisions)


def run_counts(canary: Canary, seed: int, *, hours: int, look_every: int, outcomes_per_hour: int,
               p_base: Callable[[float], float], p_cand: Callable[[float], float],
               alpha: float = 0.05) -> Outcome:
    """Independent outcomes (every request its own unit). ``p_*(hour)``: the success rate at that hour."""
    rng = np.random.default_rng(seed)
    stage = float(canary.stages[0])
    changes = [(0.0, stage)]
    acc: dict[tuple[int, int], list[float]] = {}
    decisions: list[Decision] = []
    pooled = [0, 0, 0, 0]  # s_b, n_b, s_c, n_c over every period (the old, pooled figures)
    pooled_rollback = False
    stage_start = 0.0
    for h in range(hours):
        t = (h + 0.5) * HOUR
        period = _period_of(changes, t, canary.stratum_hours)
        n_c = int(rng.binomial(outcomes_per_hour, stage / 100.0))
        n_b = outcomes_per_hour - n_c
        s_b = int(rng.binomial(n_b, p_base(h + 0.5)))
        s_c = int(rng.binomial(n_c, p_cand(h + 0.5)))
        if period is not None:
            for arm, (s, n) in enumerate(((s_b, n_b), (s_c, n_c))):
                a = acc.setdefault((period, arm), [0, 0])
                a[0] += n
                a[1] += s
            pooled = [pooled[0] + s_b, pooled[1] + n_b, pooled[2] + s_c, pooled[3] + n_c]
        if (h + 1) % look_every:
            continue
        now = (h + 1) * HOUR
        cut = periods(changes, now, stratum_hours=canary.stratum_hours)
        lone = {k: lone_sums(n, s, s) for k, (n, s) in acc.items()}
        totals = tuple(ArmTotals(requests=sum(n for (p, a), (n, s) in acc.items() if a == arm),
                                 outcomes=sum(n for (p, a), (n, s) in acc.items() if a == arm),
                                 successes=sum(s for (p, a), (n, s) in acc.items() if a == arm)) for arm in (0, 1))
        data = RunData(cut, MetricCells("ratio", {}, lone), MetricCells("ratio"), MetricCells("ratio"),
                       MetricCells("mean"), totals, {k: n for k, (n, s) in acc.items()})  # type: ignore[arg-type]
        d = decide(canary, stage, canary_figures(data, stage_start, now), alpha=alpha)
        decisions.append(d)
        if not pooled_rollback and min(pooled[1], pooled[3]) > 0:
            est = proportion_estimate(pooled[0], pooled[1], pooled[2], pooled[3])
            pooled_rollback = always_valid(est, confidence=1 - d.figures["alpha_rollback"]).high < -d.figures["margin"]
        if d.action in ("rollback", "promoted"):
            break
        if d.action == "promote":
            stage, stage_start = d.to_stage, now
            changes.append((now, stage))
            if stage >= 100:
                break
    return Outcome(decisions, pooled_rollback)


@dataclasses.dataclass
class Users:
    """Sticky users and their requests: per user a bucket, a guard-failure rate, a success rate, a latency
    level; per request a time (hours) and the user."""

    bucket: np.ndarray
    p_guard: np.ndarray
    p_success: np.ndarray
    log_latency: np.ndarray
    t: np.ndarray
    user: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, users: int, hours: float, *, per_user: tuple[int, int] = (10, 30),
             guard: tuple[float, float] = (0.05, 0.05), success: tuple[float, float] = (0.6, 0.2),
             latency_sd: float = 0.5) -> Users:
        """``guard`` / ``success``: (mean, sd) of the users' rates (beta distributed): user-level variation."""

        def beta(mean: float, sd: float, n: int) -> np.ndarray:
            k = mean * (1 - mean) / sd**2 - 1
            return rng.beta(mean * k, (1 - mean) * k, size=n)

        count = rng.integers(per_user[0], per_user[1] + 1, size=users)
        user = np.repeat(np.arange(users), count)
        t = rng.uniform(0.0, hours, size=user.size)
        order = np.argsort(t)
        return cls(rng.integers(0, 10_000, size=users), beta(*guard, users), beta(*success, users),
                   rng.normal(math.log(800.0), latency_sd, size=users), t[order], user[order])


def run_users(canary: Canary, seed: int, users: Users, *, hours: int, look_every: int,
              latency: Callable[[np.random.Generator, int], np.ndarray] | None = None,
              clustered: bool = True, alpha: float = 0.05) -> Outcome:
    """Sticky users: at each look the cells are per (period, arm, user). ``latency(rng, n)``: per request,
    ln(latency) noise around the user's level (None: normal, sd 1). ``clustered=False`` treats every request
    as its own unit (the old, request-level analysis) for a contrast. ``Outcome.pooled_rollback`` here: the
    old latency rule — the run's p95 ratio above ``max_ratio`` with ``min_samples`` requests per arm — at
    any look."""
    max_ratio = canary.guardrails.latency_p95_ms.max_ratio if canary.guardrails.latency_p95_ms else None
    seen: list[list[np.ndarray]] = [[], []]
    old_rule = False
    rng = np.random.default_rng(seed)
    n_users = users.bucket.size
    stage = float(canary.stages[0])
    changes = [(0.0, stage)]
    stage_start = 0.0
    # per (period, arm): [requests, guard failures, outcomes, successes, latency n, Σ ln latency] per user
    acc: dict[tuple[int, int], np.ndarray] = {}
    lone: dict[tuple[int, int], list[float]] = {}
    decisions: list[Decision] = []
    done = 0
    for look in range(1, hours // look_every + 1):
        now_h = look * look_every
        upto = int(np.searchsorted(users.t, now_h, side="right"))
        t, u = users.t[done:upto], users.user[done:upto]
        done = upto
        cand = users.bucket[u] >= 10_000 * (1 - stage / 100.0)  # the gateway's nested buckets
        guard = rng.random(u.size) < users.p_guard[u]
        success = rng.random(u.size) < users.p_success[u]
        noise = latency(rng, u.size) if latency is not None else rng.normal(0.0, 1.0, size=u.size)
        log_lat = users.log_latency[u] + noise
        cut = periods(changes, now_h * HOUR, stratum_hours=canary.stratum_hours)
        starts = np.array([p.start for p in cut]) / HOUR
        ends = np.array([p.end for p in cut]) / HOUR
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = (idx >= 0) & (t < ends[np.clip(idx, 0, None)]) if cut else np.zeros(t.size, dtype=bool)
        for p in np.unique(idx[ok]):
            for arm in (0, 1):
                sel = ok & (idx == p) & (cand == bool(arm))
                if not sel.any():
                    continue
                if clustered:
                    a = acc.setdefault((int(p), arm), np.zeros((6, n_users)))
                    for row, values in enumerate((np.ones(sel.sum()), guard[sel], np.ones(sel.sum()), success[sel],
                                                  np.ones(sel.sum()), log_lat[sel])):
                        np.add.at(a[row], u[sel], values)
                else:
                    a = lone.setdefault((int(p), arm), [0.0] * 5)
                    for i, v in enumerate((sel.sum(), guard[sel].sum(), success[sel].sum(),
                                           log_lat[sel].sum(), (log_lat[sel] ** 2).sum())):
                        a[i] += float(v)
        if max_ratio is not None and not old_rule:
            for arm in (0, 1):
                seen[arm].append(log_lat[cand == bool(arm)])
            lat = [np.concatenate(x) for x in seen]
            if min(x.size for x in lat) >= canary.min_samples:
                p95 = [float(np.exp(np.quantile(x, 0.95, method="inverted_cdf"))) for x in lat]
                old_rule = p95[1] / p95[0] > max_ratio
        data = _user_data(cut, acc, lone)
        d = decide(canary, stage, canary_figures(data, stage_start * HOUR, now_h * HOUR), alpha=alpha)
        decisions.append(d)
        if d.action in ("rollback", "promoted"):
            break
        if d.action == "promote":
            stage, stage_start = d.to_stage, now_h
            changes.append((now_h * HOUR, stage))
            if stage >= 100:
                break
    return Outcome(decisions, old_rule)


def _user_data(cut: list, acc: dict[tuple[int, int], np.ndarray], lone: dict[tuple[int, int], list[float]]) -> RunData:
    success, guard, latency = {}, {}, {}
    totals = [[0, 0, 0, 0, 0.0, 0, 0.0], [0, 0, 0, 0, 0.0, 0, 0.0]]
    by_period: dict[tuple[int, int], int] = {}
    for (p, arm), a in acc.items():
        active = np.nonzero(a[0])[0]
        m, g, n, s, ln, ls = (a[i][active] for i in range(6))
        keys = active.tolist()
        guard[(p, arm)] = Group(keys, g.tolist(), m.tolist())
        success[(p, arm)] = Group(keys, s.tolist(), n.tolist())
        latency[(p, arm)] = Group(keys, ls.tolist(), ln.tolist())
        tot = totals[arm]
        tot[0] += int(m.sum())
        tot[1] += int(g.sum())
        tot[3] += int(n.sum())
        tot[4] += float(s.sum())
        tot[5] += int(ln.sum())
        tot[6] += float(ls.sum())
        by_period[(p, arm)] = by_period.get((p, arm), 0) + int(n.sum())
    lone_success, lone_guard, lone_latency = {}, {}, {}
    for (p, arm), (n, g, s, ls, ls2) in lone.items():
        n = int(n)
        lone_guard[(p, arm)] = lone_sums(n, g, g)
        lone_success[(p, arm)] = lone_sums(n, s, s)
        lone_latency[(p, arm)] = UnitSums(n, ls, n, ls2, n, ls)
        tot = totals[arm]
        tot[0] += n
        tot[1] += int(g)
        tot[3] += n
        tot[4] += s
        tot[5] += n
        tot[6] += ls
        by_period[(p, arm)] = by_period.get((p, arm), 0) + n
    return RunData(cut, MetricCells("ratio", success, lone_success), MetricCells("ratio", guard, lone_guard),
                   MetricCells("ratio"), MetricCells("mean", latency, lone_latency),
                   (ArmTotals(*totals[0]), ArmTotals(*totals[1])), by_period)  # type: ignore[arg-type]
