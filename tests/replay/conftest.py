"""Shared pieces of the replay tests: a policy, the in-process mock upstream, hand-made corpora.

A corpus item is built the way production would have made it: its request is sent to the mock as the
baseline model, and the answer (with the route's guard results) becomes the recorded baseline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import parse_policy
from proxy.corpus import (
    Baseline,
    CorpusCounts,
    CorpusFilters,
    CorpusHeader,
    CorpusItem,
    CorpusSource,
    write_corpus,
)
from proxy.guards import build_guards
from proxy.mock_upstream import MockConfig, MockModel, create_app

POLICY_YAML = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod:      {provider: mock, model: gpt-prod, params: {temperature: 0}}
  candidate: {provider: mock, model: gpt-cand}
  clean:     {provider: mock, model: gpt-clean, params: {max_tokens: 64}}
  leaky:     {provider: mock, model: gpt-leaky}
routes:
  bot:
    split: {prod: 90, candidate: 10}
    guards: [tool_params, json_schema]
    capture: full
    scorers: [no_secrets]
  secret:
    model: prod
    capture: refs_only
scorers:
  no_secrets: {kind: rule, regex: 'BEGIN PRIVATE KEY', taxonomy: dangerous_advice}
taxonomy:
  dangerous_advice: {severity: critical}
"""

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}]
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
    "additionalProperties": False}}}

# the mock's models: what each pinned model name does
MOCK_MODELS = {
    "gpt-prod": MockModel(served_model="gpt-prod-2024-08-06", system_fingerprint="fp_prod"),
    "gpt-prod-badjson": MockModel(served_model="gpt-prod-2024-08-06", system_fingerprint="fp_prod",
                                  json_fault="schema_violation"),
    "gpt-cand": MockModel(served_model="gpt-cand-2025-01-01", system_fingerprint="fp_cand",
                          tool_call_fault="invented_param"),
    "gpt-clean": MockModel(served_model="gpt-clean-1", system_fingerprint="fp_clean"),
    "gpt-leaky": MockModel(reply="sure: -----BEGIN PRIVATE KEY----- abc"),
}


def mock_app(**overrides: MockModel) -> Any:
    return create_app(MockConfig(models={**MOCK_MODELS, **overrides}))


def transports(app: Any) -> dict[str, httpx.AsyncBaseTransport]:
    return {"mock": httpx.ASGITransport(app=app)}


@pytest.fixture
def policy() -> Any:
    return parse_policy(POLICY_YAML)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML)
    return path


def request_body(i: int, kind: str, model: str = "gpt-prod") -> dict[str, Any]:
    """The body the gateway sent for item `i` (pinned model and params already applied)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"question number {i}"}],
                            "temperature": 0, "seed": 7}
    if kind == "tools":
        body["tools"] = TOOLS
    elif kind == "json":
        body["response_format"] = JSON_FORMAT
    return body


def record_id(i: int) -> str:
    return f"att_{i:04d}"


async def make_corpus(path: Path, kinds: Sequence[str], *, baseline_models: dict[str, str] | None = None,
                      stream: Sequence[int] = ()) -> list[CorpusItem]:
    """A corpus of one item per entry of `kinds` (plain | tools | json). Each item's baseline is the answer
    of `baseline_models[kind]` (default gpt-prod) from the mock, with the route's guard results."""
    guards = build_guards(["tool_params", "json_schema"])
    models = {"plain": "gpt-prod", "tools": "gpt-prod", "json": "gpt-prod", **(baseline_models or {})}
    items = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mock_app()), base_url="http://mock.test/v1") as c:
        for i, kind in enumerate(kinds):
            body = request_body(i, kind)
            answered = request_body(i, kind, models[kind])
            data = (await c.post("/chat/completions", json=answered)).json()
            failed = [g.to_dict() for g in guards.run(body, data)]
            tools = "tools" if kind == "tools" else "no_tools"
            cls = f"guard:{failed[0]['taxonomy']}" if failed else "ok"
            sent = {**body, "stream": True, "stream_options": {"include_usage": True}} if i in stream else body
            items.append(CorpusItem(
                record_id=record_id(i), request_id=f"req_{i:04d}", route="bot", variant="prod", model="gpt-prod",
                endpoint="chat.completions", request=sent, stratum=f"bot|-|{tools}|{cls}", provider="mock",
                stream=i in stream, params={"temperature": 0, "seed": 7},
                baseline=Baseline(response=data, guards=failed, failure_class=cls, status=200,
                                  finish_reason=data["choices"][0]["finish_reason"], usage=data.get("usage"),
                                  latency_ms=40.0 + i, cost_usd=0.001, model_served=data.get("model"),
                                  system_fingerprint=data.get("system_fingerprint"))))
    header = CorpusHeader(source=CorpusSource(store="sqlite:///test.db", built_at=time.time()),
                          filters=CorpusFilters(route="bot", since=None, until=None, size=len(items), per_class_quota=50,
                                                include_failures=True, seed=0),
                          counts=CorpusCounts())
    write_corpus(path, header, items)
    return items


def sent_questions(app: Any, model: str) -> list[int]:
    """The item numbers of the chat requests the mock received for `model`, in arrival order."""
    out = []
    for entry in app.state.mock.requests:
        body = entry.get("body")
        if isinstance(body, dict) and body.get("model") == model and entry["path"].endswith("/chat/completions"):
            out.append(int(body["messages"][0]["content"].rsplit(" ", 1)[1]))
    return out
