"""`llm_judge` scorers: a rubric prompt sent to a judge model, its answer parsed into a verdict.

    judge = LLMJudge(policy.scorers["helpfulness"], policy.models["judge"], adapters["anthropic"],
                     budget=budget)
    score = await judge.score(item)          # never raises for a bad judge answer

The rubric is markdown with the placeholders `{request}`, `{answer}` and `{retrieval_ids}`;
literal braces are written `{{` and `}}` (as in `str.format`). Any other placeholder is refused
when the judge is built, naming it.

The judge is asked for structured output (`response_format` json_schema: label, score, taxonomy,
confidence, reason) at temperature 0. Its answer is accepted as plain JSON, JSON in a ``` fence,
or the first JSON object embedded in text, then validated (`parse_verdict`). An unusable answer
or an upstream error is retried up to `max_attempts` times; after that the score is recorded with
the label "judge_error" and the error text — never as a pass. Tokens and cost are summed over all
attempts (every attempt is paid for) and recorded on the score, apart from production cost.

`JudgeBudget` holds judge spend under `budgets.judge_usd_per_day`: the sampler multiplies its
rates by `budget.scale()`, which lowers them before the budget is exceeded (see `JudgeBudget`).
`same_family` names the judged variants of the judge's own model family, for a warning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import string
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proxy._jsontypes import content_text
from proxy.costs import cost_usd
from proxy.prices import price_for
from proxy.errors import UpstreamError, UpstreamHTTPError
from proxy.providers._base import UpstreamCall
from proxy.scoring._score import JUDGE_ERROR, Score, ScoreInput

if TYPE_CHECKING:
    from proxy.config._models import JudgeScorer, ModelVariant
    from proxy.providers._base import ProviderAdapter

__all__ = [
    "PLACEHOLDERS",
    "JudgeBudget",
    "LLMJudge",
    "Verdict",
    "VerdictError",
    "check_rubric",
    "judge_request_body",
    "model_family",
    "parse_verdict",
    "render_rubric",
    "request_text",
    "same_family",
]

PLACEHOLDERS: frozenset[str] = frozenset({"request", "answer", "retrieval_ids"})
_DAY = 86_400.0


# --------------------------------------------------------------------------- the rubric


def check_rubric(text: str) -> None:
    """Raises ValueError when the rubric uses a placeholder other than {request}, {answer},
    {retrieval_ids}, or has a lone `{` / `}` (write `{{` / `}}` for a literal brace)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ValueError(f"rubric: {exc} (write '{{{{' and '}}}}' for literal braces)") from None
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS:
            shown = "{" + name + "}" if name else "{}"
            raise ValueError(f"rubric: unknown placeholder {shown}; known: {{request}}, {{answer}}, "
                             "{retrieval_ids} (write '{{' and '}}' for literal braces)")
        if spec or conv:
            raise ValueError(f"rubric: placeholder {{{name}}} cannot have a format spec or conversion")


def request_text(request: Mapping[str, Any] | None) -> str:
    """The captured request as a judge reads it: each message as `[role] text`, the tools offered,
    or a completions prompt."""
    if not isinstance(request, Mapping):
        return "(the request was not captured)"
    lines: list[str] = []
    messages = request.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, Mapping):
                lines.append(f"[{m.get('role', '?')}] {content_text(m.get('content'), ' ')}")
    elif isinstance(request.get("prompt"), str):
        lines.append(request["prompt"])
    tools = request.get("tools")
    if isinstance(tools, list) and tools:
        names = [str((t.get("function") or {}).get("name")) for t in tools if isinstance(t, Mapping)]
        lines.append("(tools offered: " + ", ".join(names) + ")")
    return "\n".join(lines) if lines else "(empty request)"


def render_rubric(text: str, item: ScoreInput) -> str:
    """The rubric with the request, the answer and the retrieval ids put in."""
    check_rubric(text)  # cheap, and keeps `format` from ever reaching an attribute or an index
    return text.format(
        request=request_text(item.request),
        answer=item.answer_text if item.answer_text else "(empty answer)",
        retrieval_ids=", ".join(item.retrieval_ids) if item.retrieval_ids else "(none)",
    )


# --------------------------------------------------------------------------- the call and the verdict


def judge_request_body(model: str, prompt: str, labels: Sequence[str]) -> dict[str, Any]:
    """A chat completion asking for a verdict as structured output.

    The schema is OpenAI strict-mode compatible (every property required, no extra ones, no
    numeric bounds): the bounds of score and confidence are checked by `parse_verdict` instead."""
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": list(labels)},
            "score": {"type": "number", "description": "0.0 (worst) to 1.0 (best)"},
            "taxonomy": {"type": ["string", "null"], "description": "the failure class, or null"},
            "confidence": {"type": "number", "description": "0.0 to 1.0"},
            "reason": {"type": "string"},
        },
        "required": ["label", "score", "taxonomy", "confidence", "reason"],
        "additionalProperties": False,
    }
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "verdict", "strict": True, "schema": schema}},
    }


class VerdictError(ValueError):
    """The judge's answer is not a usable verdict."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    score: float | None
    taxonomy: str | None
    confidence: float | None
    reason: str | None


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _extract_json(content: str) -> Any:
    """Plain JSON, else the first fenced block that is JSON, else the first object in the text."""
    text = content.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for m in _FENCE.finditer(text):
        try:
            return json.loads(m.group(1).strip())
        except ValueError:
            continue
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    shown = text[:80] + ("..." if len(text) > 80 else "")
    raise VerdictError(f"the judge's answer holds no JSON object: {shown!r}")


def _unit(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerdictError(f"'{key}' must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise VerdictError(f"'{key}' must be in [0, 1], got {value}")
    return float(value)


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise VerdictError(f"'{key}' must be a string or null, got {type(value).__name__}")


def parse_verdict(content: str, labels: Collection[str]) -> Verdict:
    """The verdict in a judge's answer. Raises VerdictError when there is no JSON object, the
    label is missing or not one of `labels`, or a field has the wrong type or range."""
    doc = _extract_json(content)
    if not isinstance(doc, dict):
        raise VerdictError(f"the verdict must be a JSON object, got {type(doc).__name__}")
    label = doc.get("label")
    if label is None:
        raise VerdictError("the verdict has no 'label'")
    if not isinstance(label, str):
        raise VerdictError(f"'label' must be a string, got {type(label).__name__}")
    if label not in labels:
        raise VerdictError(f"label {label!r} is not one of {', '.join(labels)}")
    return Verdict(label=label, score=_unit(doc, "score"), taxonomy=_optional_str(doc, "taxonomy"),
                   confidence=_unit(doc, "confidence"), reason=_optional_str(doc, "reason"))


def _reply_content(data: Mapping[str, Any]) -> str:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise VerdictError("the judge's reply has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str) or not content.strip():
        refusal = message.get("refusal") if isinstance(message, Mapping) else None
        raise VerdictError(f"the judge refused: {refusal}" if isinstance(refusal, str) and refusal
                           else "the judge's reply has no message content")
    return content


def _worth_retrying(exc: UpstreamError) -> bool:
    # a 4xx other than 429 (bad request, auth, unknown model) will fail the same way again
    return not isinstance(exc, UpstreamHTTPError) or exc.retryable


# --------------------------------------------------------------------------- the budget


class JudgeBudget:
    """Judge spend per UTC day, and the factor the sampler multiplies its rates by.

    `scale()` is 1.0 while today's spend is under 80% of `usd_per_day`, then falls linearly to
    0.0 at 100% (at 90% it is 0.5), and stays 0.0 once the budget is spent. Lowering the rate
    before the limit leaves room for the calls already queued; a score's weight (1 / rate) keeps
    estimates unbiased at the lower rate. The count starts again at UTC midnight. `None` is no
    budget (always 1.0); 0 allows no judge calls.

    The spend is per process: with several workers, seed each one with `spent_today` from the
    store (the scores' `cost_usd`) when it starts.
    """

    SLOW_DOWN_AT = 0.8

    def __init__(self, usd_per_day: float | None, clock: Callable[[], float] = time.time,
                 spent_today: float = 0.0) -> None:
        if usd_per_day is not None and usd_per_day < 0:
            raise ValueError("usd_per_day must be >= 0")
        self.usd_per_day = usd_per_day
        self._clock = clock
        self._day = self._today()
        self._spent = max(0.0, spent_today)

    def _today(self) -> int:
        return int(self._clock() // _DAY)  # epoch seconds are UTC: day n starts at n * 86400

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._spent = today, 0.0

    def spend(self, usd: float | None) -> None:
        """Adds a judge call's cost (None, an unknown cost, adds nothing)."""
        self._roll()
        if usd is not None and usd > 0:
            self._spent += usd

    def spent_today(self) -> float:
        self._roll()
        return self._spent

    def scale(self) -> float:
        self._roll()
        if self.usd_per_day is None:
            return 1.0
        if self.usd_per_day <= 0 or self._spent >= self.usd_per_day:
            return 0.0
        used = self._spent / self.usd_per_day
        if used < self.SLOW_DOWN_AT:
            return 1.0
        return (1.0 - used) / (1.0 - self.SLOW_DOWN_AT)

    @property
    def exhausted(self) -> bool:
        return self.scale() == 0.0

    def state(self) -> dict[str, Any]:
        """For reports and /readyz: budget, spend, what is left, the scale and when it resets."""
        self._roll()
        remaining = None if self.usd_per_day is None else max(0.0, self.usd_per_day - self._spent)
        return {
            "usd_per_day": self.usd_per_day,
            "spent_today_usd": round(self._spent, 6),
            "remaining_usd": None if remaining is None else round(remaining, 6),
            "scale": round(self.scale(), 4),
            "day": dt.datetime.fromtimestamp(self._day * _DAY, dt.timezone.utc).date().isoformat(),
            "resets_at": (self._day + 1) * _DAY,
        }


# --------------------------------------------------------------------------- model families

_FAMILY_PREFIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:gpt|chatgpt|o\d|text-davinci|davinci|babbage)"), "openai"),
    (re.compile(r"^claude"), "anthropic"),
    (re.compile(r"^(?:meta-)?llama"), "meta"),
    (re.compile(r"^(?:gemini|gemma)"), "google"),
    (re.compile(r"^(?:mistral|mixtral|codestral|ministral|magistral|pixtral)"), "mistral"),
)


def model_family(variant: ModelVariant) -> str | None:
    """The variant's `family`, else inferred from its model name (the last `/` segment, so
    `meta-llama/Llama-3.1-8B` is meta); None when it cannot be told."""
    if variant.family:
        return variant.family.strip().lower()
    name = variant.model.rsplit("/", 1)[-1].strip().lower()
    for pattern, family in _FAMILY_PREFIXES:
        if pattern.match(name):
            return family
    return None


def same_family(judge: ModelVariant, judged: Iterable[tuple[str, ModelVariant]]) -> list[str]:
    """Names of the judged variants of the judge's own family (a judge tends to prefer its own
    family's answers). An unknown family warns about nothing."""
    family = model_family(judge)
    if family is None:
        return []
    return [name for name, variant in judged if model_family(variant) == family]


# --------------------------------------------------------------------------- the scorer


@dataclasses.dataclass(slots=True)
class _Spent:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    served_model: str | None = None

    def add(self, data: Mapping[str, Any], price: Any) -> float | None:
        """Adds one reply's usage; returns that reply's cost."""
        served = data.get("model")
        if isinstance(served, str) and served:
            self.served_model = served
        usage = data.get("usage")
        if not isinstance(usage, Mapping):
            return None
        for key in ("prompt_tokens", "completion_tokens"):
            n = usage.get(key)
            if isinstance(n, int) and not isinstance(n, bool):
                setattr(self, key, (getattr(self, key) or 0) + n)
        cost = cost_usd(price, dict(usage))
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        return cost


class LLMJudge:
    """An `llm_judge` scorer: renders the rubric, asks the judge model, parses the verdict."""

    kind = "llm_judge"

    def __init__(self, config: JudgeScorer, judge: ModelVariant, adapter: ProviderAdapter, *,
                 rubric: str | None = None, max_attempts: int = 3, timeout: float | None = 60.0,
                 retry_delay: float = 0.5, budget: JudgeBudget | None = None) -> None:
        """`rubric` defaults to the text the policy loader read (`config.rubric_text`).
        `retry_delay` is the wait before a retry after an upstream error (doubling each time);
        a malformed verdict is retried at once. With a `budget`, each call's cost is spent on it."""
        text = rubric if rubric is not None else config.rubric_text
        if text is None:
            raise ValueError(f"scorer '{config.name}': the rubric {config.rubric!r} was not loaded")
        check_rubric(text)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.name = config.name
        self.labels: tuple[str, ...] = tuple(config.labels)
        # the label that means "no failure": "pass" when the scorer has it, else its first label
        self.pass_label = "pass" if "pass" in self.labels else self.labels[0]
        self.taxonomy = config.taxonomy
        self.rubric = text
        self.judge = judge
        self.adapter = adapter
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.budget = budget

    def request_body(self, item: ScoreInput) -> dict[str, Any]:
        body = judge_request_body(self.judge.model, render_rubric(self.rubric, item), self.labels)
        # the judge's pinned params (max_tokens, seed, ...) apply, but not over what the verdict needs
        return {**self.judge.params, **body}

    async def score(self, item: ScoreInput) -> Score:
        """The judge's verdict on `item`; label "judge_error" when no attempt gave one."""
        body = self.request_body(item)
        spent = _Spent()
        error = ""
        attempts = 0
        for attempts in range(1, self.max_attempts + 1):
            try:
                reply = await self.adapter.send(UpstreamCall("chat.completions", body, self.timeout))
            except UpstreamError as exc:
                error = f"attempt {attempts}: {exc.message}"
                if not _worth_retrying(exc):
                    break
                if attempts < self.max_attempts and self.retry_delay > 0:
                    await asyncio.sleep(self.retry_delay * 2 ** (attempts - 1))
                continue
            cost = spent.add(reply.data, price_for(self.judge))
            if self.budget is not None:
                self.budget.spend(cost)
            try:
                verdict = parse_verdict(_reply_content(reply.data), self.labels)
            except VerdictError as exc:
                error = f"attempt {attempts}: {exc}"
                continue
            return self._score(item, spent, attempts, verdict=verdict)
        return self._score(item, spent, attempts, error=error)

    def _score(self, item: ScoreInput, spent: _Spent, attempts: int, *, verdict: Verdict | None = None,
               error: str | None = None) -> Score:
        taxonomy = None
        if verdict is not None:
            # a passing verdict has no failure class; the scorer's own class stands in when a
            # failing verdict names none
            if verdict.label != self.pass_label:
                taxonomy = verdict.taxonomy or self.taxonomy
        return Score(
            record_id=item.record_id,
            request_id=item.request_id,
            scorer=self.name,
            kind="llm_judge",
            label=verdict.label if verdict is not None else JUDGE_ERROR,
            score=verdict.score if verdict is not None else None,
            taxonomy=taxonomy,
            confidence=verdict.confidence if verdict is not None else None,
            reason=verdict.reason if verdict is not None else None,
            error=error if verdict is None else None,
            judge_model=spent.served_model or self.judge.model,
            prompt_tokens=spent.prompt_tokens,
            completion_tokens=spent.completion_tokens,
            cost_usd=None if spent.cost_usd is None else round(spent.cost_usd, 10),
            attempts=attempts,
            weight=item.weight,
        )
