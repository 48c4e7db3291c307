"""The report's shadow section: each shadow model against the primary it shadowed, pair by pair.

A shadow record shares its primary's `request_id` (attempt 0, `attempt_reason: shadow`), so
every shadowed request is a matched pair: the same input, answered by both. Binary results
compared per pair: "answered with no guard failure", and each scorer's pass/fail where both
answers were scored. Paired binary results call for McNemar's test (only the discordant pairs
carry information), not a two-sample test that would throw the pairing away.

Downstream outcomes are not compared: the user only ever saw the primary's answer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ._queries import window
from ._scores import JUDGE_ERROR, pass_label
from ._stats import mcnemar, wilson_interval

__all__ = ["shadow_section"]

_PAIRS = """SELECT p.route, p.variant, s.variant,
    p.status = 200 AND coalesce(p.guard_failures, 0) = 0,
    s.status = 200 AND coalesce(s.guard_failures, 0) = 0,
    s.status = 200, count(*)
FROM records s JOIN records p ON p.request_id = s.request_id AND p.served = 1
WHERE s.attempt = 0 AND s.attempt_reason = 'shadow'{w}
GROUP BY 1, 2, 3, 4, 5, 6"""

_SCORED_PAIRS = """SELECT p.route, p.variant, s.variant, sp.scorer, sp.label, ss.label, count(*)
FROM records s JOIN records p ON p.request_id = s.request_id AND p.served = 1
JOIN scores sp ON sp.record_id = p.id
JOIN scores ss ON ss.record_id = s.id AND ss.scorer = sp.scorer
WHERE s.attempt = 0 AND s.attempt_reason = 'shadow'{w}
GROUP BY 1, 2, 3, 4, 5, 6"""

def _comparison(table: dict[tuple[bool, bool], int]) -> dict[str, Any]:
    """Figures of one paired comparison from its 2×2 table (primary pass?, shadow pass?) → pairs."""
    both, primary_only = table.get((True, True), 0), table.get((True, False), 0)
    shadow_only, neither = table.get((False, True), 0), table.get((False, False), 0)
    n = both + primary_only + shadow_only + neither
    statistic, p = mcnemar(primary_only, shadow_only)
    primary_pass, shadow_pass = both + primary_only, both + shadow_only
    return {
        "pairs": n, "both_pass": both, "primary_only_pass": primary_only, "shadow_only_pass": shadow_only,
        "neither_pass": neither,
        "primary_pass_rate": primary_pass / n if n else None,
        "shadow_pass_rate": shadow_pass / n if n else None,
        "primary_interval": list(wilson_interval(primary_pass, n)),
        "shadow_interval": list(wilson_interval(shadow_pass, n)),
        "diff": (shadow_pass - primary_pass) / n if n else None,
        "test": "mcnemar_exact" if primary_only + shadow_only < 25 else "mcnemar_chi2",
        "statistic": statistic, "p_value": p,
    }


async def shadow_section(store: Any, *, route: str | None = None, since: float | None = None,
                         until: float | None = None, labels: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """One entry per (route, primary variant, shadow variant); `labels`: scorer → its labels."""
    w, args = window("p", route, since, until)
    pairs = await store.fetch(_PAIRS.format(w=w), args)
    scored = await store.fetch(_SCORED_PAIRS.format(w=w), args)
    groups: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"shadowed": 0, "shadow_errors": 0, "guards": defaultdict(int), "scorers": defaultdict(dict)})
    for rt, primary, shadow, primary_ok, shadow_ok, answered, n in pairs:
        g = groups[(rt, primary, shadow)]
        g["shadowed"] += n
        if not answered:
            g["shadow_errors"] += n  # no answer to compare: counted, not paired
            continue
        g["guards"][(bool(primary_ok), bool(shadow_ok))] += n
    for rt, primary, shadow, scorer, label_p, label_s, n in scored:
        if JUDGE_ERROR in (label_p, label_s):
            continue  # a judge that gave no verdict is missing, never a pass or a fail
        passed = pass_label((labels or {}).get(scorer))
        table = groups[(rt, primary, shadow)]["scorers"][scorer]
        key = (label_p == passed, label_s == passed)
        table[key] = table.get(key, 0) + n
    out = []
    for (rt, primary, shadow), g in sorted(groups.items()):
        out.append({
            "route": rt, "primary": primary, "shadow": shadow, "shadowed": g["shadowed"],
            "shadow_errors": g["shadow_errors"],
            "guards": _comparison(g["guards"]),
            "scorers": {name: _comparison(table) for name, table in sorted(g["scorers"].items())},
        })
    return out
