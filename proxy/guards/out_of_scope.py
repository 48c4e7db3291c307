"""`out_of_scope`: the answer stays on the route's topics. `{out_of_scope: [billing, invoice, refund]}`
or `{out_of_scope: {keywords: [...], min_matches: 1, taxonomy: out_of_scope_answer}}`.

An answer whose text mentions fewer than `min_matches` distinct keywords (case-insensitive, whole
words; a keyword may be a phrase) fails with `out_of_scope_answer`. Empty text (a tool-calling turn)
is not checked.
"""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext
from proxy.guards._options import int_opt, options_dict, str_list, taxonomy_opt
from proxy.guards._policy_regex import literal_alternation
from proxy.guards._result import GuardResult, fail

__all__ = ["OutOfScopeGuard"]


class OutOfScopeGuard:
    name = "out_of_scope"
    default_class = "out_of_scope_answer"
    __slots__ = ("keywords", "pattern", "min_matches", "taxonomy")

    def __init__(self, keywords: list[str], min_matches: int = 1, taxonomy: str = "out_of_scope_answer") -> None:
        self.keywords = keywords
        self.pattern = literal_alternation({k.lower() for k in keywords}, whole_words=True, ignore_case=True)
        self.min_matches = min_matches
        self.taxonomy = taxonomy

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({self.taxonomy})

    @classmethod
    def from_options(cls, options: Any) -> OutOfScopeGuard:
        if options is None or options is True:
            raise ValueError("guard 'out_of_scope' needs the allowed topic keywords, e.g. {out_of_scope: [billing, refund]}")
        opts = options_dict(cls.name, options, {"keywords", "min_matches", "taxonomy"}, shorthand="keywords")
        return cls(str_list(cls.name, opts, "keywords", None), int_opt(cls.name, opts, "min_matches", 1),
                   taxonomy_opt(cls.name, opts, cls.default_class))

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            text = ctx.text(choice)
            if not text.strip():
                continue
            found = {m.group(0).lower() for m in self.pattern.finditer(text)}
            if len(found) < self.min_matches:
                shown = ", ".join(self.keywords[:8]) + (", …" if len(self.keywords) > 8 else "")
                out.append(fail(self.name, self.taxonomy,
                                f"the answer mentions {len(found)} of the route's topics (needs {self.min_matches}; "
                                f"topics: {shown})", ctx.content_pointer(i, choice)))
        return out
