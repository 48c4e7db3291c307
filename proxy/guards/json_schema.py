"""`json_schema`: structured output matches the request's `response_format`.

- `{type: json_schema, json_schema: {schema}}`: the content must parse as JSON and validate against
  the schema (draft 2020-12); every error is its own result, pointer into the content JSON
  (`/choices/0/message/content/items/2/price`).
- `{type: json_object}`: the content must parse to a JSON object.
- No `response_format` (or `{type: text}`): nothing is checked.

Markdown fences: an answer that is one fenced block (```json … ```) breaks a strict parser, so it
fails with `schema_fenced_output` (minor) unless the option `allow_fences: true`; either way the JSON
inside the fence is still parsed and validated, so schema errors are reported as well.
An answer with tool calls (and no content) or a `refusal` is not checked here (see `tool_params`
and `refusal`).

Classes: `invalid_json_output` (does not parse, or empty), `schema_violation` (parses, violates the
schema or is not an object for json_object), `schema_fenced_output`, `unusable_schema` (the request's
schema does not compile). Options: `allow_fences` (bool, default false), `max_errors` (default 50).
"""

from __future__ import annotations

from typing import Any

from proxy.guards._context import AnswerContext, short
from proxy.guards._options import bool_opt, int_opt, options_dict
from proxy.guards._result import GuardResult, fail, pointer
from proxy.guards._schema import SCHEMAS, SchemaError, dotted, findings, json_type

__all__ = ["JsonSchemaGuard"]


class JsonSchemaGuard:
    name = "json_schema"
    classes = frozenset({"invalid_json_output", "schema_violation", "schema_fenced_output", "unusable_schema"})

    __slots__ = ("allow_fences", "max_errors")

    def __init__(self, allow_fences: bool = False, max_errors: int = 50) -> None:
        self.allow_fences = allow_fences
        self.max_errors = max_errors

    @classmethod
    def from_options(cls, options: Any) -> JsonSchemaGuard:
        opts = options_dict(cls.name, options, {"allow_fences", "max_errors"})
        return cls(bool_opt(cls.name, opts, "allow_fences", False), int_opt(cls.name, opts, "max_errors", 50))

    def check(self, request: dict[str, Any], answer: dict[str, Any], ctx: AnswerContext | None = None) -> list[GuardResult]:
        fmt = request.get("response_format")
        if not isinstance(fmt, dict):
            return []
        kind = fmt.get("type")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            schema_name = spec.get("name") if isinstance(spec, dict) else None
        elif kind == "json_object":
            schema, schema_name = None, None
        else:
            return []
        ctx = ctx or AnswerContext(request, answer)
        g = self.name
        out: list[GuardResult] = []
        for i, choice in enumerate(ctx.choices()):
            message = ctx.message(choice)
            if message.get("tool_calls") or message.get("function_call") or message.get("refusal"):
                continue
            where = ctx.content_pointer(i, choice)
            text = ctx.text(choice)
            if not text.strip():
                out.append(fail(g, "invalid_json_output", f"response_format is {kind} but the content is empty "
                                f"(finish_reason: {choice.get('finish_reason')})", where))
                continue
            parsed = ctx.content_json(i, choice)
            if parsed.fenced and not self.allow_fences:
                out.append(fail(g, "schema_fenced_output", "the JSON is wrapped in a markdown code fence (```); "
                                "a JSON parser rejects it (set allow_fences: true to accept)", where))
            if not parsed.ok:
                out.append(fail(g, "invalid_json_output",
                                f"response_format is {kind} but the content is not valid JSON ({parsed.error}); "
                                f"starts {short(text, 60)!r}", where))
                continue
            value = parsed.value
            if kind == "json_object" or schema is None:
                if not isinstance(value, dict):
                    out.append(fail(g, "schema_violation",
                                    f"response_format is {kind}: expected a JSON object, got {json_type(value)}", where))
                continue
            try:
                validator = SCHEMAS.get(schema)
            except SchemaError as exc:
                out.append(fail(g, "unusable_schema", f"the request's schema {schema_name or ''} does not compile ({exc}); "
                                "content not validated", where))
                continue
            label = f"schema '{schema_name}'" if schema_name else "the schema"
            for f in findings(validator, schema, value, self.max_errors):
                at = dotted(f.path)
                if f.kind == "Required":
                    detail = f"{label}: required property '{at}' is missing"
                elif f.kind == "Additional":
                    detail = f"{label}: property '{at}' is not allowed (declared: {', '.join(f.expected or []) or 'none'})"
                elif f.kind == "Type":
                    detail = f"{label}: '{at}' must be {' or '.join(f.expected)}, got {json_type(f.instance)} {short(f.instance)}"
                elif f.kind == "Enum":
                    detail = f"{label}: '{at}' must be one of {short(f.expected, 200)}, got {short(f.instance)}"
                else:
                    detail = f"{label}: '{at}': {short(f.message, 200)}"
                out.append(fail(g, "schema_violation", detail, pointer(where, f.path)))
            if len(out) >= self.max_errors:
                return out[: self.max_errors]
        return out
