"""`refusal`: the answer refused, for routes where a refusal is a failure. Class `unexpected_refusal`.

Detected by the `refusal` field of the message (OpenAI structured-output refusals), or by a refusal
phrase in the first `window` characters of the text (case-insensitive, curly apostrophes normalised).
Options: `phrases` (replace the defaults), `extra_phrases` (add to them), `window` (default 300),
`taxonomy`.
"""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext, short
from proxy.guards._options import int_opt, options_dict, str_list, taxonomy_opt
from proxy.guards._policy_regex import literal_alternation
from proxy.guards._result import GuardResult, fail

__all__ = ["RefusalGuard", "DEFAULT_REFUSAL_PHRASES"]

DEFAULT_REFUSAL_PHRASES = (
    "i can't help with", "i cannot help with", "i can't assist with", "i cannot assist with",
    "i'm sorry, but i can't", "i'm sorry, but i cannot", "i am sorry, but i cannot", "i'm unable to help",
    "i am unable to help", "i'm not able to help", "i am not able to help", "i won't be able to help",
    "i can't provide", "i cannot provide", "i'm not able to provide", "i can't comply", "i cannot comply",
    "i must decline", "i'm afraid i can't", "as an ai language model, i cannot",
)


class RefusalGuard:
    name = "refusal"
    default_class = "unexpected_refusal"
    __slots__ = ("pattern", "window", "taxonomy")

    def __init__(self, phrases: list[str] | tuple[str, ...] = DEFAULT_REFUSAL_PHRASES, window: int = 300,
                 taxonomy: str = "unexpected_refusal") -> None:
        norm = {p.lower().replace("\u2019", "'") for p in phrases}
        self.pattern = literal_alternation(norm, whole_words=False, ignore_case=False) if norm else None
        self.window = window
        self.taxonomy = taxonomy

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({self.taxonomy})

    @classmethod
    def from_options(cls, options: Any) -> RefusalGuard:
        opts = options_dict(cls.name, options, {"phrases", "extra_phrases", "window", "taxonomy"})
        phrases = str_list(cls.name, opts, "phrases", list(DEFAULT_REFUSAL_PHRASES), allow_empty=True)
        phrases += str_list(cls.name, opts, "extra_phrases", [], allow_empty=True)
        return cls(phrases, int_opt(cls.name, opts, "window", 300), taxonomy_opt(cls.name, opts, cls.default_class))

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            refusal = ctx.message(choice).get("refusal")
            if isinstance(refusal, str) and refusal:
                out.append(fail(self.name, self.taxonomy, f"the model refused: {short(refusal)!r}",
                                f"/choices/{i}/message/refusal"))
                continue
            if self.pattern is None:
                continue
            head = ctx.text(choice)[: self.window].lower().replace("\u2019", "'")
            m = self.pattern.search(head)
            if m:
                out.append(fail(self.name, self.taxonomy, f"the answer refuses ({m.group(0)!r} at character {m.start()})",
                                ctx.content_pointer(i, choice)))
        return out
