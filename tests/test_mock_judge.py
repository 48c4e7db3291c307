"""The mock upstream as a judge with a known error rate, judging answers the mock itself made bad.

Everything runs in process (httpx.ASGITransport): the answerer model makes a known share of bad
answers, the judge model grades them through the real `LLMJudge` + `OpenAIAdapter`, and the
observed judge error rate must be the configured one.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from proxy.config._models import JudgeScorer, ModelVariant
from proxy.mock_upstream import MockConfig, MockModel, create_app
from proxy.mock_upstream._judge import BAD_ANSWER_MARKER, judge_verdict, true_label
from proxy.providers import OpenAIAdapter
from proxy.scoring._judge import LLMJudge, judge_request_body, parse_verdict
from proxy.scoring._score import ScoreInput, answer_text

BAD_RATE = 0.3
ERROR_RATE = 0.1
N = 2000
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
RUBRIC = "## Request\n{request}\n## Answer\n{answer}\n## Documents\n{retrieval_ids}\nReply with JSON."


def mock_config() -> MockConfig:
    return MockConfig(models={
        "answerer": MockModel(bad_answer_rate=BAD_RATE),
        "tooler": MockModel(tool_call_fault="invented_param", tool_call_fault_rate=0.5),
        "judge": MockModel(judge_error_rate=ERROR_RATE),
        "fenced-judge": MockModel(judge_error_rate=0.0, json_fault="fenced"),
        "broken-judge": MockModel(judge_error_rate=0.0, json_fault="invalid_json"),
    })


def judge_scorer(labels: list[str] | None = None) -> JudgeScorer:
    c = JudgeScorer.model_validate({"kind": "llm_judge", "model": "judge", "rubric": "r.md",
                                    "labels": labels or ["pass", "fail"]})
    c._name = "helpfulness"
    return c


def judge_variant(model: str = "judge") -> ModelVariant:
    return ModelVariant.model_validate({"provider": "mock", "model": model,
                                        "price": {"input_per_mtok": 0.8, "output_per_mtok": 4.0}})


async def test_bad_answers_at_their_rate_and_reproducible() -> None:
    app = create_app(mock_config())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mock") as http:
        async def ask(i: int) -> str:
            body = {"model": "answerer", "messages": [{"role": "user", "content": f"question {i}"}]}
            return str((await http.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]["content"])

        texts = [await ask(i) for i in range(600)]
        bad = [BAD_ANSWER_MARKER in t for t in texts]
        assert 0.24 < sum(bad) / len(bad) < 0.36
        assert [await ask(i) for i in range(30)] == texts[:30]
        plain = {"model": "other", "messages": [{"role": "user", "content": "question 1"}]}
        assert BAD_ANSWER_MARKER not in (await http.post("/v1/chat/completions", json=plain)).text
        legacy = await http.post("/v1/completions", json={"model": "answerer", "prompt": [f"p{i}" for i in range(200)]})
        share = sum(BAD_ANSWER_MARKER in c["text"] for c in legacy.json()["choices"]) / 200
        assert 0.18 < share < 0.42


async def test_mock_judge_error_rate_is_the_configured_one_end_to_end() -> None:
    app = create_app(mock_config())
    transport = httpx.ASGITransport(app=app)
    adapter = OpenAIAdapter("mock", base_url="http://mock/v1", transport=transport)
    judge = LLMJudge(judge_scorer(), judge_variant(), adapter, rubric=RUBRIC, retry_delay=0)
    wrong: list[float] = []
    right: list[float] = []
    truly_bad = 0
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as http:
            for i in range(N):
                request = {"model": "answerer", "messages": [{"role": "user", "content": f"order {i}, where is it?"}]}
                response = (await http.post("/v1/chat/completions", json=request)).json()
                item = ScoreInput(f"rec{i}", f"req{i}", "support-bot", "candidate", request,
                                  answer_text(response), response, ("kb-1",))
                bad = BAD_ANSWER_MARKER in item.answer_text  # the truth, known without the judge
                truly_bad += bad
                score = await judge.score(item)
                assert score.label in ("pass", "fail") and score.attempts == 1
                assert score.confidence is not None
                assert score.prompt_tokens and score.completion_tokens and score.cost_usd and score.cost_usd > 0
                assert (score.label == "fail") == (score.taxonomy is not None)
                (wrong if (score.label == "fail") != bad else right).append(score.confidence)
    finally:
        await adapter.close()
    assert abs(truly_bad / N - BAD_RATE) < 0.04
    observed = len(wrong) / N
    assert abs(observed - ERROR_RATE) < 0.025, observed  # ~3.7 standard errors at n=2000
    # a flipped verdict is given with lower confidence, so oversampling low confidence finds it
    assert max(wrong) < min(right)


async def test_mock_judge_reads_tool_call_defects_and_custom_labels() -> None:
    app = create_app(mock_config())
    transport = httpx.ASGITransport(app=app)
    adapter = OpenAIAdapter("mock", base_url="http://mock/v1", transport=transport)
    judge = LLMJudge(judge_scorer(["good", "bad"]), judge_variant("fenced-judge"), adapter, rubric=RUBRIC,
                     retry_delay=0)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as http:
            agree = 0
            for i in range(100):
                request = {"model": "tooler", "tools": TOOLS,
                           "messages": [{"role": "user", "content": f"find order {i}"}]}
                response = (await http.post("/v1/chat/completions", json=request)).json()
                item = ScoreInput(f"r{i}", f"q{i}", "rt", "v", request, answer_text(response), response)
                assert item.answer_text.startswith("lookup_order(")
                invented = "mock_invented_param" in item.answer_text
                score = await judge.score(item)  # fenced verdicts are parsed too
                assert score.label == ("bad" if invented else "good")
                assert score.taxonomy == ("invented_tool_param" if invented else None)
                agree += invented
            assert 20 < agree < 80
    finally:
        await adapter.close()


async def test_a_malformed_judge_ends_in_judge_error() -> None:
    app = create_app(mock_config())
    adapter = OpenAIAdapter("mock", base_url="http://mock/v1", transport=httpx.ASGITransport(app=app))
    judge = LLMJudge(judge_scorer(), judge_variant("broken-judge"), adapter, rubric=RUBRIC, retry_delay=0)
    try:
        score = await judge.score(ScoreInput("r", "q", "rt", "v", None, "an answer", None))
    finally:
        await adapter.close()
    assert score.label == "judge_error" and score.attempts == 3 and score.prompt_tokens


def test_verdict_is_deterministic_and_truth_comes_from_markers() -> None:
    body = judge_request_body("judge", f"## Answer\nsure {BAD_ANSWER_MARKER}", ["pass", "fail"])
    assert judge_verdict(body, 0.0) == judge_verdict(body, 0.0)
    verdict = parse_verdict(judge_verdict(body, 0.0), ["pass", "fail"])
    assert verdict.label == "fail" and verdict.taxonomy == "out_of_scope_answer"
    assert verdict.confidence is not None and verdict.confidence >= 0.75
    flipped = parse_verdict(judge_verdict(body, 1.0), ["pass", "fail"])
    assert flipped.label == "pass" and flipped.confidence is not None and flipped.confidence <= 0.65
    assert true_label("a fine answer") == (False, None)
    assert true_label('lookup({"mock_invented_param": "surprise"})') == (True, "invented_tool_param")


@pytest.mark.parametrize("rate", [None, 0.1])
def test_judge_knob_validates(rate: Any) -> None:
    assert MockModel(judge_error_rate=rate).judge_error_rate == rate
    with pytest.raises(ValueError):
        MockModel(judge_error_rate=1.5)
    with pytest.raises(ValueError):
        MockModel(bad_answer_rate=-0.1)
    assert json.loads(MockModel().model_dump_json())["judge_error_rate"] is None
