"""Asynchronous scoring: which records are scored, by which scorers, and how results are weighted."""

from __future__ import annotations

from typing import Any

from proxy.scoring._judge import JudgeBudget, LLMJudge
from proxy.scoring._queue import Delivery, MemoryQueue, ScoringQueue
from proxy.scoring._queue_worker import QueueWorker
from proxy.scoring._redis_queue import DEFAULT_STREAM, RedisStreamQueue, default_consumer, group_for, is_redis_url
from proxy.scoring._rules import RuleCheck
from proxy.scoring._sampler import SampleDecision, SampleFacts, Sampler, draw, facts_from_record, reweight
from proxy.scoring._score import Score, ScoreInput, answer_text
from proxy.scoring._tail import StoreWorker
from proxy.scoring._worker import Job, LateJob, Scoring, StoredJob, build_scorers, score_row

__all__ = [
    "DEFAULT_STREAM", "Delivery", "Job", "JudgeBudget", "LLMJudge", "LateJob", "MemoryQueue", "QueueWorker",
    "RedisStreamQueue", "RuleCheck", "SampleDecision", "SampleFacts", "Sampler", "Score", "ScoreInput", "Scoring",
    "ScoringQueue", "StoreWorker", "StoredJob", "answer_text", "build_scorers", "build_scoring", "default_consumer",
    "draw", "facts_from_record", "group_for", "is_redis_url", "open_queue", "reweight", "score_row",
]


def open_queue(url: str, policy: Any, *, consume: bool = True, **options: Any) -> RedisStreamQueue | None:
    """The scoring queue a `--queue` URL names: None for `memory` (Scoring's in-process default), a
    `RedisStreamQueue` for redis://, rediss:// or unix:// (`options`: its keyword arguments; the group
    defaults to one per the policy's scorer set). Not started: call `start()`."""
    if url == "memory":
        return None
    if not is_redis_url(url):
        raise ValueError(f"--queue {url!r}: expected `memory` or a redis://, rediss:// or unix:// URL")
    group = options.pop("group", None) or group_for(policy)
    return RedisStreamQueue(url, group=group, consume=consume, **options)


def build_scoring(policy: Any, providers: dict[str, Any], recorder: Any, store: Any = None,
                  spent_today: float = 0.0, queue: ScoringQueue | None = None) -> Scoring | None:
    """The server's scoring (by default an in-process queue and a background worker), or None when no
    route has scorers. `spent_today`: judge spend already in the store today (the budget holds across
    restarts). `queue`: a durable queue instead (`open_queue`); jobs then carry record ids."""
    if not any(route.scorers for route in policy.routes.values()):
        return None
    budget = JudgeBudget(policy.budgets.judge_usd_per_day, spent_today=spent_today)
    scorers = build_scorers(policy, providers, budget)
    scoring = Scoring(policy, scorers, recorder.submit, queue=queue, budget=budget, store=store,
                      flush=recorder.flush)
    return scoring if scoring.active else None
