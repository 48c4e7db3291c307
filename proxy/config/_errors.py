"""PolicyIssue / PolicyError and the small helpers every pass uses to word a problem."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence

__all__ = ["PolicyError", "PolicyIssue", "format_path", "suggest", "unknown_name"]

PathT = tuple["str | int", ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-/:@+]+$")


@dataclasses.dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file. `line` and `column` are 1-based (None when unknown)."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(Exception):
    """A policy that cannot be used. `issues` holds every problem found, in file order."""

    def __init__(self, issues: Iterable[PolicyIssue]) -> None:
        unique = list(dict.fromkeys(issues))
        unique.sort(key=lambda i: (i.line is None, i.line or 0, i.column or 0))
        self.issues: list[PolicyIssue] = unique
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)

    def __reduce__(self):  # keep pickling (e.g. across processes) working
        return (type(self), (self.issues,))


def format_path(path: Sequence[str | int]) -> str:
    """('routes', 'support-bot', 'fallbacks', 0) -> 'routes.support-bot.fallbacks[0]'.

    Keys that are not plain names (dots, spaces, ...) are quoted: models["llama3.1"].
    """
    out = ""
    for part in path:
        if isinstance(part, str) and _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        elif isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            text = str(part).replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{text}"]'
    return out


def suggest(word: object, candidates: Iterable[object]) -> str | None:
    """The closest candidate to `word` (case-insensitive), or None when nothing is close."""
    names = [str(c) for c in candidates]
    if not names:
        return None
    lowered: dict[str, str] = {}
    for name in names:
        lowered.setdefault(name.lower(), name)
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def unknown_name(what: str, value: str, known: Sequence[str], section: str) -> str:
    """"unknown model 'prdo'; did you mean 'prod'?" or a list of what exists."""
    message = f"unknown {what} '{value}'"
    close = suggest(value, known)
    if close is not None:
        return f"{message}; did you mean '{close}'?"
    if not known:
        return f"{message}; the policy defines no {section}"
    listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    return f"{message}; {section} defined: {listed}"
