"""Planning a canary: per stage, the outcomes each arm still needs and the time that should take.

For the current stage an arm needs the larger of

* what the per-stage sample gate lacks (``min_samples`` outcomes of this stage), and
* what the non-inferiority test lacks at the configured margin, unless it already passes:
  ``proxy.reports.outcomes_needed`` at the stage's actual allocation (the candidate's share of outcomes is
  the stage percent), with the candidate as good as the baseline's observed rate, for 80 % power — the
  outcomes per arm of the whole run, less what the run already has (the test reads the whole run,
  stratified by period).

A later stage only needs its gate: by then the test has read every earlier stage. The expected time uses the
current stage's rate of outcomes (both arms together, since the stage began), split by each stage's
allocation. Planning assumes independent outcomes; with heavy users the test needs more (its variance is
the cluster-robust one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy.reports import outcomes_needed

__all__ = ["POWER", "stage_plan"]

POWER = 0.8


def _hours(needed: tuple[int, int], rate_per_s: float | None, share: float) -> float | None:
    if not any(needed):
        return 0.0
    if not rate_per_s:
        return None
    return max(needed[0] / (rate_per_s * (1.0 - share)), needed[1] / (rate_per_s * share)) / 3600.0


def stage_plan(stages: Sequence[float], stage: float, *, min_samples: int, margin: float, alpha: float,
               p_baseline: float | None, run_outcomes: tuple[int, int], stage_outcomes: tuple[int, int],
               stage_elapsed_s: float | None, non_inferior: bool = False) -> list[dict[str, Any]]:
    """One row per stage from the current one to the last below 100 %: outcomes still needed per arm, hours
    that takes at the current rate (None: no rate yet), and hours from now until that stage is done.
    ``non_inferior``: the test already passes on the run so far (only the sample gate is left)."""
    rate = (sum(stage_outcomes) / stage_elapsed_s
            if stage_elapsed_s and stage_elapsed_s > 0 and sum(stage_outcomes) > 0 else None)
    p = 0.5 if p_baseline is None else min(max(p_baseline, 0.0), 1.0)
    rows: list[dict[str, Any]] = []
    from_now: float | None = 0.0
    for s in [x for x in stages if stage <= x < 100.0]:
        share = s / 100.0
        if s == stage:
            gate = (max(min_samples - stage_outcomes[0], 0), max(min_samples - stage_outcomes[1], 0))
            test = (0, 0)
            if margin > 0 and not non_inferior:
                test = outcomes_needed(p, margin, allocation=share, p_candidate=p, alpha=alpha,
                                       power=POWER).more(*run_outcomes)
            needed = (max(gate[0], test[0]), max(gate[1], test[1]))
        else:
            gate = test = needed = (min_samples, min_samples)
        hours = _hours(needed, rate, share)
        from_now = None if from_now is None or hours is None else from_now + hours
        rows.append({"stage": float(s), "baseline_outcomes_needed": needed[0],
                     "candidate_outcomes_needed": needed[1], "for_sample_gate": list(gate),
                     "for_non_inferiority": list(test), "hours": hours, "hours_from_now": from_now})
    return rows
