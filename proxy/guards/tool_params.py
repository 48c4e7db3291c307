"""`tool_params`: tool calls name declared tools, with JSON-object arguments valid against the tool's
`parameters` schema, and respect `tool_choice` / `function_call`.

Invented parameters: reported (`invented_tool_param`) where the schema forbids them
(`additionalProperties: false`, `unevaluatedProperties: false`) or the function is `strict: true`
(strict closes every object schema that lists `properties`, as OpenAI's strict mode requires). With the
option `forbid_undeclared: true` they are reported for every tool, even when the schema leaves
`additionalProperties` unset. Empty `arguments` ("") count as `{}`.

Options: `forbid_undeclared` (bool, default false), `max_errors` (per answer, default 50).
"""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext, short
from proxy.guards._options import bool_opt, int_opt, options_dict
from proxy.guards._result import GuardResult, fail, pointer
from proxy.guards._schema import SCHEMAS, SchemaError, dotted, findings, json_type

__all__ = ["ToolParamsGuard"]

_EMPTY_PARAMS: dict[str, Any] = {"type": "object", "properties": {}}
_CUSTOM = object()  # a declared custom (free-form input) tool: no argument schema

_CLASS_BY_KIND = {"Required": "missing_required_param", "Additional": "invented_tool_param",
                  "Type": "wrong_param_type", "Enum": "enum_violation", "Other": "tool_schema_violation"}


def _declared(request: dict[str, Any]) -> dict[str, Any]:
    """name -> (parameters schema, strict) or _CUSTOM, from `tools` and legacy `functions`."""
    out: dict[str, Any] = {}
    for tool in request.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type", "function")
        if kind == "function" and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            if isinstance(fn.get("name"), str):
                out[fn["name"]] = (fn.get("parameters") or _EMPTY_PARAMS, fn.get("strict") is True)
        elif kind == "custom" and isinstance(tool.get("custom"), dict) and isinstance(tool["custom"].get("name"), str):
            out[tool["custom"]["name"]] = _CUSTOM
    for fn in request.get("functions") or ():
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.setdefault(fn["name"], (fn.get("parameters") or _EMPTY_PARAMS, fn.get("strict") is True))
    return out


def _forced(request: dict[str, Any]) -> tuple[str, Any]:
    """('none'|'required'|'named'|'allowed'|'auto', detail) from tool_choice or legacy function_call."""
    choice = request.get("tool_choice")
    if choice is None:
        choice = request.get("function_call")
        if isinstance(choice, dict) and isinstance(choice.get("name"), str):
            return "named", choice["name"]
    if choice in ("none", "required"):
        return choice, None
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function" and isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str):
            return "named", choice["function"]["name"]
        if kind == "custom" and isinstance(choice.get("custom"), dict) and isinstance(choice["custom"].get("name"), str):
            return "named", choice["custom"]["name"]
        if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
            spec = choice["allowed_tools"]
            names = set()
            for t in spec.get("tools") or ():
                if isinstance(t, dict):
                    fn = t.get("function") if isinstance(t.get("function"), dict) else t
                    if isinstance(fn.get("name"), str):
                        names.add(fn["name"])
            return "allowed", (names, spec.get("mode") == "required")
    return "auto", None


class ToolParamsGuard:
    name = "tool_params"
    classes = frozenset({"unknown_tool", "invalid_tool_arguments", "missing_required_param", "invented_tool_param",
                         "wrong_param_type", "enum_violation", "tool_schema_violation", "tool_choice_ignored",
                         "unusable_schema"})

    __slots__ = ("forbid_undeclared", "max_errors")

    def __init__(self, forbid_undeclared: bool = False, max_errors: int = 50) -> None:
        self.forbid_undeclared = forbid_undeclared
        self.max_errors = max_errors

    @classmethod
    def from_options(cls, options: Any) -> ToolParamsGuard:
        opts = options_dict(cls.name, options, {"forbid_undeclared", "max_errors"})
        return cls(bool_opt(cls.name, opts, "forbid_undeclared", False), int_opt(cls.name, opts, "max_errors", 50))

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        ctx = ctx or AnswerContext(request, answer)
        declared: dict[str, Any] | None = None
        forced = _forced(request)
        out: list[GuardResult] = []
        for i, choice in enumerate(ctx.choices()):
            message = ctx.message(choice)
            calls: list[tuple[int, str, str, Any]] = []  # (j, name, pointer of the call, raw arguments)
            tool_calls = message.get("tool_calls")
            if isinstance(tool_calls, list):
                for j, call in enumerate(tool_calls):
                    if not isinstance(call, dict):
                        continue
                    if call.get("type") == "custom" and isinstance(call.get("custom"), dict):
                        calls.append((j, str(call["custom"].get("name")), f"/choices/{i}/message/tool_calls/{j}/custom", _CUSTOM))
                        continue
                    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
                    calls.append((j, fn.get("name"), f"/choices/{i}/message/tool_calls/{j}/function", fn.get("arguments")))
            fc = message.get("function_call")
            if isinstance(fc, dict):
                calls.append((-1, fc.get("name"), f"/choices/{i}/message/function_call", fc.get("arguments")))
            if calls and declared is None:
                declared = _declared(request)
            for j, name, base, raw in calls:
                out.extend(self._check_call(ctx, declared or {}, i, j, name, base, raw))
            out.extend(self._check_choice(forced, i, calls, choice))
            if len(out) >= self.max_errors:
                return out[: self.max_errors]
        return out

    def _check_call(self, ctx: AnswerContext, declared: dict[str, Any], i: int, j: int, name: Any, base: str,
                    raw: Any) -> list[GuardResult]:
        g = self.name
        spec = declared.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(sorted(declared)) or "none"
            return [fail(g, "unknown_tool", f"tool {name!r} is not declared in the request (declared: {known})",
                         base + "/name")]
        if spec is _CUSTOM or raw is _CUSTOM:
            return []
        parsed = ctx.arguments(i, j, raw)
        where = base + "/arguments"
        if not parsed.ok:
            return [fail(g, "invalid_tool_arguments",
                         f"tool '{name}': arguments are not valid JSON ({parsed.error}); got {short(raw)!r}", where)]
        if not isinstance(parsed.value, dict):
            return [fail(g, "invalid_tool_arguments",
                         f"tool '{name}': arguments must be a JSON object, got {json_type(parsed.value)} {short(parsed.value)}",
                         where)]
        schema, strict = spec
        try:
            validator = SCHEMAS.get(schema, closed=strict or self.forbid_undeclared)
        except SchemaError as exc:
            return [fail(g, "unusable_schema", f"tool '{name}': its parameters schema does not compile ({exc}); "
                         "arguments not validated", where)]
        out = []
        for f in findings(validator, schema, parsed.value, self.max_errors):
            param = dotted(f.path)
            if f.kind == "Required":
                detail = f"tool '{name}': required parameter '{param}' is missing"
            elif f.kind == "Additional":
                declared_names = ", ".join(f.expected) if f.expected is not None else "see schema"
                why = "strict: true" if strict else ("forbid_undeclared" if self.forbid_undeclared and not _forbids(schema) else "additionalProperties: false")
                detail = f"tool '{name}': parameter '{param}' is not declared ({why}; declared: {declared_names or 'none'})"
            elif f.kind == "Type":
                detail = (f"tool '{name}': parameter '{param}' must be {' or '.join(f.expected)}, "
                          f"got {json_type(f.instance)} {short(f.instance)}")
            elif f.kind == "Enum":
                detail = (f"tool '{name}': parameter '{param}' must be one of {short(f.expected, 200)}, "
                          f"got {short(f.instance)}")
            else:
                detail = f"tool '{name}': parameter '{param}': {short(f.message, 200)}"
            out.append(fail(g, _CLASS_BY_KIND[f.kind], detail, pointer(where, f.path)))
        return out

    def _check_choice(self, forced: tuple[str, Any], i: int, calls: list[tuple[int, Any, str, Any]],
                      choice: dict[str, Any]) -> list[GuardResult]:
        mode, arg = forced
        if mode == "auto":
            return []
        g = self.name
        where = f"/choices/{i}/message"
        finish = choice.get("finish_reason")
        if mode == "none":
            return [fail(g, "tool_choice_ignored", f"tool_choice is 'none' but the answer calls '{name}'", base)
                    for _, name, base, _ in calls]
        if mode == "required":
            if not calls:
                return [fail(g, "tool_choice_ignored",
                             f"tool_choice is 'required' but the answer calls no tool (finish_reason: {finish})", where)]
            return []
        if mode == "named":
            out = [fail(g, "tool_choice_ignored", f"tool_choice names '{arg}' but the answer calls '{name}'", base + "/name")
                   for _, name, base, _ in calls if name != arg]
            if not any(name == arg for _, name, _, _ in calls):
                out.insert(0, fail(g, "tool_choice_ignored",
                                   f"tool_choice names '{arg}' but the answer does not call it (finish_reason: {finish})",
                                   where))
            return out
        names, required = arg
        out = [fail(g, "tool_choice_ignored",
                    f"tool_choice allows only {', '.join(sorted(names))} but the answer calls '{name}'", base + "/name")
               for _, name, base, _ in calls if name not in names]
        if required and not calls:
            out.append(fail(g, "tool_choice_ignored",
                            f"tool_choice requires one of {', '.join(sorted(names))} but the answer calls no tool", where))
        return out


def _forbids(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("additionalProperties") is False
