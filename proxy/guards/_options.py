"""Small helpers for validating guard options (errors are ValueError with the guard's name)."""

from __future__ import annotations

from typing import Any

from proxy.guards._policy_regex import PolicyRegex, PolicyRegexError, compile_policy_regex

__all__ = ["GuardOptionError", "options_dict", "bool_opt", "int_opt", "str_list", "taxonomy_opt", "compile_patterns"]


class GuardOptionError(ValueError):
    """A bad option whose place inside the guard's spec is known: `where` is the path from the spec
    (`("regex_deny", "patterns", 1)`), so `sluicegate check` can point at the line of that value."""

    def __init__(self, message: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.where = where


def options_dict(guard: str, options: Any, allowed: set[str], shorthand: str | None = None) -> dict[str, Any]:
    """Options as a mapping. A non-mapping value is the `shorthand` option (`{max_chars: 4000}`)."""
    if options is None or options is True:
        return {}
    if not isinstance(options, dict):
        if shorthand is None:
            raise ValueError(f"guard '{guard}': options must be a mapping of {sorted(allowed)}, got {options!r}")
        return {shorthand: options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"guard '{guard}': unknown option(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return options


def bool_opt(guard: str, opts: dict[str, Any], key: str, default: bool) -> bool:
    value = opts.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"guard '{guard}': option {key} must be true or false, got {value!r}")
    return value


def int_opt(guard: str, opts: dict[str, Any], key: str, default: int | None, minimum: int = 1) -> int:
    value = opts.get(key, default)
    if value is None:
        raise ValueError(f"guard '{guard}': option {key} is required (an integer >= {minimum})")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"guard '{guard}': option {key} must be an integer >= {minimum}, got {value!r}")
    return value


def str_list(guard: str, opts: dict[str, Any], key: str, default: list[str] | None, allow_empty: bool = False) -> list[str]:
    value = opts.get(key, default)
    if isinstance(value, str):
        value = [value]
    if value is None:
        raise ValueError(f"guard '{guard}': option {key} is required (a list of strings)")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"guard '{guard}': option {key} must be a list of non-empty strings, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"guard '{guard}': option {key} must not be empty")
    return value


def taxonomy_opt(guard: str, opts: dict[str, Any], default: str) -> str:
    value = opts.get("taxonomy", default)
    if not isinstance(value, str) or not value or any(c.isspace() or c == "," for c in value):
        raise ValueError(f"guard '{guard}': option taxonomy must be a class name without spaces or commas, got {value!r}")
    return value


def compile_patterns(guard: str, patterns: list[str], ignore_case: bool,
                     where: tuple[str | int, ...] = (), indexed: bool = True) -> list[PolicyRegex]:
    """Policy patterns compiled for linear-time matching (RE2, see `_policy_regex`). A refused pattern
    raises GuardOptionError at `where` (+ its index when the option was a list)."""
    out = []
    for i, p in enumerate(patterns):
        try:
            out.append(compile_policy_regex(p, ignore_case))
        except PolicyRegexError as exc:
            raise GuardOptionError(f"guard '{guard}': {exc}", (*where, i) if indexed else where) from None
    return out
