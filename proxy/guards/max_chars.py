"""`max_chars`: the answer's text is at most N characters (per choice). `{max_chars: 4000}` or
`{max_chars: {limit: 4000, taxonomy: verbose}}`. Class: `verbose`."""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext
from proxy.guards._options import int_opt, options_dict, taxonomy_opt
from proxy.guards._result import GuardResult, fail

__all__ = ["MaxCharsGuard"]


class MaxCharsGuard:
    name = "max_chars"
    default_class = "verbose"
    __slots__ = ("limit", "taxonomy")

    def __init__(self, limit: int, taxonomy: str = "verbose") -> None:
        self.limit = limit
        self.taxonomy = taxonomy

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({self.taxonomy})

    @classmethod
    def from_options(cls, options: Any) -> MaxCharsGuard:
        if options is None or options is True:
            raise ValueError("guard 'max_chars' needs a limit, e.g. {max_chars: 4000}")
        opts = options_dict(cls.name, options, {"limit", "taxonomy"}, shorthand="limit")
        return cls(int_opt(cls.name, opts, "limit", None), taxonomy_opt(cls.name, opts, cls.default_class))

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            n = len(ctx.text(choice))
            if n > self.limit:
                out.append(fail(self.name, self.taxonomy, f"the answer is {n} characters, over the limit of {self.limit}",
                                ctx.content_pointer(i, choice)))
        return out
