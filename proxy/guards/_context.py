"""Per-answer shared state: each content and each tool-call `arguments` string is parsed at most once,
whichever guards look at it."""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["AnswerContext", "Parsed", "short"]

# A whole answer that is one markdown code fence: ```json\n...\n``` (language tag optional).
_FENCE = re.compile(r"\A\s*```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL)


def short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Parsed:
    """A parsed JSON string: `ok` and `value`, else `error`; `fenced` if it was inside a ``` fence."""

    __slots__ = ("ok", "value", "error", "fenced")

    def __init__(self, ok: bool, value: Any = None, error: str = "", fenced: bool = False) -> None:
        self.ok = ok
        self.value = value
        self.error = error
        self.fenced = fenced


def _parse(text: str) -> Parsed:
    try:
        return Parsed(True, orjson.loads(text))
    except orjson.JSONDecodeError as exc:
        error = str(exc)
    match = _FENCE.match(text)
    if match:
        try:
            return Parsed(True, orjson.loads(match.group(1)), fenced=True)
        except orjson.JSONDecodeError as exc:
            return Parsed(False, error=str(exc), fenced=True)
    return Parsed(False, error=error)


class AnswerContext:
    """Built once per answer by `GuardChain.run` and handed to every guard."""

    __slots__ = ("request", "answer", "_content", "_args")

    def __init__(self, request: dict[str, Any], answer: dict[str, Any]) -> None:
        self.request = request
        self.answer = answer
        self._content: dict[int, Parsed] = {}
        self._args: dict[tuple[int, int], Parsed] = {}

    def choices(self) -> list[dict[str, Any]]:
        choices = self.answer.get("choices") if isinstance(self.answer, dict) else None
        return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []

    @staticmethod
    def message(choice: dict[str, Any]) -> dict[str, Any]:
        message = choice.get("message")
        return message if isinstance(message, dict) else {}

    @staticmethod
    def content_pointer(i: int, choice: dict[str, Any]) -> str:
        return f"/choices/{i}/text" if "message" not in choice and "text" in choice else f"/choices/{i}/message/content"

    def text(self, choice: dict[str, Any]) -> str:
        """The answer's text: message content (joined text parts) or a text completion's `text`."""
        if "message" not in choice:
            text = choice.get("text")
            return text if isinstance(text, str) else ""
        content = self.message(choice).get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return ""

    def content_json(self, i: int, choice: dict[str, Any]) -> Parsed:
        parsed = self._content.get(i)
        if parsed is None:
            parsed = self._content[i] = _parse(self.text(choice))
        return parsed

    def arguments(self, i: int, j: int, raw: Any) -> Parsed:
        """Tool call j of choice i (j = -1 for a legacy `function_call`). Empty arguments count as `{}`."""
        key = (i, j)
        parsed = self._args.get(key)
        if parsed is None:
            if isinstance(raw, dict):  # some providers hand back an object already
                parsed = Parsed(True, raw)
            elif not isinstance(raw, str):
                parsed = Parsed(False, error=f"arguments is {type(raw).__name__}, not a JSON string")
            elif not raw.strip():
                parsed = Parsed(True, {})
            else:
                try:
                    parsed = Parsed(True, orjson.loads(raw))
                except orjson.JSONDecodeError as exc:
                    parsed = Parsed(False, error=str(exc))
            self._args[key] = parsed
        return parsed
