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
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if "text" in choice and choice["text"]:
            self.text.append(choice["text"])
        delta = choice.get("delta")
        if not delta:
            return
        if delta.get("role"):
            self.role = delta["role"]
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(call)
        if delta.get("function_call"):
            fc = self.function_call or {"name": "", "arguments": ""}
            fc["name"] += delta["function_call"].get("name") or ""
            fc["arguments"] += delta["function_call"].get("arguments") or ""
            self.function_call = fc

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index", len(self.tool_calls))
        slot = self.tool_calls.get(index)
        if slot is None:
            slot = self.tool_calls[index] = {"id": call.get("id"), "type": call.get("type") or "function",
                                             "function": {"name": "", "arguments": ""}}
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.content) if self.content else None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.function_call:
            message["function_call"] = self.function_call
        return message


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
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
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
