"""Composing guards from a route's `guards:` list, and running them on one answer."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from proxy.guards._context import AnswerContext
from proxy.guards._options import GuardOptionError
from proxy.guards._result import GuardResult, fail
from proxy.guards.finish_reason import FinishReasonGuard
from proxy.guards.json_schema import JsonSchemaGuard
from proxy.guards.max_chars import MaxCharsGuard
from proxy.guards.out_of_scope import OutOfScopeGuard
from proxy.guards.refusal import RefusalGuard
from proxy.guards.regex import RegexDenyGuard, RegexRequireGuard
from proxy.guards.tool_params import ToolParamsGuard

__all__ = ["Guard", "GuardChain", "build_guards", "parse_spec", "guard_classes", "GUARD_NAMES",
           "DEFAULT_TAXONOMY", "GUARD_ERROR_CLASS"]

log = logging.getLogger("sluicegate.guards")

GUARD_ERROR_CLASS = "guard_error"

# class -> (severity, description). policies/taxonomy/default.yaml carries the same table.
TAXONOMY_TABLE: dict[str, tuple[str, str]] = {
    "unknown_tool": ("major", "a tool call names a tool the request did not declare"),
    "invalid_tool_arguments": ("major", "tool-call arguments are not a JSON object"),
    "missing_required_param": ("major", "a tool call lacks a required parameter"),
    "invented_tool_param": ("major", "a tool call passes a parameter the tool's schema does not declare"),
    "wrong_param_type": ("major", "a tool-call parameter has the wrong JSON type"),
    "enum_violation": ("major", "a tool-call parameter is not one of the allowed values"),
    "tool_schema_violation": ("major", "tool-call arguments break another rule of the tool's schema"),
    "tool_choice_ignored": ("major", "tool_choice / function_call (none, required, a named tool) not respected"),
    "invalid_json_output": ("major", "structured output was requested but the content is not valid JSON"),
    "schema_violation": ("major", "structured output parses but violates the requested schema"),
    "schema_fenced_output": ("minor", "structured output is wrapped in a markdown code fence"),
    "unusable_schema": ("minor", "the request's own schema does not compile, so the answer was not validated"),
    "verbose": ("minor", "the answer is longer than the route allows"),
    "forbidden_content": ("major", "the answer contains a denied pattern"),
    "missing_required_content": ("minor", "the answer lacks a required pattern"),
    "unexpected_refusal": ("major", "the model refused or said it cannot help where it should have"),
    "out_of_scope_answer": ("major", "the answer is not about the route's allowed topics"),
    "truncated_output": ("major", "the answer was cut off at the token limit (finish_reason: length)"),
    "content_filtered": ("major", "the provider's content filter stopped the answer"),
    GUARD_ERROR_CLASS: ("minor", "a guard raised an error (a bug); the answer was not fully checked"),
}
DEFAULT_TAXONOMY: dict[str, str] = {cls: sev for cls, (sev, _) in TAXONOMY_TABLE.items()}

_GUARDS: dict[str, Any] = {g.name: g for g in (JsonSchemaGuard, ToolParamsGuard, MaxCharsGuard, RegexDenyGuard,
                                                RegexRequireGuard, RefusalGuard, OutOfScopeGuard, FinishReasonGuard)}
GUARD_NAMES: tuple[str, ...] = tuple(_GUARDS)


class Guard(Protocol):
    name: str

    @property
    def classes(self) -> frozenset[str]: ...

    def check(self, request: dict[str, Any], answer: dict[str, Any],
              ctx: AnswerContext | None = None) -> list[GuardResult]: ...


def parse_spec(spec: Any) -> tuple[str, Any]:
    """`name` or `{name: options}` -> (name, options). ValueError if malformed or unknown."""
    if isinstance(spec, str):
        name, options = spec, None
    elif isinstance(spec, Mapping) and len(spec) == 1:
        ((name, options),) = spec.items()
    else:
        raise ValueError(f"a guard is a name or a one-key mapping name -> options, e.g. {{max_chars: 4000}}; got {spec!r}")
    if not isinstance(name, str) or name not in _GUARDS:
        raise ValueError(f"unknown guard {name!r} (known: {', '.join(GUARD_NAMES)})")
    return name, options


def _build_one(spec: Any) -> Guard:
    name, options = parse_spec(spec)
    return _GUARDS[name].from_options(options)


def guard_classes(spec: str | Mapping[str, Any]) -> set[str]:
    """The taxonomy classes a guard (a name, or a spec with options such as `taxonomy:`) can emit.
    A bare name of a guard that requires options gives its default classes. `guard_error` (a guard's own
    bug) is not included: its severity falls back to DEFAULT_TAXONOMY when the policy lacks it."""
    name, options = parse_spec(spec)
    cls = _GUARDS[name]
    if options is None and hasattr(cls, "default_class"):
        return {cls.default_class}
    return set(_build_one(spec).classes)


def _severity_map(taxonomy: Mapping[str, Any] | None) -> dict[str, str]:
    out = dict(DEFAULT_TAXONOMY)
    for cls, value in (taxonomy or {}).items():
        sev = value if isinstance(value, str) else getattr(value, "severity", None)
        if sev is None and isinstance(value, Mapping):
            sev = value.get("severity")
        if isinstance(sev, str):
            out[cls] = sev
    return out


class GuardChain:
    """The guards of one route. `run` returns failures only, with severities from the taxonomy."""

    __slots__ = ("guards", "severities", "default_severity")

    def __init__(self, guards: Sequence[Guard], taxonomy: Mapping[str, Any] | None = None,
                 default_severity: str = "major") -> None:
        self.guards = tuple(guards)
        self.severities = _severity_map(taxonomy)
        self.default_severity = default_severity

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.guards)

    @property
    def classes(self) -> set[str]:
        out: set[str] = set()
        for g in self.guards:
            out |= g.classes
        return out

    def __bool__(self) -> bool:
        return bool(self.guards)

    def __len__(self) -> int:
        return len(self.guards)

    def run(self, request: dict[str, Any], answer: dict[str, Any]) -> list[GuardResult]:
        if not self.guards:
            return []
        ctx = AnswerContext(request, answer)
        out: list[GuardResult] = []
        for g in self.guards:
            try:
                found = g.check(request, answer, ctx)
            except Exception as exc:  # a guard bug must never fail the user's request
                log.exception("guard %s raised", g.name)
                found = [fail(g.name, GUARD_ERROR_CLASS, f"guard {g.name} raised {type(exc).__name__}: {exc}", "")]
            for r in found:
                if not r.passed:
                    sev = self.severities.get(r.taxonomy, self.default_severity)
                    out.append(dataclasses.replace(r, severity=sev) if r.severity != sev else r)
        return out


def build_guards(specs: Sequence[str | Mapping[str, Any]] | None, taxonomy: Mapping[str, Any] | None = None) -> GuardChain:
    """A GuardChain from a route's `guards:` list. `taxonomy`: class -> severity (a string, a mapping
    with `severity`, or the policy's TaxonomyClass); classes it lacks take DEFAULT_TAXONOMY's severity.
    Raises ValueError naming the guard (and its position) for an unknown name or bad options; a
    GuardOptionError (`where`: the path inside that guard's spec) when the bad value is known."""
    guards = []
    for position, spec in enumerate(specs or ()):
        try:
            guards.append(_build_one(spec))
        except ValueError as exc:
            raise GuardOptionError(f"guards[{position}]: {exc}", getattr(exc, "where", ())) from None
    return GuardChain(guards, taxonomy)
