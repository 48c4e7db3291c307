"""OpenAI-shaped JSON documents built from an `Answer` (plain dicts, serialized with orjson by the caller)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.mock_upstream._answer import Answer

__all__ = [
    "Meta",
    "chat_completion",
    "chat_usage",
    "text_completion",
    "error_body",
    "model_object",
    "MODEL_CREATED",
]

MODEL_CREATED = 1_700_000_000
OWNED_BY = "sluicegate-mock"


class Meta:
    """Fields every document / chunk of one response shares."""

    __slots__ = ("id", "created", "model", "system_fingerprint")

    def __init__(self, id: str, created: int, model: str, system_fingerprint: str | None) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.system_fingerprint = system_fingerprint

    def base(self, object_: str) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "object": object_, "created": self.created, "model": self.model,
                             "service_tier": "default"}
        if self.system_fingerprint is not None:
            d["system_fingerprint"] = self.system_fingerprint
        return d


def chat_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def chat_completion(answer: Answer, meta: Meta) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None,
                               "annotations": []}
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    if answer.function_call is not None:
        message["function_call"] = {"name": answer.function_call.name,
                                    "arguments": answer.function_call.arguments}
    doc = meta.base("chat.completion")
    doc["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}]
    doc["usage"] = chat_usage(answer.prompt_tokens, answer.completion_tokens)
    return doc


def text_completion(texts: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int,
                    meta: Meta) -> dict[str, Any]:
    doc = meta.base("text_completion")
    del doc["service_tier"]
    doc["choices"] = [{"text": text, "index": i, "logprobs": None, "finish_reason": finish}
                      for i, (text, finish) in enumerate(texts)]
    doc["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}
    return doc


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": OWNED_BY}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
