"""The replay's summary: a pure function of the item results (and the policy's taxonomy).

Figures, and why they are computed this way:

- **Pass rates** of baseline and candidate over the same items, each with a Wilson 95% interval
  (`proxy.reports.wilson_interval`; honest at 0% and 100% and for small corpora).
- **Paired difference**: both sides answered the *same* requests, so the test is McNemar's on the
  discordant pairs (`proxy.reports.mcnemar`: b = regressions, c = improvements; exact binomial below
  25 discordant pairs, chi-square with continuity correction above) — far more sensitive than
  comparing two independent rates.
- **Regressions / improvements by class**: the candidate's failure classes on items the baseline
  passed, and the baseline's on items the candidate fixed (guard taxonomy classes, failing scores'
  taxonomy, `http_<status>` / `timeout` / … for answers that never came).
- **New critical failures**: items where the candidate has a class of severity `critical` (the
  policy's effective taxonomy) that the baseline's answer does not have.
- **Latency and cost**: mean / p50 / p95 (nearest rank) per side; answers served from a cache are
  left out (a cache hit says nothing about the model). Candidate minus baseline.
- **Drift**: the (served model, system fingerprint) pairs seen per variant in the recorded
  baselines, and per model in this replay's answers; more than one pair is drift.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxy.replay._model import RECORDED, ItemResult, Side
from proxy.reports import mcnemar, wilson_interval
from proxy.reports._stats import MCNEMAR_EXACT_BELOW

__all__ = ["SEVERITY_RANK", "WORST_EXAMPLES", "percentile", "summarize"]

WORST_EXAMPLES = 5
SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (as the reports use): the smallest value with at least q% at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _rate(passes: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(passes, n)
    return {"passes": passes, "n": n, "rate": passes / n if n else None, "ci95": [low, high]}


def _stats(values: Iterable[float]) -> dict[str, Any]:
    data = sorted(values)
    return {"n": len(data), "mean": sum(data) / len(data) if data else None,
            "p50": percentile(data, 50), "p95": percentile(data, 95)}


def _delta(a: Mapping[str, Any], b: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: (b[k] - a[k]) if a.get(k) is not None and b.get(k) is not None else None for k in keys}


def _cost(sides: Iterable[Side]) -> dict[str, Any]:
    """Cost per answered item; an unknown cost (no price for the model) is counted, never taken as 0."""
    answered = [s for s in sides if s.answered and not s.cache_hit]
    known = [s.cost_usd for s in answered if s.cost_usd is not None]
    return {**_stats(known), "total": sum(known) if known else None,
            "unknown": sum(1 for s in answered if s.cost_usd is None)}


def _severity(classes: Iterable[str], taxonomy: Mapping[str, str]) -> str | None:
    found = [taxonomy[c] for c in classes if c in taxonomy]
    return min(found, key=lambda s: SEVERITY_RANK.get(s, 3)) if found else None


def _pairs(groups: Mapping[str, Counter[tuple[str | None, str | None]]]) -> dict[str, Any]:
    out = {}
    for name, counts in sorted(groups.items()):
        pairs = [{"model_served": m, "system_fingerprint": fp, "items": n} for (m, fp), n in counts.most_common()]
        out[name] = {"pairs": pairs, "drift": len(pairs) > 1}
    return out


def _drift(results: Sequence[ItemResult]) -> dict[str, Any]:
    recorded: dict[str, Counter[tuple[str | None, str | None]]] = defaultdict(Counter)
    replayed: dict[str, Counter[tuple[str | None, str | None]]] = defaultdict(Counter)
    for r in results:
        if r.recorded_served != (None, None):
            recorded[r.variant][r.recorded_served] += 1
        for side in (r.baseline, r.candidate):
            if side.source != RECORDED and side.answered:
                replayed[side.source][(side.model_served, side.system_fingerprint)] += 1
    rec, rep = _pairs(recorded), _pairs(replayed)
    return {"recorded": rec, "replayed": rep,
            "drifted": sorted([f"recorded:{n}" for n, v in rec.items() if v["drift"]]
                              + [f"replayed:{n}" for n, v in rep.items() if v["drift"]])}


def _worst(regressions: Sequence[ItemResult], taxonomy: Mapping[str, str]) -> list[dict[str, Any]]:
    def detail(side: Side) -> str:
        if side.error:
            return side.error[:200]
        if side.guards:
            g = side.guards[0]
            return f"{g.get('guard')}: {g.get('detail') or ''}"[:200]
        failing = [s for s in side.scores if s.passed is False]
        return f"{failing[0].scorer}: {failing[0].reason or failing[0].label}"[:200] if failing else ""

    ranked = []
    for r in regressions:
        classes = r.candidate.classes(r.ignored_scorers)
        severity = _severity(classes, taxonomy)
        ranked.append((SEVERITY_RANK.get(severity or "", 3), r.record_id, r, classes, severity))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [{"record_id": r.record_id, "stratum": r.stratum, "classes": classes, "severity": severity,
             "detail": detail(r.candidate), "excerpt": r.candidate.excerpt}
            for _, _, r, classes, severity in ranked[:WORST_EXAMPLES]]


def summarize(results: Sequence[ItemResult], *, items: int, taxonomy: Mapping[str, str], corpus: str,
              variant: str, baseline: str, judge: bool, notes: Sequence[str] = (),
              run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every figure of the comparison, JSON-ready. `items`: the corpus's item count (results may be
    fewer when a run was interrupted: the summary then says it is partial)."""
    n = len(results)
    base_passes = sum(1 for r in results if r.baseline_passed)
    cand_passes = sum(1 for r in results if r.candidate_passed)
    kinds = Counter(r.kind for r in results)
    regressions = [r for r in results if r.kind == "regression"]
    improvements = [r for r in results if r.kind == "improvement"]
    b, c = len(regressions), len(improvements)
    statistic, p_value = mcnemar(b, c)

    new_critical = []
    for r in results:
        ignore = r.ignored_scorers
        had = set(r.baseline.classes(ignore))
        new = [cls for cls in r.candidate.classes(ignore) if taxonomy.get(cls) == "critical" and cls not in had]
        if new:
            new_critical.append({"record_id": r.record_id, "stratum": r.stratum, "classes": new,
                                 "excerpt": r.candidate.excerpt})

    errors = [r for r in results if r.error]
    latency: dict[str, Any] = {side: _stats(s.latency_ms for s in sides if s.latency_ms is not None and not s.cache_hit)
               for side, sides in (("baseline", [r.baseline for r in results]),
                                   ("candidate", [r.candidate for r in results]))}
    latency["delta"] = _delta(latency["baseline"], latency["candidate"], ("mean", "p50", "p95"))
    latency["cache_hits_excluded"] = sum(1 for r in results for s in (r.baseline, r.candidate) if s.cache_hit)
    cost = {"baseline": _cost(r.baseline for r in results), "candidate": _cost(r.candidate for r in results)}
    cost["delta"] = _delta(cost["baseline"], cost["candidate"], ("mean", "p50", "p95", "total"))

    judge_scores = [s for r in results for side in (r.baseline, r.candidate) for s in side.scores
                    if s.kind == "llm_judge"]
    judge_costs = [s.cost_usd for s in judge_scores if s.cost_usd is not None]
    judge_errors = sum(1 for s in judge_scores if s.passed is None)

    all_notes = list(notes)
    if n < items:
        all_notes.append(f"partial: {n} of {items} items have a result (run the same command again to finish)")
    streamed = sum(1 for r in results if r.stream)
    if streamed:
        all_notes.append(f"{streamed} item(s) were streamed originally and were replayed non-streaming "
                         "(compared on the assembled answer; time to first token is not compared)")
    if judge_errors:
        all_notes.append(f"{judge_errors} judge call(s) gave no verdict: that judge is left out of both sides' "
                         "pass for those items")
    if baseline == RECORDED and latency["baseline"]["n"]:
        all_notes.append("recorded latency is the gateway's (production load, streaming); the candidate's is "
                         "this replay's direct call: compare with care")

    return {
        "kind": "sluicegate.replay.summary",
        "corpus": corpus, "variant": variant, "baseline": baseline,
        "items": items, "results": n, "complete": n >= items,
        "pass_rate": {"baseline": _rate(base_passes, n), "candidate": _rate(cand_passes, n)},
        "difference": (cand_passes - base_passes) / n if n else None,
        "paired": {"both_pass": kinds["both_pass"], "both_fail": kinds["both_fail"], "regressions": b,
                   "improvements": c,
                   "test": "mcnemar_exact" if b + c < MCNEMAR_EXACT_BELOW else "mcnemar_chi2",
                   "statistic": statistic, "p_value": p_value},
        "regressions_by_class": dict(Counter(cls for r in regressions
                                             for cls in r.candidate.classes(r.ignored_scorers)).most_common()),
        "improvements_by_class": dict(Counter(cls for r in improvements
                                              for cls in r.baseline.classes(r.ignored_scorers)).most_common()),
        "regressions_by_stratum": dict(Counter(r.stratum for r in regressions).most_common()),
        "new_critical": {"count": len(new_critical), "items": new_critical},
        "errors": {"count": len(errors), "by_class": dict(Counter(r.candidate.error_class or "error"
                                                                  for r in errors).most_common())},
        "latency_ms": latency,
        "cost_usd": cost,
        "judge": {"enabled": judge, "calls": len(judge_scores), "errors": judge_errors,
                  "cost_usd": sum(judge_costs) if judge_costs else None},
        "worst": _worst(regressions, taxonomy),
        "drift": _drift(results),
        "notes": all_notes,
        "run": dict(run or {}),
    }
