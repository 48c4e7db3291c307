"""Server-sent events exactly as OpenAI streams them, and the async generator that paces them.

Chat: a first chunk with the role (and, for tool calls, the first call's id / name), content or
argument fragments, a chunk with an empty delta and the finish reason, with
`stream_options.include_usage` an extra chunk with `"choices": []` and the usage (every other chunk
then carries `"usage": null`), and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from proxy.mock_upstream._answer import Answer, ToolCall
from proxy.mock_upstream._faults import MockConnectionReset
from proxy.mock_upstream._shapes import Meta, chat_usage

__all__ = ["chat_events", "completion_events", "paced", "split", "DONE", "GARBAGE_EVENT"]

DONE = b"data: [DONE]\n\n"
GARBAGE_EVENT = b'data: {"id": "chatcmpl-garbage", this is not json\n\n'

def split(text: str, pieces: int) -> list[str]:
    """`text` in at most `pieces` consecutive non-empty parts of about equal length."""
    if not text:
        return []
    size = -(-len(text) // max(pieces, 1))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


class _Chunker:
    def __init__(self, meta: Meta, object_: str, include_usage: bool) -> None:
        self.base = meta.base(object_)
        if include_usage:
            self.base["usage"] = None

    def choice(self, choice: dict[str, Any]) -> bytes:
        return _event({**self.base, "choices": [choice]})

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self.choice({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason})

    def usage(self, usage: dict[str, Any]) -> bytes:
        return _event({**self.base, "choices": [], "usage": usage})


def _call_header(index: int, call: ToolCall) -> dict[str, Any]:
    return {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}


def chat_events(answer: Answer, meta: Meta, *, pieces: int, include_usage: bool) -> list[bytes]:
    c = _Chunker(meta, "chat.completion.chunk", include_usage)
    events: list[bytes] = []
    if answer.tool_calls:
        for i, call in enumerate(answer.tool_calls):
            header: dict[str, Any] = {"tool_calls": [_call_header(i, call)]}
            if i == 0:
                header = {"role": "assistant", "content": None, **header, "refusal": None}
            events.append(c.delta(header))
            for frag in split(call.arguments, pieces):
                events.append(c.delta({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
    elif answer.function_call is not None:
        fc = answer.function_call
        events.append(c.delta({"role": "assistant", "content": None,
                               "function_call": {"name": fc.name, "arguments": ""}, "refusal": None}))
        for frag in split(fc.arguments, pieces):
            events.append(c.delta({"function_call": {"arguments": frag}}))
    else:
        events.append(c.delta({"role": "assistant", "content": "", "refusal": None}))
        for frag in split(answer.content or "", pieces):
            events.append(c.delta({"content": frag}))
    events.append(c.delta({}, answer.finish_reason))
    if include_usage:
        events.append(c.usage(chat_usage(answer.prompt_tokens, answer.completion_tokens)))
    events.append(DONE)
    return events


def completion_events(texts: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int, meta: Meta,
                      *, pieces: int, include_usage: bool) -> list[bytes]:
    c = _Chunker(meta, "text_completion", include_usage)
    del c.base["service_tier"]
    events: list[bytes] = []
    for i, (text, finish) in enumerate(texts):
        for frag in split(text, pieces):
            events.append(c.choice({"text": frag, "index": i, "logprobs": None, "finish_reason": None}))
        events.append(c.choice({"text": "", "index": i, "logprobs": None, "finish_reason": finish}))
    if include_usage:
        events.append(c.usage({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}))
    events.append(DONE)
    return events


async def paced(events: list[bytes], delay_s: float, *, cut_after: int | None = None) -> AsyncIterator[bytes]:
    """Yield the events with `delay_s` between two of them; with `cut_after`, send that many and then
    cut the connection (raise `MockConnectionReset`)."""
    for i, ev in enumerate(events):
        if cut_after is not None and i == cut_after:
            raise MockConnectionReset("mock upstream: connection cut mid-stream (fault reset_mid_stream)")
        if i and delay_s > 0:
            await asyncio.sleep(delay_s)
        yield ev
