"""What every scorer reads (`ScoreInput`) and writes (`Score`).

A score is keyed by record id + scorer name (`Score.id`): delivery to scorers is at least once,
so a second delivery of the same record overwrites the first score instead of adding one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from proxy._jsontypes import content_text

if TYPE_CHECKING:
    from proxy.records._model import Record

__all__ = ["JUDGE_ERROR", "Score", "ScoreInput", "ScorerKind", "answer_text"]

ScorerKind = Literal["rule", "llm_judge", "human"]

# The label of a judge call that gave no usable verdict. It is never a pass: reports must show
# it as missing, not count it as agreement with anything.
JUDGE_ERROR = "judge_error"


@dataclasses.dataclass(frozen=True, slots=True)
class Score:
    """One scorer's verdict on one record."""

    record_id: str
    request_id: str
    scorer: str
    kind: ScorerKind
    label: str  # one of the scorer's labels, or "judge_error" for a judge that gave no verdict
    score: float | None = None  # 0.0 (worst) .. 1.0 (best), when the scorer gives one
    taxonomy: str | None = None  # the failure class, when the label is a failure
    confidence: float | None = None  # the judge's own confidence, 0.0 .. 1.0
    reason: str | None = None
    error: str | None = None  # why a judge call failed (label "judge_error")
    judge_model: str | None = None
    prompt_tokens: int | None = None  # judge tokens over all attempts, apart from production usage
    completion_tokens: int | None = None
    cost_usd: float | None = None  # judge cost over all attempts; None when the price is unknown
    attempts: int = 1
    weight: float = 1.0  # sampling weight (1 / rate): undoes oversampling when scores are combined
    created_at: float = dataclasses.field(default_factory=time.time)

    @property
    def id(self) -> str:
        """The idempotency key: writing the same record + scorer again replaces the score."""
        return f"{self.record_id}:{self.scorer}"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["id"] = self.id
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class ScoreInput:
    """The part of a record a scorer looks at."""

    record_id: str
    request_id: str
    route: str
    variant: str
    request: dict[str, Any] | None  # the OpenAI request body as captured (None: refs_only)
    answer_text: str
    answer: dict[str, Any] | None  # the OpenAI response body as captured
    retrieval_ids: tuple[str, ...] = ()
    weight: float = 1.0

    @classmethod
    def from_record(cls, record: Record, weight: float = 1.0) -> ScoreInput:
        return cls(
            record_id=record.id,
            request_id=record.request_id,
            route=record.route,
            variant=record.variant,
            request=record.request,
            answer_text=answer_text(record.response),
            answer=record.response,
            retrieval_ids=tuple(record.retrieval_ids),
            weight=weight,
        )



def _call_text(call: Any) -> str:
    """`name(arguments)` for a tool call or a legacy function call, as a judge would read it."""
    if not isinstance(call, Mapping):
        return ""
    fn = call.get("function", call)  # tool calls nest the function; `function_call` is the function
    if not isinstance(fn, Mapping):
        return ""
    name = fn.get("name") if isinstance(fn.get("name"), str) else "?"
    arguments = fn.get("arguments")
    return f"{name}({arguments if isinstance(arguments, str) else ''})"


def answer_text(response: dict[str, Any] | None) -> str:
    """The first choice's text: message content, else its tool calls as `name(arguments)` lines,
    else a completions choice's `text`. "" when there is nothing (no response, no choices)."""
    if not isinstance(response, Mapping):
        return ""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return ""
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, Mapping):
        text = content_text(message.get("content"))
        if text:
            return text
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            return "\n".join(t for t in (_call_text(c) for c in calls) if t)
        if message.get("function_call") is not None:
            return _call_text(message["function_call"])
        refusal = message.get("refusal")
        return refusal if isinstance(refusal, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""
