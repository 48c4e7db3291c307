"""What a replay keeps per corpus item: each side's answer facts (`Side`) and the pair (`ItemResult`).

Pass/fail is derived, never stored as the only truth: a side passes when it was answered (HTTP 200)
with no failed guard and every scorer that gave a verdict gave its pass label. A judge that gave no
verdict (`judge_error`) on *either* side is left out of *both* sides' pass of that item — otherwise
a flaky judge call would show up as a model regression. The derived fields are written to the
results file too (for people and `jq`), and recomputed when the file is read back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["RECORDED", "ItemResult", "ScoreFact", "Side"]

RECORDED = "recorded"  # the baseline as the corpus recorded it (no call made)


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclasses.dataclass(slots=True)
class ScoreFact:
    """One scorer's verdict on one side's answer. `passed` is None when a judge gave no verdict."""

    scorer: str
    kind: str  # rule | llm_judge
    label: str
    passed: bool | None
    taxonomy: str | None = None
    cost_usd: float | None = None  # judge cost (never production cost)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreFact:
        return cls(**_known(cls, data))


@dataclasses.dataclass(slots=True)
class Side:
    """One answer to an item's request: the recorded baseline, a baseline model, or the candidate.

    `error` / `error_class` are set when no answer came back (after the bounded retries):
    `http_<status>` for an upstream error status, else the upstream fault (`timeout`,
    `connect_error`, `malformed`). `transient` tells a fault that says nothing about the model
    (429, 5xx, connect, timeout, a broken answer) from an answer that is a refusal of this request
    (a 400 for a parameter the candidate does not take: a failure of the candidate like any other).
    `guards` holds the failed guard results only (empty: passed).
    """

    source: str  # "recorded", or the policy model name that answered
    model: str | None  # the pinned model sent upstream (recorded: the item's)
    status: int | None
    error: str | None = None
    error_class: str | None = None
    transient: bool = False  # the error may pass (429, 5xx, connect, timeout): an error item, tried again on resume
    guards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scores: list[ScoreFact] = dataclasses.field(default_factory=list)
    latency_ms: float | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    model_served: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    attempts: int = 0  # upstream calls made for this answer (0: recorded)
    cache_hit: bool = False  # answered from an output cache: excluded from latency and cost
    excerpt: str = ""  # the start of the answer's text, for people
    response: dict[str, Any] | None = None  # the whole answer (not kept for recorded baselines)

    @property
    def answered(self) -> bool:
        return self.error is None and self.status == 200

    def judge_errors(self) -> set[str]:
        return {s.scorer for s in self.scores if s.passed is None}

    def passed(self, ignore: frozenset[str] = frozenset()) -> bool:
        """Answered, no failed guard, every scorer not in `ignore` gave its pass label."""
        return (self.answered and not self.guards
                and all(s.passed for s in self.scores if s.scorer not in ignore and s.passed is not None))

    def classes(self, ignore: frozenset[str] = frozenset()) -> list[str]:
        """The failure classes of this answer, in order, without repeats: the error class, each
        failed guard's taxonomy class, each failing score's taxonomy (`score:<scorer>` without one)."""
        out: list[str] = []
        if self.error_class is not None:
            out.append(self.error_class)
        elif self.status != 200:
            out.append(f"http_{self.status}" if self.status is not None else "no_answer")
        out += [str(g.get("taxonomy") or f"guard:{g.get('guard')}") for g in self.guards]
        out += [s.taxonomy or f"score:{s.scorer}" for s in self.scores
                if s.passed is False and s.scorer not in ignore]
        return list(dict.fromkeys(out))

    def to_dict(self, *, with_response: bool = True) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["scores"] = [s.to_dict() for s in self.scores]
        if not with_response or self.response is None or self.source == RECORDED:  # the corpus has it
            out.pop("response")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, with_response: bool = False) -> Side:
        known = _known(cls, data)
        known["scores"] = [ScoreFact.from_dict(s) for s in known.get("scores") or ()]
        known["guards"] = list(known.get("guards") or ())
        if not with_response:
            known.pop("response", None)
        return cls(**known)


@dataclasses.dataclass(slots=True)
class ItemResult:
    """The pair for one corpus item. `recorded_served` is the recorded baseline's (served model,
    system fingerprint) — kept whatever the baseline of this replay is, for drift."""

    record_id: str
    stratum: str
    route: str
    variant: str  # the variant that originally answered
    baseline: Side
    candidate: Side
    stream: bool = False  # the original was streamed; it was replayed non-streaming
    recorded_served: tuple[str | None, str | None] = (None, None)
    finished_at: float = 0.0

    @property
    def ignored_scorers(self) -> frozenset[str]:
        """Judges without a verdict on either side: left out of both sides' pass of this item."""
        return frozenset(self.baseline.judge_errors() | self.candidate.judge_errors())

    @property
    def baseline_passed(self) -> bool:
        return self.baseline.passed(self.ignored_scorers)

    @property
    def candidate_passed(self) -> bool:
        return self.candidate.passed(self.ignored_scorers)

    @property
    def error(self) -> bool:
        """An error item: the candidate's upstream kept failing (a transient fault, after the retries).
        Counted, never a pass, and tried again when the replay is resumed."""
        return self.candidate.error is not None and self.candidate.transient

    @property
    def kind(self) -> str:
        """regression (baseline pass -> candidate fail), improvement, both_pass or both_fail."""
        b, c = self.baseline_passed, self.candidate_passed
        return "both_pass" if b and c else "regression" if b else "improvement" if c else "both_fail"

    def to_dict(self, *, with_response: bool = True) -> dict[str, Any]:
        ignore = self.ignored_scorers
        return {
            "kind": "item", "record_id": self.record_id, "stratum": self.stratum, "route": self.route,
            "variant": self.variant, "stream": self.stream, "finished_at": self.finished_at,
            "recorded_served": list(self.recorded_served),
            "result": self.kind, "baseline_passed": self.baseline_passed,
            "candidate_passed": self.candidate_passed, "error": self.error,
            "baseline_classes": self.baseline.classes(ignore), "candidate_classes": self.candidate.classes(ignore),
            "baseline": self.baseline.to_dict(with_response=with_response),
            "candidate": self.candidate.to_dict(with_response=with_response),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, with_response: bool = False) -> ItemResult:
        served = data.get("recorded_served") or (None, None)
        return cls(record_id=data["record_id"], stratum=data.get("stratum", ""), route=data.get("route", ""),
                   variant=data.get("variant", ""),
                   baseline=Side.from_dict(data["baseline"], with_response=with_response),
                   candidate=Side.from_dict(data["candidate"], with_response=with_response),
                   stream=bool(data.get("stream")), recorded_served=(served[0], served[1]),
                   finished_at=float(data.get("finished_at") or 0.0))
