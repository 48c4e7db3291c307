"""The report's scores section: per route, variant and scorer — pass rate with a Wilson interval,
the same reweighted by sampling weights (oversampled strata back to the traffic mix), judge
errors and cost, and for LLM judges whether they are trusted (calibrated against human labels).

Untrusted judges are shown, marked, and never used for a verdict. For a trusted judge the pass
rate is also given corrected for the judge's own errors (Rogan–Gladen), assuming the human labels
are right and the judge errs on these answers as it did on the human-labelled ones.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ._queries import window
from ._stats import wilson_interval

__all__ = ["judge_family_warnings", "policy_scores", "score_section", "scorer_labels"]

_SQL = """SELECT r.route, r.variant, s.scorer, s.kind, s.label, count(*), sum(s.weight), sum(s.cost_usd),
    sum(s.prompt_tokens), sum(s.completion_tokens)
FROM (SELECT record_id, scorer, kind, label, weight, cost_usd,
             {prompt_tokens} AS prompt_tokens, {completion_tokens} AS completion_tokens FROM scores) s
JOIN records r ON r.id = s.record_id
WHERE 1 = 1{w} GROUP BY 1, 2, 3, 4, 5"""

JUDGE_ERROR = "judge_error"


def pass_label(labels: list[str] | None) -> str:
    return "pass" if not labels or "pass" in labels else labels[0]


async def score_section(store: Any, *, route: str | None = None, since: float | None = None,
                        until: float | None = None, labels: dict[str, list[str]] | None = None,
                        calibrations: dict[str, Any] | None = None) -> dict[str, Any]:
    """`labels`: scorer -> its labels (the first non-failure label counts as a pass);
    `calibrations`: judge scorer -> `Calibration` (or a string saying why there is none)."""
    w, args = window("r", route, since, until)
    d = store.dialect
    rows = await store.fetch(_SQL.format(w=w, prompt_tokens=d.json_number("data", "prompt_tokens"),
                                         completion_tokens=d.json_number("data", "completion_tokens")), args)
    cells: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"kind": None, "n": 0, "passed": 0, "weight": 0.0, "weight_passed": 0.0, "errors": 0,
                 "cost_usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "labels": {}})
    for rt, variant, scorer, kind, label, n, weight, cost, pt, ct in rows:
        c = cells[(rt, variant, scorer)]
        c["kind"] = kind
        c["cost_usd"] += cost or 0.0
        c["prompt_tokens"] += pt or 0
        c["completion_tokens"] += ct or 0
        c["labels"][label] = c["labels"].get(label, 0) + n
        if label == JUDGE_ERROR:
            c["errors"] += n
            continue
        c["n"] += n
        c["weight"] += weight or 0.0
        if label == pass_label((labels or {}).get(scorer)):
            c["passed"] += n
            c["weight_passed"] += weight or 0.0
    out: dict[str, Any] = {}
    for (rt, variant, scorer), c in sorted(cells.items()):
        out.setdefault(rt, {}).setdefault(variant, {})[scorer] = _figures(c, (calibrations or {}).get(scorer))
    return out


def _figures(c: dict[str, Any], calibration: Any) -> dict[str, Any]:
    n, passed = c["n"], c["passed"]
    rate = passed / n if n else None
    low, high = wilson_interval(passed, n) if n else (None, None)
    fig: dict[str, Any] = {
        "kind": c["kind"], "n": n, "labels": c["labels"], "pass_rate": rate, "pass_rate_ci": [low, high],
        # human labels come from the review queue (rate and triggers), not from a known sampling
        # probability per item: no honest reweighting exists for them
        "pass_rate_reweighted": (c["weight_passed"] / c["weight"] if c["weight"] and c["kind"] != "human"
                                 else None),
        "judge_errors": c["errors"], "cost_usd": round(c["cost_usd"], 6),
        "tokens": {"prompt": c["prompt_tokens"], "completion": c["completion_tokens"]},
    }
    if c["kind"] == "llm_judge":
        fig.update(_trust(calibration, rate))
    return fig


def _trust(calibration: Any, rate: float | None) -> dict[str, Any]:
    if calibration is None:
        return {"trusted": False, "trust": "no calibration (no human labels for this judge)"}
    if isinstance(calibration, str):
        return {"trusted": False, "trust": calibration}
    out: dict[str, Any] = {"trusted": calibration.trusted, "trust": calibration.reason,
                           "kappa": calibration.kappa, "human_labels": calibration.n_labels}
    if calibration.trusted and rate is not None and calibration.sensitivity is not None \
            and calibration.specificity is not None:
        from proxy.scoring._calibration import corrected_pass_rate

        out["pass_rate_corrected"] = corrected_pass_rate(rate, calibration.sensitivity, calibration.specificity)
        out["correction"] = ("Rogan–Gladen: assumes the human labels are right and the judge's sensitivity and "
                             "specificity on these answers equal those measured on the human-labelled ones")
    return out


def scorer_labels(policy: Any) -> dict[str, list[str]]:
    """scorer -> its labels (pass/fail unless the policy lists others); {} without a policy."""
    if policy is None:
        return {}
    return {name: list(getattr(config, "labels", None) or ["pass", "fail"]) for name, config in policy.scorers.items()}


async def policy_scores(store: Any, policy: Any, *, route: str | None = None, since: float | None = None,
                        until: float | None = None) -> dict[str, Any]:
    """The scores section with the policy's labels, judge calibrations and same-family warnings
    (`policy` may be None: labels default to pass/fail, judges untrusted)."""
    from proxy.scoring._trust import judge_calibrations

    labels = scorer_labels(policy)
    calibrations: dict[str, Any] = {}
    warnings: list[str] = []
    if policy is not None:
        calibrations = dict(await judge_calibrations(store, policy))
        warnings = judge_family_warnings(policy)
    section = await score_section(store, route=route, since=since, until=until, labels=labels,
                                  calibrations=calibrations)
    budget = None
    if policy is not None and policy.budgets.judge_usd_per_day is not None:
        from proxy.scoring._judge import JudgeBudget
        from proxy.scoring._trust import judge_spent_today

        budget = JudgeBudget(policy.budgets.judge_usd_per_day, spent_today=await judge_spent_today(store)).state()
        if budget["scale"] < 1.0:
            warnings.append(f"judge budget: ${budget['spent_today_usd']:.2f} of ${budget['usd_per_day']:.2f} spent "
                            f"today; judge sampling rates are scaled by {budget['scale']:.2f} until "
                            f"{budget['day']} ends (UTC)")
    return {"routes": section, "warnings": warnings, "judge_budget": budget}


def judge_family_warnings(policy: Any) -> list[str]:
    """A judge of the same model family as a variant it judges is biased towards it: say so."""
    from proxy.scoring._judge import same_family

    out = []
    for route_name, route in policy.routes.items():
        judged = [(v, policy.models[v]) for v in route.variants if v in policy.models]
        for scorer in route.scorers:
            config = policy.scorers.get(scorer)
            if config is None or config.kind != "llm_judge":
                continue
            for variant in same_family(policy.models[config.model], judged):
                out.append(f"judge '{scorer}' ({policy.models[config.model].model}) is of the same model family as "
                           f"variant '{variant}' of route '{route_name}' that it judges: use a judge of another family")
    return out
