"""`finish_reason`: `length` (cut at max_tokens) -> `truncated_output`; `content_filter` -> `content_filtered`."""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext
from proxy.guards._options import options_dict
from proxy.guards._result import GuardResult, fail

__all__ = ["FinishReasonGuard"]

_CLASSES = {
    "length": ("truncated_output", "the answer was cut off (finish_reason: length; raise max_tokens or shorten the output)"),
    "content_filter": ("content_filtered", "the provider's content filter stopped the answer (finish_reason: content_filter)"),
}


class FinishReasonGuard:
    name = "finish_reason"
    classes = frozenset(c for c, _ in _CLASSES.values())
    __slots__ = ()

    @classmethod
    def from_options(cls, options: Any) -> FinishReasonGuard:
        options_dict(cls.name, options, set())
        return cls()

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            found = _CLASSES.get(choice.get("finish_reason"))
            if found:
                out.append(fail(self.name, found[0], found[1], f"/choices/{i}/finish_reason"))
        return out
