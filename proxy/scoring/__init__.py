"""Asynchronous scoring: which records are scored, by which scorers, and how results are weighted."""

from __future__ import annotations

from typing import Any

from proxy.scoring._judge import JudgeBudget, LLMJudge
from proxy.scoring._queue import Delivery, MemoryQueue, ScoringQueue
from proxy.scoring._rules import RuleCheck
from proxy.scoring._sampler import SampleDecision, SampleFacts, Sampler, draw, facts_from_record, reweight
from proxy.scoring._score import Score, ScoreInput, answer_text
from proxy.scoring._tail import StoreWorker
from proxy.scoring._worker import Scoring, build_scorers, score_row

__all__ = [
    "Delivery", "JudgeBudget", "LLMJudge", "MemoryQueue", "RuleCheck", "SampleDecision", "SampleFacts",
    "Sampler", "Score", "ScoreInput", "Scoring", "ScoringQueue", "StoreWorker", "answer_text", "build_scorers", "build_scoring",
    "draw", "facts_from_record", "reweight", "score_row",
]


def build_scoring(policy: Any, providers: dict[str, Any], recorder: Any, store: Any = None,
                  spent_today: float = 0.0) -> Scoring | None:
    """The server's scoring (in-process queue, background worker), or None when no route has scorers.
    `spent_today`: judge spend already in the store today (the budget holds across restarts)."""
    if not any(route.scorers for route in policy.routes.values()):
        return None
    budget = JudgeBudget(policy.budgets.judge_usd_per_day, spent_today=spent_today)
    scorers = build_scorers(policy, providers, budget)
    scoring = Scoring(policy, scorers, recorder.submit, budget=budget, store=store, flush=recorder.flush)
    return scoring if scoring.active else None
