"""Regular expressions written in the policy, compiled in one place and matched in linear time (RE2).

    rx = compile_policy_regex(r"(?i)api[_-]?key")     # PolicyRegexError (a ValueError) if refused
    m = rx.search(answer_text)                          # None, or a match with .start() / .group()

Why RE2 (`google-re2`): a policy pattern runs on answer text a caller can steer, on the event loop.
Python's `re` backtracks, so `^(a+)+$` against 26 a's takes seconds and stalls every request; RE2
matches in time linear in the text whatever the pattern, so nothing has to leave the loop.
The price is RE2's syntax, which has no look-around and no backreferences: such patterns are
refused when the policy is loaded, with a message saying what to write instead.

Patterns keep Python's meaning where RE2's would silently differ (translated before compiling):
`\\d`, `\\w`, `\\s` and their negations match Unicode as in Python (RE2's own are ASCII-only), `\\Z`
is RE2's `\\z`, `\\uXXXX` / `\\UXXXXXXXX` / `\\N{NAME}` name characters, `x{,n}` is `x{0,n}`, and
`(?#...)` comments are dropped. What still differs from Python is listed in README ("Guards").

Keyword and phrase lists (`out_of_scope`, `refusal`, rule scorers' `keywords`) are not regular
expressions: `literal_alternation` escapes every entry, so the pattern is literals with at most a
one-character look-around on each side — nothing to backtrack into, cost ~ text length x entries —
and it stays on Python's `re`, whose look-around gives the whole-word test RE2 cannot express.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Protocol

import re2

__all__ = ["PolicyRegex", "PolicyRegexError", "RegexMatch", "compile_policy_regex", "literal_alternation", "to_re2"]

# Python's Unicode classes, spelled with RE2's Unicode properties. Checked against Python's `re`
# over every assigned code point in tests/guards/test_regex_bounded.py.
_WORD = r"\p{L}\p{N}_"
_SPACE = r"\t-\r\x1c-\x1f\x85\p{Z}"
_DIGIT = r"\p{Nd}"
_OUTSIDE = {"d": _DIGIT, "D": r"\P{Nd}", "w": f"[{_WORD}]", "W": f"[^{_WORD}]", "s": f"[{_SPACE}]",
            "S": f"[^{_SPACE}]"}
_INSIDE = {"d": _DIGIT, "D": r"\P{Nd}", "w": _WORD, "s": _SPACE}  # \W, \S: see _class
_NEGATED_INSIDE = {"W": f"[^{_WORD}]", "S": f"[^{_SPACE}]"}
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_SYNTAX = "RE2 syntax: https://github.com/google/re2/wiki/Syntax"


class PolicyRegexError(ValueError):
    """A policy pattern that cannot be used; the message says why and what to write instead."""


class RegexMatch(Protocol):
    def start(self, group: int = 0) -> int: ...

    def group(self, *groups: int | str) -> str | None: ...


def _options(ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # a refused pattern is reported to the policy's author, not to stderr
    return options


class PolicyRegex:
    """A compiled policy pattern. `pattern` is the text as written in the policy."""

    __slots__ = ("pattern", "ignore_case", "_regexp")

    def __init__(self, pattern: str, ignore_case: bool = False) -> None:
        self.pattern = pattern
        self.ignore_case = ignore_case
        try:
            self._regexp = re2.compile(to_re2(pattern), _options(ignore_case))
        except re2.error as exc:
            raise PolicyRegexError(_explain(pattern, exc)) from None

    def search(self, text: str) -> RegexMatch | None:
        """The first match in `text` (offsets in characters, as with `re`), or None."""
        try:
            return self._regexp.search(text)
        except UnicodeEncodeError:  # a lone surrogate (json.loads lets "\ud800" through): RE2 needs UTF-8
            return self._regexp.search(text.encode("utf-8", "replace").decode("utf-8"))  # same length

    def __repr__(self) -> str:
        return f"PolicyRegex({self.pattern!r}{', ignore_case=True' if self.ignore_case else ''})"


def compile_policy_regex(pattern: str, ignore_case: bool = False) -> PolicyRegex:
    """The one way to compile a regular expression taken from a policy (guards, rule scorers)."""
    return PolicyRegex(pattern, ignore_case)


def literal_alternation(entries: Iterable[str], *, whole_words: bool, ignore_case: bool) -> re.Pattern[str]:
    """One pattern finding any of `entries` taken literally, longest first (so that a phrase wins over
    a keyword it starts with); `whole_words`: not inside a longer word. Callers normalise and
    de-duplicate entries first; an empty list is theirs to refuse."""
    alternation = "|".join(re.escape(e) for e in sorted(entries, key=len, reverse=True))
    pattern = rf"(?<!\w)(?:{alternation})(?!\w)" if whole_words else alternation
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _explain(pattern: str, exc: re2.error) -> str:
    raw = exc.args[0] if exc.args else ""
    detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for whole in (f": {pattern}", f": {to_re2(pattern)}"):  # "missing ): (abc" -> "missing )"
        detail = detail.removesuffix(whole)
    if any(op in detail for op in ("(?=", "(?!", "(?<=", "(?<!")):
        why = "look-ahead and look-behind ((?=, (?!, (?<=, (?<!) are not supported"
    elif "(?P" in detail and "(?P=" in pattern:
        why = "backreferences ((?P=name)) are not supported"
    elif "(?>" in detail or "++" in detail or "*+" in detail or "?+" in detail:
        why = "atomic groups and possessive quantifiers are not supported (and not needed: RE2 never backtracks)"
    elif "(?x" in detail:
        why = "verbose mode (?x) is not supported; write the pattern without spaces and comments"
    elif "pattern too large" in detail:
        why = ("the pattern is too large (its compiled program exceeds RE2's 8 MiB budget; a Unicode class "
               "such as \\w repeated many times is large: lower the count, or use [A-Za-z0-9_])")
    else:
        return f"pattern {pattern!r} does not compile: {detail} ({_SYNTAX})"
    return f"pattern {pattern!r} is refused: {why} ({_SYNTAX}; RE2 matches in linear time)"


def to_re2(pattern: str) -> str:
    """Rewrite the Python-isms RE2 would reject or read differently (see the module docstring).
    Raises PolicyRegexError for what has no RE2 equivalent (backreferences, \\W or \\S in [^...])."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            i = _escape(pattern, i, out, in_class=False)
        elif c == "[":
            i = _class(pattern, i, out)
        elif c == "(" and pattern.startswith("(?#", i):
            end = pattern.find(")", i)
            i = n if end < 0 else end + 1  # Python's comment group; RE2 has none
        elif c == "{" and out and (j := _short_repeat(pattern, i)) > 0:
            out.append("{0," + pattern[i + 2:j - 1] + "}")  # Python's x{,n} is x{0,n}; RE2 reads it literally
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _short_repeat(pattern: str, i: int) -> int:
    """End of `{,digits}` starting at i, or 0."""
    if not pattern.startswith("{,", i):
        return 0
    j = i + 2
    while j < len(pattern) and pattern[j].isascii() and pattern[j].isdigit():
        j += 1
    return j + 1 if j > i + 2 and j < len(pattern) and pattern[j] == "}" else 0


def _braced(pattern: str, i: int) -> int:
    """Index just past the `}` closing the `{` at i (or the end of the pattern)."""
    end = pattern.find("}", i)
    return len(pattern) if end < 0 else end + 1


def _escape(pattern: str, i: int, out: list[str], in_class: bool) -> int:
    """Translate the escape at pattern[i] == '\\'; return the index after it."""
    c = pattern[i + 1]
    if c in (_INSIDE if in_class else _OUTSIDE):  # in a class, \W and \S are handled by _class
        out.append((_INSIDE if in_class else _OUTSIDE)[c])
        return i + 2
    if c == "Z" and not in_class:
        out.append(r"\z")
        return i + 2
    if c == "Q":  # RE2's quoted literal \Q...\E: copied untouched
        end = pattern.find(r"\E", i + 2)
        end = len(pattern) if end < 0 else end + 2
        out.append(pattern[i:end])
        return end
    if c in "pPx" and pattern.startswith("{", i + 2):
        end = _braced(pattern, i + 2)
        out.append(pattern[i:end])
        return end
    if c in "uU":
        width = 4 if c == "u" else 8
        digits = pattern[i + 2:i + 2 + width]
        if len(digits) != width or not all(d in _HEX for d in digits):
            raise PolicyRegexError(f"pattern {pattern!r}: \\{c} needs {width} hex digits")
        out.append(f"\\x{{{digits}}}")
        return i + 2 + width
    if c == "N" and pattern.startswith("{", i + 2):
        end = _braced(pattern, i + 2)
        name = pattern[i + 3:end - 1]
        try:
            out.append(f"\\x{{{ord(unicodedata.lookup(name)):X}}}")
        except KeyError:
            raise PolicyRegexError(f"pattern {pattern!r}: unknown character name \\N{{{name}}}") from None
        return end
    if c in "123456789" and not in_class:
        if c in _OCTAL and pattern[i + 2:i + 3] in _OCTAL and pattern[i + 3:i + 4] in _OCTAL:
            out.append(pattern[i:i + 4])  # \123 is an octal character in both engines
            return i + 4
        raise PolicyRegexError(f"pattern {pattern!r} is refused: backreferences (\\{c}) are not supported "
                               f"({_SYNTAX}; RE2 matches in linear time)")
    out.append(pattern[i:i + 2])
    return i + 2


def _class(pattern: str, start: int, out: list[str]) -> int:
    """Translate the character class opening at pattern[start] == '['; return the index after it."""
    i, n = start + 1, len(pattern)
    negated = i < n and pattern[i] == "^"
    if negated:
        i += 1
    body: list[str] = []
    complements: list[str] = []  # \W, \S: a union with a negated class, which RE2 cannot nest
    first = True
    while i < n:
        c = pattern[i]
        if c == "]" and not first:
            break
        first = False
        if c == "\\" and i + 1 < n:
            if pattern[i + 1] in _NEGATED_INSIDE:
                complements.append(_NEGATED_INSIDE[pattern[i + 1]])
                i += 2
            else:
                i = _escape(pattern, i, body, in_class=True)
        elif c == "[" and pattern.startswith("[:", i):  # [:alpha:] (RE2's ASCII classes)
            end = pattern.find(":]", i + 2)
            end = n if end < 0 else end + 2
            body.append(pattern[i:end])
            i = end
        else:
            body.append(c)
            i += 1
    if i >= n:  # unterminated: let RE2 word the error
        out.append(pattern[start:])
        return n
    inner = "".join(body)
    if not complements:
        out.append(f"[{'^' if negated else ''}{inner}]")
    elif negated:
        raise PolicyRegexError(f"pattern {pattern!r} is refused: {pattern[start:i + 1]} (\\W or \\S inside [^...]) "
                               "has no RE2 equivalent; name what to match instead, e.g. \\p{L} for letters "
                               f"({_SYNTAX})")
    else:  # [a\W] = (?:[a]|[^word]): a class is a union
        out.append("(?:" + "|".join(([f"[{inner}]"] if inner else []) + complements) + ")")
    return i + 1
