"""The LLM judge: rubric rendering, verdict parsing, retries, judge_error, cost, budget, families."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.config._models import JudgeScorer, ModelVariant
from proxy.errors import UpstreamHTTPError, UpstreamTimeout
from proxy.providers import OpenAIAdapter, UpstreamCall, UpstreamReply
from proxy.scoring._judge import (
    JudgeBudget,
    LLMJudge,
    Verdict,
    VerdictError,
    check_rubric,
    judge_request_body,
    model_family,
    parse_verdict,
    render_rubric,
    same_family,
)
from proxy.scoring._score import ScoreInput

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("pass", "fail")
RUBRIC = "Request:\n{request}\nAnswer:\n{answer}\nDocs: {retrieval_ids}\nReply {{\"label\": ...}}"
GOOD = {"label": "pass", "score": 0.9, "taxonomy": None, "confidence": 0.8, "reason": "fine"}


def variant(model: str, family: str | None = None, price: dict[str, float] | None = None,
            params: dict[str, Any] | None = None) -> ModelVariant:
    data: dict[str, Any] = {"provider": "p", "model": model, "family": family, "price": price}
    if params:
        data["params"] = params
    return ModelVariant.model_validate(data)


def config(taxonomy: str | None = None) -> JudgeScorer:
    c = JudgeScorer.model_validate({"kind": "llm_judge", "model": "judge", "rubric": "rubrics/h.md",
                                    "labels": list(LABELS), "taxonomy": taxonomy})
    c._name = "helpfulness"
    return c


def item(answer: str = "Your order ships tomorrow.", weight: float = 10.0) -> ScoreInput:
    return ScoreInput(record_id="rec1", request_id="req1", route="support-bot", variant="candidate",
                      request={"messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Where is my order?"}],
                               "tools": [{"type": "function", "function": {"name": "lookup_order"}}]},
                      answer_text=answer, answer=None, retrieval_ids=("kb-1", "kb-7"), weight=weight)


def completion(content: str | None, prompt_tokens: int = 100, completion_tokens: int = 20) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": "judge-served-2026",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeAdapter:
    """Replays scripted replies: a dict is a completion body, an exception is raised."""

    name = "fake"
    kind = "openai"

    def __init__(self, *script: dict[str, Any] | Exception) -> None:
        self.script = list(script)
        self.calls: list[UpstreamCall] = []

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        self.calls.append(call)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return UpstreamReply(200, orjson.dumps(step), step, time.time())

    async def close(self) -> None:
        pass


PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 5.0}


def make_judge(adapter: Any, **kwargs: Any) -> LLMJudge:
    return LLMJudge(config(kwargs.pop("taxonomy", None)), variant("claude-3-5-haiku", price=PRICE), adapter,
                    rubric=RUBRIC, retry_delay=0, **kwargs)


# --- rubric --------------------------------------------------------------------------------------


def test_render_rubric_fills_placeholders_and_keeps_literal_braces() -> None:
    out = render_rubric(RUBRIC, item())
    assert "[system] Be brief.\n[user] Where is my order?\n(tools offered: lookup_order)" in out
    assert "Answer:\nYour order ships tomorrow." in out
    assert "Docs: kb-1, kb-7" in out
    assert 'Reply {"label": ...}' in out
    empty = ScoreInput("r", "q", "route", "v", None, "", None)
    out = render_rubric(RUBRIC, empty)
    assert "(the request was not captured)" in out and "(empty answer)" in out and "Docs: (none)" in out


def test_unknown_placeholder_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{question\}"):
        check_rubric("Q: {question} A: {answer}")
    with pytest.raises(ValueError, match=r"unknown placeholder \{request.__class__\}"):
        check_rubric("{request.__class__}")
    with pytest.raises(ValueError, match=r"unknown placeholder \{\}"):
        check_rubric("{}")
    with pytest.raises(ValueError, match="literal braces"):
        check_rubric('{"label": "pass"}')
    with pytest.raises(ValueError, match="format spec"):
        check_rubric("{answer:>10}")
    with pytest.raises(ValueError, match=r"\{question\}"):
        LLMJudge(config(), variant("claude-3-5-haiku"), FakeAdapter(), rubric="{question}")


def test_shipped_rubric_is_valid() -> None:
    check_rubric((ROOT / "policies" / "rubrics" / "helpfulness.md").read_text())


def test_judge_without_loaded_rubric_is_refused() -> None:
    with pytest.raises(ValueError, match="was not loaded"):
        LLMJudge(config(), variant("claude-3-5-haiku"), FakeAdapter())


# --- the request ---------------------------------------------------------------------------------


def test_judge_request_body_asks_for_structured_output() -> None:
    body = judge_request_body("claude-3-5-haiku", "grade this", LABELS)
    assert body["model"] == "claude-3-5-haiku" and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": "grade this"}]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["pass", "fail"]
    assert set(schema["required"]) == {"label", "score", "taxonomy", "confidence", "reason"}
    assert schema["additionalProperties"] is False


# --- parsing -------------------------------------------------------------------------------------


def test_parse_plain_fenced_and_embedded() -> None:
    plain = parse_verdict(json.dumps(GOOD), LABELS)
    assert plain == Verdict("pass", 0.9, None, 0.8, "fine")
    fenced = parse_verdict("```json\n" + json.dumps(GOOD) + "\n```", LABELS)
    assert fenced == plain
    embedded = parse_verdict("Sure. Here is my verdict: " + json.dumps(GOOD) + " Hope it helps {x}.", LABELS)
    assert embedded == plain
    minimal = parse_verdict('{"label": "fail"}', LABELS)
    assert minimal == Verdict("fail", None, None, None, None)
    assert parse_verdict('{"label": "fail", "score": 0, "confidence": 1}', LABELS).score == 0.0


@pytest.mark.parametrize(("content", "message"), [
    ("not json at all", "no JSON object"),
    ('{"label": "pass", ', "no JSON object"),
    ("[1, 2]", "must be a JSON object"),
    ('{"score": 0.5}', "no 'label'"),
    ('{"label": 1}', "'label' must be a string"),
    ('{"label": "meh"}', "not one of pass, fail"),
    ('{"label": "pass", "score": 1.5}', r"'score' must be in \[0, 1\]"),
    ('{"label": "pass", "confidence": -0.1}', r"'confidence' must be in \[0, 1\]"),
    ('{"label": "pass", "score": "high"}', "'score' must be a number"),
    ('{"label": "pass", "score": true}', "'score' must be a number"),
    ('{"label": "pass", "confidence": NaN}', r"'confidence' must be in \[0, 1\]"),
    ('{"label": "pass", "taxonomy": 3}', "'taxonomy' must be a string"),
    ('{"label": "pass", "reason": ["a"]}', "'reason' must be a string"),
])
def test_parse_rejects(content: str, message: str) -> None:
    with pytest.raises(VerdictError, match=message):
        parse_verdict(content, LABELS)


# --- scoring -------------------------------------------------------------------------------------


async def test_valid_verdict_with_tokens_and_cost() -> None:
    adapter = FakeAdapter(completion(json.dumps({**GOOD, "label": "fail", "taxonomy": "verbose"})))
    budget = JudgeBudget(10.0)
    score = await make_judge(adapter, budget=budget).score(item())
    assert (score.label, score.score, score.taxonomy, score.confidence) == ("fail", 0.9, "verbose", 0.8)
    assert (score.kind, score.scorer, score.id, score.weight, score.attempts) == (
        "llm_judge", "helpfulness", "rec1:helpfulness", 10.0, 1)
    assert (score.prompt_tokens, score.completion_tokens) == (100, 20)
    assert score.cost_usd == pytest.approx((100 * 1.0 + 20 * 5.0) / 1e6)
    assert budget.spent_today() == pytest.approx(score.cost_usd)
    assert score.judge_model == "judge-served-2026" and score.error is None
    call = adapter.calls[0]
    assert call.endpoint == "chat.completions" and call.timeout == 60.0
    assert "Your order ships tomorrow." in call.body["messages"][0]["content"]


async def test_taxonomy_fallback_only_for_failing_verdicts() -> None:
    fail = await make_judge(FakeAdapter(completion('{"label": "fail"}')), taxonomy="out_of_scope_answer").score(item())
    assert fail.taxonomy == "out_of_scope_answer"
    passed = await make_judge(FakeAdapter(completion('{"label": "pass", "taxonomy": "verbose"}')),
                              taxonomy="out_of_scope_answer").score(item())
    assert passed.taxonomy is None


async def test_retry_succeeds_on_second_attempt_and_sums_cost() -> None:
    adapter = FakeAdapter(completion("I think it's fine", 100, 10), completion(json.dumps(GOOD), 100, 20))
    score = await make_judge(adapter).score(item())
    assert score.label == "pass" and score.attempts == 2 and len(adapter.calls) == 2
    assert (score.prompt_tokens, score.completion_tokens) == (200, 30)
    assert score.cost_usd == pytest.approx((200 * 1.0 + 30 * 5.0) / 1e6)


@pytest.mark.parametrize("bad", ['{"label": "maybe"}', "no verdict here", '{"label": "pass", "score": 7}', None])
async def test_unusable_verdicts_become_judge_error_never_pass(bad: str | None) -> None:
    adapter = FakeAdapter(*(completion(bad) for _ in range(3)))
    score = await make_judge(adapter).score(item())
    assert score.label == "judge_error" and score.score is None and score.confidence is None
    assert score.attempts == 3 and len(adapter.calls) == 3
    assert score.error is not None and score.error.startswith("attempt 3: ")
    assert score.prompt_tokens == 300 and score.cost_usd is not None  # failed attempts are paid for too


async def test_upstream_errors_are_retried_then_judge_error() -> None:
    timeout = UpstreamTimeout("upstream 'fake' timed out", provider="fake")
    adapter = FakeAdapter(timeout, completion(json.dumps(GOOD)))
    assert (await make_judge(adapter).score(item())).label == "pass"
    adapter = FakeAdapter(timeout, timeout, timeout)
    score = await make_judge(adapter).score(item())
    assert score.label == "judge_error" and score.attempts == 3 and "timed out" in (score.error or "")
    assert score.prompt_tokens is None and score.cost_usd is None  # nothing was answered, nothing known
    limited = UpstreamHTTPError("rate limited", provider="fake", upstream_status=429)
    assert (await make_judge(FakeAdapter(limited, completion(json.dumps(GOOD)))).score(item())).label == "pass"


async def test_a_bad_request_is_not_retried() -> None:
    bad = UpstreamHTTPError("unknown model", provider="fake", upstream_status=404)
    adapter = FakeAdapter(bad, completion(json.dumps(GOOD)))
    score = await make_judge(adapter).score(item())
    assert score.label == "judge_error" and score.attempts == 1 and len(adapter.calls) == 1


async def test_through_the_openai_adapter_with_a_mock_transport() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=completion("```json\n" + json.dumps(GOOD) + "\n```"))

    adapter = OpenAIAdapter("judge", base_url="http://judge.test/v1", transport=httpx.MockTransport(handler))
    judge = LLMJudge(config(), variant("claude-3-5-haiku", price=PRICE, params={"max_tokens": 200, "temperature": 1}),
                     adapter, rubric=RUBRIC, retry_delay=0)
    try:
        score = await judge.score(item())
    finally:
        await adapter.close()
    assert score.label == "pass" and score.attempts == 2
    assert seen[0]["max_tokens"] == 200 and seen[0]["temperature"] == 0  # pinned params, but a judge is at 0
    assert seen[0]["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["pass", "fail"]


# --- budget --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_budget_backs_off_before_the_limit_and_resets_at_utc_midnight() -> None:
    day = 20_000 * 86_400.0  # a UTC midnight
    clock = Clock(day + 3_600)
    budget = JudgeBudget(10.0, clock=clock)
    assert budget.scale() == 1.0
    budget.spend(7.9)
    assert budget.scale() == 1.0  # well under: full rate
    budget.spend(0.1)
    assert budget.scale() == pytest.approx(1.0)  # 80%: starts to back off
    budget.spend(1.0)
    assert budget.scale() == pytest.approx(0.5)  # 90%: half the rate
    budget.spend(0.5)
    assert 0 < budget.scale() < 0.5
    budget.spend(None)
    budget.spend(0.5)
    assert budget.scale() == 0.0 and budget.exhausted
    state = budget.state()
    assert state["spent_today_usd"] == pytest.approx(10.0) and state["remaining_usd"] == 0
    assert state["day"] == "2024-10-04" and state["resets_at"] == day + 86_400
    clock.t = day + 86_399
    assert budget.exhausted  # still the same UTC day
    clock.t = day + 86_400
    assert budget.scale() == 1.0 and budget.spent_today() == 0.0  # a new UTC day


def test_budget_edges() -> None:
    assert JudgeBudget(None).scale() == 1.0
    assert JudgeBudget(None).state()["remaining_usd"] is None
    assert JudgeBudget(0).scale() == 0.0
    assert JudgeBudget(10, spent_today=9.5).scale() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        JudgeBudget(-1)


# --- families ------------------------------------------------------------------------------------


def test_model_family_from_field_or_name() -> None:
    assert model_family(variant("gpt-4o-2024-08-06")) == "openai"
    assert model_family(variant("o3-mini")) == "openai"
    assert model_family(variant("claude-3-5-haiku-20241022")) == "anthropic"
    assert model_family(variant("meta-llama/Llama-3.1-8B-Instruct")) == "meta"
    assert model_family(variant("llama-3.1-8b-instruct")) == "meta"
    assert model_family(variant("gemini-1.5-pro")) == "google"
    assert model_family(variant("mistral-large-latest")) == "mistral"
    assert model_family(variant("qwen2.5-7b")) is None
    assert model_family(variant("my-finetune", family="OpenAI")) == "openai"


def test_same_family_warning() -> None:
    judged = [("prod", variant("gpt-4o-2024-08-06")), ("candidate", variant("llama-3.1-8b-instruct")),
              ("tuned", variant("ft:custom", family="openai"))]
    assert same_family(variant("gpt-4o-mini"), judged) == ["prod", "tuned"]
    assert same_family(variant("claude-3-5-haiku-20241022"), judged) == []
    assert same_family(variant("qwen2.5-7b"), [("x", variant("qwen2.5-72b"))]) == []  # unknown: no warning
