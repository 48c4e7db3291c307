"""The mock's configuration: per-model behaviour (pydantic, validated once) and its YAML loader.

A model that is not listed in `MockConfig.models` behaves like `MockConfig.default`, so any model
name works. A listed model inherits every field it does not set explicitly from `default`
(pydantic's `model_fields_set` tells which were set), so `default: {latency_ms: 20}` slows every
model down unless a model says otherwise. Example YAML:

    default: {latency_ms: 20}                 # every model, unless it says otherwise
    models:
      gpt-4o-2024-08-06: {served_model: gpt-4o-2024-08-06, system_fingerprint: fp_a1b2c3}
      flaky:     {fault: http_503, fault_count: 2}      # first two requests fail, then it answers
      ratelimit: {fault: http_429, retry_after: 0.5}
      sloppy:    {tool_call_fault: invented_param, json_fault: fenced}
      streamer:  {chunks: 10, chunk_delay_ms: 30}
      answerer:  {bad_answer_rate: 0.2}                  # one text answer in five is bad
      judge:     {judge_error_rate: 0.1}                 # a judge wrong on one verdict in ten
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "FaultName",
    "ToolCallFault",
    "JsonFault",
    "ToolCallMode",
    "FAULTS",
    "TOOL_CALL_FAULTS",
    "JSON_FAULTS",
    "MockModel",
    "MockConfig",
    "load_config",
]

FaultName = Literal[
    "none",
    "http_500",
    "http_503",
    "http_429",
    "http_400",
    "timeout",
    "reset",
    "reset_mid_stream",
    "malformed_json",
    "malformed_sse",
    "overloaded",  # Anthropic's 529 overloaded_error (a 503 in the OpenAI mode)
    "error_event_mid_stream",  # a stream that stops with an error event (non-streamed: as `overloaded`)
]
ToolCallFault = Literal["none", "invented_param", "missing_required", "wrong_type", "unknown_tool", "bad_json"]
JsonFault = Literal["none", "invalid_json", "schema_violation", "fenced"]
ToolCallMode = Literal["first", "all"]

FAULTS: frozenset[str] = frozenset(get_args(FaultName))
TOOL_CALL_FAULTS: frozenset[str] = frozenset(get_args(ToolCallFault))
JSON_FAULTS: frozenset[str] = frozenset(get_args(JsonFault))


class MockModel(BaseModel):
    """How the mock answers for one model name. Every field is optional."""

    model_config = ConfigDict(extra="forbid")

    served_model: str | None = Field(
        default=None, description="`model` in responses (e.g. a dated snapshot); default: the requested name")
    system_fingerprint: str | None = Field(
        default="fp_mock", description="`system_fingerprint` in responses; null omits the field")
    reply: str | None = Field(
        default=None, description="fixed reply text; `{model}` and `{last_user}` are substituted")
    latency_ms: float = Field(default=0, ge=0, description="wait before the response starts (first byte)")
    chunks: int = Field(default=5, ge=1, le=10_000, description="pieces a streamed content / arguments is split into")
    chunk_delay_ms: float = Field(default=0, ge=0, description="wait between two streamed events")
    tool_calls: ToolCallMode = Field(
        default="first", description="call the first tool only, or every tool (unless parallel_tool_calls is false)")
    tool_call_fault: ToolCallFault = Field(default="none", description="defect put into the (first) tool call")
    tool_call_fault_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of requests that get the tool-call defect; which ones is a "
                                             "pure function of the request body, so a replay sees the same")
    json_fault: JsonFault = Field(default="none", description="defect put into JSON-mode content")
    fault: FaultName = Field(default="none", description="transport / HTTP fault for the whole request")
    fault_count: int | None = Field(
        default=None, ge=-1, description="fault only the first N requests to this model; -1 or null: always")
    retry_after: float = Field(default=1, ge=0, description="seconds advertised by an http_429 fault")
    embedding_dims: int = Field(default=8, ge=1, le=8192,
                                description="embedding size when the request has no `dimensions`")
    bad_answer_rate: float = Field(
        default=0, ge=0, le=1, description="share of text answers that are bad (they end with the mock's "
                                           "bad-answer marker); which ones is a pure function of the request")
    judge_error_rate: float | None = Field(
        default=None, ge=0, le=1, description="play an llm_judge that flips the true verdict this often; "
                                              "null: not a judge (see _judge.py)")


class MockConfig(BaseModel):
    """All models the mock knows, and the behaviour of every other model name."""

    model_config = ConfigDict(extra="forbid")

    default: MockModel = Field(default_factory=MockModel)
    models: dict[str, MockModel] = Field(default_factory=dict)

    def effective(self, name: str) -> MockModel:
        """The behaviour for `name`: its own explicitly set fields over `default`'s."""
        own = self.models.get(name)
        if own is None:
            return self.default
        merged = self.default.model_dump()
        merged.update(own.model_dump(exclude_unset=True))
        return MockModel.model_validate(merged)


def load_config(path: str | Path) -> MockConfig:
    """Read a mock configuration from YAML (an empty file is the default configuration).

    Raises `ValueError` naming the file when the YAML or a field is invalid.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: invalid YAML: {exc}") from exc
    if data is None:
        return MockConfig()
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping with `default` and/or `models`, got {type(data).__name__}")
    try:
        return MockConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{p}: {exc}") from exc
