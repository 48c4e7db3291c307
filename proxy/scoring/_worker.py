"""Scoring: the sampling decision on the request path, the scorers in a background worker.

Request path: `Scoring.offer(record)` — a deterministic sampling decision (one BLAKE2b hash) and a
non-blocking `queue.offer`. Nothing else: no scorer, no store, no judge runs there.

Worker: claims batches, runs the route's scorers on each record *as captured* (the route's capture
mode applied first: a judge never sees what the store may not keep; `refs_only` records have no
text and are skipped, counted), hands each `Score` to the sink (the recorder: scores travel the
same never-blocking path as records, spill and replay included), then acks. A job whose scoring
raises is not acked and is delivered again after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import orjson
import structlog

from proxy.records import Record
from proxy.records._seal import seal
from proxy.scoring._judge import JudgeBudget, LLMJudge
from proxy.scoring._queue import Delivery, MemoryQueue, ScoringQueue
from proxy.scoring._rules import RuleCheck
from proxy.scoring._sampler import SampleDecision, Sampler, draw, facts_from_record
from proxy.scoring._score import JUDGE_ERROR, Score, ScoreInput, answer_text

__all__ = ["Job", "LateJob", "Scoring", "StoredJob", "build_scorers", "negative_feedback", "row_input", "score_row"]

log = structlog.get_logger("sluicegate.scoring")

Scorer = RuleCheck | LLMJudge


def build_scorers(policy: Any, providers: Mapping[str, Any], budget: JudgeBudget | None) -> dict[str, Scorer]:
    """The policy's rule and llm_judge scorers (human review is served by the review queue)."""
    out: dict[str, Scorer] = {}
    for name, config in policy.scorers.items():
        if config.kind == "rule":
            out[name] = RuleCheck(config)
        elif config.kind == "llm_judge":
            judge = policy.models[config.model]
            adapter = providers.get(judge.provider)
            if adapter is None:
                raise ValueError(f"scorer '{name}': the judge's provider '{judge.provider}' has no adapter here")
            out[name] = LLMJudge(config, judge, adapter, budget=budget)
    return out


def score_row(score: Score) -> dict[str, Any]:
    """A score as the store and the spill file take it (marked, so a replay tells it from a record)."""
    return {**score.to_dict(), "row": "score"}


LOW_CONFIDENCE = 0.6  # a judge verdict below this confidence is "low confidence" for review triggers


def review_reason(name: str, config: Any, record: Any, scores: list[Score]) -> str | None:
    """Why a record goes to the human review queue (None: it does not). Checked in this order:
    the scorer's own rate (a deterministic draw per record), then the `also` triggers."""
    if draw(record.id, salt=f"review:{name}") < config.rate:
        return "rate"
    judges = [s for s in scores if s.kind == "llm_judge"]
    rules = [s for s in scores if s.kind == "rule"]
    triggers = {
        "judge_error": lambda: any(s.label == JUDGE_ERROR for s in judges),
        "judge_low_confidence": lambda: any(s.confidence is not None and s.confidence < LOW_CONFIDENCE
                                            for s in judges),
        "judge_disagrees_with_rule": lambda: any(j.label != r.label for j in judges for r in rules
                                                 if j.label != JUDGE_ERROR),
        "critical": lambda: any(not g.get("passed", False) and g.get("severity") == "critical"
                                for g in record.guards if isinstance(g, dict)),
    }
    for trigger in config.also:
        check = triggers.get(trigger)
        if check is not None and check():
            return trigger
    return None


def review_row(scorer: str, record: Any, reason: str) -> dict[str, Any]:
    return {"row": "review", "id": f"{record.id}:{scorer}", "record_id": record.id, "request_id": record.request_id,
            "route": record.route, "variant": record.variant, "scorer": scorer, "reason": reason,
            "entered_at": time.time()}


def negative_feedback(outcome: Any, metric: Any) -> frozenset[str]:
    """What a later outcome tells the sampler: `{metric name, "negative"}` when a boolean outcome is
    bad by its metric's goal (0 for `maximize`, 1 for `minimize`), else nothing. Sampling rules match
    it with `feedback: <metric>` or `feedback: negative`."""
    if metric is None or getattr(metric, "type", None) != "boolean" or outcome.request_id is None:
        return frozenset()
    bad = 0.0 if metric.goal == "maximize" else 1.0
    return frozenset({outcome.metric, "negative"}) if outcome.value == bad else frozenset()


_LATE_SQL = "SELECT data FROM records WHERE request_id = ? AND served = 1 ORDER BY attempt DESC LIMIT 1"
_BY_ID_SQL = "SELECT data FROM records WHERE id = ?"
RECORD_WAIT_S = 2.0  # how long after its offer a job may wait for its record to reach the store


class LateJob:
    """Feedback arrived for a request: sample it again with that feedback (scored once at most)."""

    __slots__ = ("request_id", "feedback", "offered_at")

    def __init__(self, request_id: str, feedback: frozenset[str], offered_at: float | None = None) -> None:
        self.request_id = request_id
        self.feedback = feedback
        self.offered_at = time.time() if offered_at is None else offered_at  # wall clock: see RECORD_WAIT_S


class Job:
    """What the worker needs about one sampled record."""

    __slots__ = ("record", "weight", "rule")

    def __init__(self, record: Record, weight: float, rule: str) -> None:
        self.record = record
        self.weight = weight
        self.rule = rule


class StoredJob:
    """A sampled record known by its id: a `Job` that crossed a process boundary (a durable queue
    carries ids, not records). The worker loads the row from the store; `offered_at` (wall clock)
    bounds how long it waits for a record the gateway's recorder has not written yet."""

    __slots__ = ("record_id", "request_id", "route", "weight", "rule", "offered_at")

    def __init__(self, record_id: str, request_id: str, route: str, weight: float, rule: str,
                 offered_at: float) -> None:
        self.record_id = record_id
        self.request_id = request_id
        self.route = route
        self.weight = weight
        self.rule = rule
        self.offered_at = offered_at


def score_input(job: Job) -> ScoreInput | None:
    """The record as captured, ready for scorers; None when the capture keeps no text."""
    if job.record.capture == "refs_only":
        return None
    return row_input(seal(job.record), job.weight)


def row_input(row: Mapping[str, Any], weight: float) -> ScoreInput | None:
    """Scorer input from a sealed record row (as stored); None when the capture keeps no text."""
    if row.get("capture") == "refs_only":
        return None
    return ScoreInput(record_id=row["id"], request_id=row["request_id"], route=row["route"], variant=row["variant"],
                      request=row.get("request"), answer_text=answer_text(row.get("response")),
                      answer=row.get("response"), retrieval_ids=tuple(row.get("retrieval_ids") or ()), weight=weight)


class Scoring:
    def __init__(self, policy: Any, scorers: Mapping[str, Scorer], sink: Callable[[Any], None], *,
                 queue: ScoringQueue | None = None, budget: JudgeBudget | None = None, store: Any = None,
                 flush: Callable[[], Any] | None = None,
                 batch_size: int = 16, visibility_s: float = 120.0) -> None:
        self._routes = {name: [s for s in route.scorers if s in scorers] for name, route in policy.routes.items()}
        self._humans = {name: [(s, policy.scorers[s]) for s in route.scorers
                               if s in policy.scorers and policy.scorers[s].kind == "human"]
                        for name, route in policy.routes.items()}
        self._samplers = {name: Sampler(route.sampling) for name, route in policy.routes.items()
                          if self._routes[name] or self._humans[name]}
        self._scorers = scorers
        self._sink = lambda score: sink(score_row(score))
        self._review_sink = sink
        self.queue: ScoringQueue = queue if queue is not None else MemoryQueue()
        self._budget = budget
        self._batch_size = batch_size
        self._visibility_s = visibility_s
        self._by_scorer: dict[str, int] = {}
        self._counts = {"sampled": 0, "not_sampled": 0, "refused": 0, "scored": 0, "skipped_refs_only": 0,
                        "errors": 0, "to_review": 0, "sampled_late": 0}
        self._store = store
        self._flush = flush
        self._next_full_log = 0.0

    @property
    def active(self) -> bool:
        return bool(self._samplers)

    # ------------------------------------------------------------------ request path

    def decide(self, record: Any) -> SampleDecision | None:
        """The sampling decision for a served record (or a stored row with the same attributes);
        None when its route has no scorers. Deterministic per request id."""
        sampler = self._samplers.get(record.route)
        if sampler is None:
            return None
        scale = self._budget.scale() if self._budget is not None else 1.0
        decision = sampler.decide(facts_from_record(record), scale=scale)
        self._counts["sampled" if decision.sampled else "not_sampled"] += 1
        return decision

    def offer_feedback(self, outcome: Any, metric: Any) -> None:
        """A later outcome about a request (sync, never waits): when it is negative, the request is
        queued for a second sampling decision that sees the feedback (`decide_later`)."""
        feedback = negative_feedback(outcome, metric)
        if not feedback:
            return
        if not self.queue.offer(f"late:{outcome.request_id}:{outcome.metric}", LateJob(outcome.request_id, feedback)):
            self._counts["refused"] += 1

    def decide_late(self, record: Any, feedback: frozenset[str]) -> SampleDecision | None:
        """Sampled now (with the feedback) and not before? Deterministic, so never twice."""
        sampler = self._samplers.get(record.route)
        if sampler is None:
            return None
        scale = self._budget.scale() if self._budget is not None else 1.0
        before = facts_from_record(record)
        decision = sampler.decide_later(before, facts_from_record(record, feedback=feedback), scale=scale)
        if decision is not None:
            self._counts["sampled_late"] += 1
        return decision

    def offer(self, record: Record) -> None:
        """Sample a served record for scoring (sync, never waits)."""
        decision = self.decide(record)
        if decision is None or not decision.sampled:
            return
        if not self.queue.offer(record.id, Job(record, decision.weight, decision.rule)):
            self._counts["refused"] += 1
            now = time.monotonic()
            if now >= self._next_full_log:  # at most once a second: a queue stays full for a while (Redis down)
                self._next_full_log = now + 1.0
                log.warning("scoring.queue_full", record_id=record.id, route=record.route,
                            refused=self._counts["refused"], **self.queue.stats())

    # ------------------------------------------------------------------ background worker

    async def score_one(self, delivery: Delivery) -> None:
        job = delivery.payload
        if isinstance(job, LateJob):
            await self._score_late(job)
            return
        if isinstance(job, StoredJob):
            await self._score_stored(job)
            return
        await self.score_item(job.record, score_input(job))

    async def _fetch_record(self, sql: str, key: str, offered_at: float) -> list[tuple[Any, ...]]:
        """The stored row a job names. The recorder writes in batches, so a job can outrun its record:
        flush this process's recorder, then, when the job came through a durable queue (its record may
        be another process's), poll until `offered_at + RECORD_WAIT_S` (a batch's jobs are offered close
        together, so a batch waits that long at most). Still missing (e.g. the gateway's store is down
        and it spills): LookupError, so the job is not acked and comes back after the visibility timeout."""
        rows = await self._store.fetch(sql, [key])
        if not rows and self._flush is not None:
            await self._flush()
            rows = await self._store.fetch(sql, [key])
        patient = getattr(self.queue, "durable", False)
        while not rows and patient and time.time() < offered_at + RECORD_WAIT_S:
            await asyncio.sleep(0.05)
            rows = await self._store.fetch(sql, [key])
        if not rows:
            raise LookupError(f"{key} is not in the store yet")
        return rows

    async def _score_stored(self, job: StoredJob) -> None:
        """Load the record by id and score it as stored."""
        if self._store is None:
            raise LookupError("a stored job needs a store to load its record from")
        rows = await self._fetch_record(_BY_ID_SQL, job.record_id, job.offered_at)
        row = orjson.loads(rows[0][0])
        await self.score_item(SimpleNamespace(**row), row_input(row, job.weight))

    async def _score_late(self, job: LateJob) -> None:
        if self._store is None:
            return
        rows = await self._fetch_record(_LATE_SQL, job.request_id, job.offered_at)
        row = orjson.loads(rows[0][0])
        record = SimpleNamespace(**row)
        decision = self.decide_late(record, job.feedback)
        if decision is not None:
            await self.score_item(record, row_input(row, decision.weight))

    async def score_item(self, record: Any, item: ScoreInput | None) -> None:
        """Run the route's scorers on one record (as captured) and send the scores and any review
        entry to the sink. `record`: a Record, or a stored row with the same attributes."""
        if item is None:
            self._counts["skipped_refs_only"] += 1
            return
        scores: list[Score] = []
        for name in self._routes.get(record.route, ()):
            scorer = self._scorers[name]
            score = await scorer.score(item) if isinstance(scorer, LLMJudge) else scorer.score(item)
            self._sink(score)
            scores.append(score)
            self._counts["scored"] += 1
            self._by_scorer[name] = self._by_scorer.get(name, 0) + 1
        for name, config in self._humans.get(record.route, ()):
            reason = review_reason(name, config, record, scores)
            if reason is not None:
                self._review_sink(review_row(name, record, reason))
                self._counts["to_review"] += 1

    async def run_once(self, wait_s: float = 1.0) -> int:
        """Claim one batch and score it; returns how many jobs were acked."""
        batch = await self.queue.claim(self._batch_size, visibility_s=self._visibility_s, wait_s=wait_s)
        done: list[str] = []
        for delivery in batch:
            try:
                await self.score_one(delivery)
            except Exception as exc:  # noqa: BLE001 - not acked: delivered again after the timeout
                self._counts["errors"] += 1
                log.error("scoring.job_failed", record_id=delivery.id, delivery=delivery.delivery,
                          error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            done.append(delivery.id)
        if done and self._flush is not None and getattr(self.queue, "durable", False):
            await self._flush()  # a durable queue is acked only once the scores are written (or spilled)
        await self.queue.ack(done)
        return len(done)

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must never die
                log.exception("scoring.worker_error", error=str(exc)[:300])
                await asyncio.sleep(1.0)

    def stats(self) -> dict[str, Any]:
        return {**self._counts, "by_scorer": dict(self._by_scorer), "queue": self.queue.stats(),
                "judge_budget": self._budget.state() if self._budget is not None else None}
