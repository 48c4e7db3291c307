"""`regex_deny` and `regex_require`: regular expressions over the answer's text (per choice).

`{regex_deny: ['(?i)api[_-]?key', 'BEGIN PRIVATE KEY']}` or
`{regex_deny: {patterns: [...], taxonomy: dangerous_advice, ignore_case: true}}`.
`regex_deny`: each pattern found is a failure (class from `taxonomy`, default `forbidden_content`).
`regex_require`: each pattern not found is a failure (default `missing_required_content`); with
`mode: any` one match of any pattern is enough (one failure if none matches).

Patterns are compiled by `_policy_regex` (RE2: linear time, so a caller-steered answer cannot stall
the event loop); a pattern RE2 cannot run (look-around, backreferences) is refused at load, and the
error points at that pattern (`guards[2].regex_deny[0]`).
"""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext, short
from proxy.guards._options import bool_opt, compile_patterns, options_dict, str_list, taxonomy_opt
from proxy.guards._result import GuardResult, fail

__all__ = ["RegexDenyGuard", "RegexRequireGuard"]


class _RegexGuard:
    name = ""
    default_class = ""
    __slots__ = ("patterns", "taxonomy", "any_mode")

    def __init__(self, patterns: list[str], taxonomy: str | None = None, ignore_case: bool = False,
                 any_mode: bool = False, *, where: tuple[str | int, ...] = (), indexed: bool = True) -> None:
        # where/indexed: the patterns' place in the guard's spec, for the location of a refused one
        self.patterns = compile_patterns(self.name, patterns, ignore_case, where, indexed)
        self.taxonomy = taxonomy or self.default_class
        self.any_mode = any_mode

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({self.taxonomy})

    @classmethod
    def from_options(cls, options: Any) -> Any:
        allowed = {"patterns", "taxonomy", "ignore_case"} | ({"mode"} if cls is RegexRequireGuard else set())
        if options is None or options is True:
            raise ValueError(f"guard '{cls.name}' needs patterns, e.g. {{{cls.name}: ['pattern']}}")
        opts = options_dict(cls.name, options, allowed, shorthand="patterns")
        mode = opts.get("mode", "all")
        if mode not in ("all", "any"):
            raise ValueError(f"guard '{cls.name}': option mode must be 'all' or 'any', got {mode!r}")
        where = (cls.name, "patterns") if isinstance(options, dict) else (cls.name,)
        return cls(str_list(cls.name, opts, "patterns", None), taxonomy_opt(cls.name, opts, cls.default_class),
                   bool_opt(cls.name, opts, "ignore_case", False), mode == "any",
                   where=where, indexed=isinstance(opts.get("patterns"), list))


class RegexDenyGuard(_RegexGuard):
    name = "regex_deny"
    default_class = "forbidden_content"
    __slots__ = ()

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            text = ctx.text(choice)
            if not text:
                continue
            for p in self.patterns:
                m = p.search(text)
                if m:
                    out.append(fail(self.name, self.taxonomy, f"forbidden pattern {p.pattern!r} found at character "
                                    f"{m.start()}: {short(m.group(0), 60)!r}", ctx.content_pointer(i, choice)))
        return out


class RegexRequireGuard(_RegexGuard):
    name = "regex_require"
    default_class = "missing_required_content"
    __slots__ = ()

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        out = []
        for i, choice in enumerate(ctx.choices()):
            message = ctx.message(choice)
            if message.get("tool_calls") or message.get("function_call"):
                continue  # a tool-calling turn has no prose to require anything of
            text = ctx.text(choice)
            where = ctx.content_pointer(i, choice)
            missing = [p.pattern for p in self.patterns if not p.search(text)]
            if self.any_mode:
                if len(missing) == len(self.patterns):
                    out.append(fail(self.name, self.taxonomy, f"none of the required patterns {missing!r} is in the answer", where))
            else:
                out.extend(fail(self.name, self.taxonomy, f"required pattern {p!r} is not in the answer", where) for p in missing)
        return out
