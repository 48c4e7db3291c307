"""Judge calibration from the store: each LLM judge's labels against human labels on the same records."""

from __future__ import annotations

from typing import Any

from proxy.scoring._calibration import Calibration, calibrate

__all__ = ["judge_calibrations", "judge_pairs", "judge_spent_today"]

_DAY = 86400.0


async def judge_spent_today(store: Any, now: float | None = None) -> float:
    """What judges cost since midnight UTC, from the stored scores (seeds a process's budget)."""
    import time

    midnight = ((now if now is not None else time.time()) // _DAY) * _DAY
    rows = await store.fetch("SELECT coalesce(sum(cost_usd), 0) FROM scores WHERE kind = 'llm_judge' "
                             "AND created_at >= ?", [midnight])
    return float(rows[0][0]) if rows else 0.0

# Only items that entered the review queue by the reviewer's random `rate` count: items pulled in by
# triggers (low confidence, disagreement with a rule) are where the judge errs most, so counting them
# would understate its accuracy (the demo shows it: 8.7% measured vs 3% true error with them).
_PAIRS = """SELECT j.label, h.label FROM scores j
JOIN scores h ON h.record_id = j.record_id AND h.kind = 'human'
JOIN reviews v ON v.id = h.id AND v.reason = 'rate'
WHERE j.scorer = ? AND j.kind = 'llm_judge' AND j.label != 'judge_error'"""


async def judge_pairs(store: Any, scorer: str) -> list[tuple[str, str]]:
    """(judge label, human label) for every record both labelled, among the records that entered
    the review queue at random (by a human scorer's `rate`)."""
    return [(j, h) for j, h in await store.fetch(_PAIRS, [scorer])]


async def judge_calibrations(store: Any, policy: Any, only: str | None = None) -> dict[str, Calibration | str]:
    """Calibration per llm_judge scorer of the policy; a string says why one could not be computed
    (e.g. human labels outside the judge's labels)."""
    out: dict[str, Calibration | str] = {}
    for name, config in policy.scorers.items():
        if config.kind != "llm_judge" or (only is not None and name != only):
            continue
        pairs = await judge_pairs(store, name)
        try:
            out[name] = calibrate(name, pairs, config.labels, config.trust_after)
        except ValueError as exc:
            out[name] = str(exc)
    return out
