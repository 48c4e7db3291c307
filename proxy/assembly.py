"""Assembling a streamed answer into the shape of the non-streamed one.

Guards and records look at one shape, `chat.completion` (or `text_completion`), whether the
answer was streamed or not. Tool-call argument fragments are joined by their `index`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StreamAssembler"]


class _Choice:
    __slots__ = ("role", "content", "refusal", "tool_calls", "function_call", "finish_reason", "text")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        """One choice of a chunk. A field of the wrong type is skipped (the upstream's fault, not ours:
        the relay still passes the event on, and the answer assembles from what makes sense)."""
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        if isinstance(choice.get("text"), str) and choice["text"]:
            self.text.append(choice["text"])
        delta = choice.get("delta")
        if not isinstance(delta, dict) or not delta:
            return
        if isinstance(delta.get("role"), str) and delta["role"]:
            self.role = delta["role"]
        if isinstance(delta.get("content"), str) and delta["content"]:
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self.refusal.append(delta["refusal"])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._add_tool_call(call)
        fn = delta.get("function_call")
        if isinstance(fn, dict):
            fc = self.function_call or {"name": "", "arguments": ""}
            fc["name"] += _text(fn.get("name"))
            fc["arguments"] += _text(fn.get("arguments"))
            self.function_call = fc

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = len(self.tool_calls)
        slot = self.tool_calls.get(index)
        if slot is None:
            slot = self.tool_calls[index] = {"id": call.get("id"), "type": _text(call.get("type")) or "function",
                                             "function": {"name": "", "arguments": ""}}
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function")
        if isinstance(function, dict):
            slot["function"]["name"] += _text(function.get("name"))
            slot["function"]["arguments"] += _text(function.get("arguments"))

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.content) if self.content else None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.function_call:
            message["function_call"] = self.function_call
        return message


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class StreamAssembler:
    """Feed it each parsed chunk; `result()` is the equivalent non-streamed answer."""

    __slots__ = ("id", "model", "created", "system_fingerprint", "usage", "object", "_choices", "chunks")

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self.object = "chat.completion"
        self._choices: dict[int, _Choice] = {}
        self.chunks = 0

    def add(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        if self.id is None:
            self.id = chunk.get("id")
            self.created = chunk.get("created")
            if chunk.get("object") == "text_completion":
                self.object = "text_completion"
        if chunk.get("model"):
            self.model = chunk["model"]
        if chunk.get("system_fingerprint"):
            self.system_fingerprint = chunk["system_fingerprint"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if not isinstance(index, int):
                index = 0
            slot = self._choices.get(index)
            if slot is None:
                slot = self._choices[index] = _Choice()
            slot.add(choice)

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            if self.object == "text_completion":
                choices.append({"index": index, "text": "".join(choice.text), "finish_reason": choice.finish_reason})
            else:
                choices.append({"index": index, "message": choice.message(), "finish_reason": choice.finish_reason})
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint, "choices": choices, "usage": self.usage}
