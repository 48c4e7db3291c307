"""Entry points: text or file -> Policy, or PolicyError listing every problem."""

from __future__ import annotations

import inspect
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from proxy.config._crossref import check_references
from proxy.config._errors import PathT, PolicyError, PolicyIssue, format_path, suggest
from proxy.config._locate import Document, compose, is_secret_path
from proxy.config._models import Policy

__all__ = ["load_policy", "parse_policy"]

_MISSING = object()
_NO_ECHO = frozenset({"missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found"})


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read, interpolate (os.environ), validate and cross-check a policy file."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "file not found"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start})"
    except OSError as exc:
        problem = f"cannot read: {exc.strerror or exc}"
    else:
        return parse_policy(text, source, base_dir=Path(source).parent)
    raise PolicyError([PolicyIssue(source, None, None, "", problem)])


def parse_policy(
    text: str,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> Policy:
    """Validate policy text. `env` defaults to os.environ; relative paths (rubrics) resolve
    against `base_dir`, by default the folder of `source` (the working directory for "<...>").
    """
    if env is None:
        env = os.environ
    if base_dir is None:
        base = Path.cwd() if source.startswith("<") else Path(source).parent
    else:
        base = Path(base_dir)

    doc = compose(text, source, env)
    issues = list(doc.issues)
    data = doc.data
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {_kind(data)}"
        issues.append(
            doc.locator.issue(
                (), f"a policy must be a mapping with providers, models, routes, ...; found {found}"
            )
        )
        raise PolicyError(_scrub(issues, doc))

    later: list[PolicyIssue] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        later.extend(_translate(exc, doc))
    crossref_issues, rubrics = check_references(data, doc.locator, base)
    later.extend(crossref_issues)
    # A value whose interpolation failed was already reported; say nothing more about it.
    broken = {format_path(p) for p in doc.broken}
    issues.extend(i for i in later if i.path not in broken)
    if issues or policy is None:
        raise PolicyError(_scrub(issues, doc))
    policy._attach(source, text, base.resolve(), rubrics)
    return policy


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _scrub(issues: list[PolicyIssue], doc: Document) -> list[PolicyIssue]:
    """Last line of defence: no secret value survives in any message."""
    secrets = sorted((s for s in doc.secrets if len(s) >= 4), key=len, reverse=True)
    if not secrets:
        return issues
    out = []
    for issue in issues:
        message = issue.message
        for secret in secrets:
            message = message.replace(secret, "***")
        out.append(issue if message == issue.message else PolicyIssue(
            issue.file, issue.line, issue.column, issue.path, message))
    return out


# --------------------------------------------------------------------------- pydantic errors


def _data_path(data: Any, loc: tuple[Any, ...], missing: bool) -> tuple[PathT, bool]:
    """Follow `loc` through the data; drop what is not a real key (union member tags).

    Returns (path, whether some loc element was dropped).
    """
    path: list[Any] = []
    current = data
    dropped = False
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        if isinstance(current, dict):
            if part in current:
                path.append(part)
                current = current[part]
                continue
            match = next((k for k in current if str(k) == str(part)), _MISSING)
            if match is not _MISSING:
                path.append(match)
                current = current[match]
                continue
            if missing and i == len(loc) - 1:
                path.append(part)
                current = _MISSING
                continue
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
            continue
        dropped = True
    return tuple(path), dropped


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def _union_members(tp: Any) -> list[Any] | None:
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_strip(a) for a in typing.get_args(tp) if a is not type(None)]
    return None


def _kind_tags(model: Any) -> tuple[str, ...]:
    if _is_model(model) and "kind" in model.model_fields:
        return tuple(typing.get_args(model.model_fields["kind"].annotation))
    return ()


def _step(tp: Any, part: Any) -> Any:
    tp = _strip(tp)
    members = _union_members(tp)
    if members is not None:
        for member in members:
            if part in _kind_tags(member):
                return member  # a discriminated-union tag in the loc
        for member in members:
            found = _step(member, part)
            if found is not None:
                return found
        return None
    if _is_model(tp):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (dict, Mapping) and len(args) == 2:
        return args[0] if part == "[key]" else args[1]
    if origin in (list, tuple) and args and isinstance(part, int):
        return args[0]
    return None


def _type_at(loc: tuple[Any, ...]) -> Any:
    tp: Any = Policy
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return None
    return tp


def _models_at(loc: tuple[Any, ...]) -> list[type[BaseModel]]:
    tp = _strip(_type_at(loc))
    members = _union_members(tp)
    return [m for m in (members if members is not None else [tp]) if _is_model(m)]


def _show(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return None  # containers: the message says what is wrong with them


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def _message(err: Mapping[str, Any], loc: tuple[Any, ...], value: Any) -> tuple[str, str]:
    """(message, hint); the caller may put "(got ...)" between them."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing", ""
    if kind == "extra_forbidden":
        allowed = sorted({f for m in _models_at(loc[:-1]) for f in m.model_fields})
        close = suggest(loc[-1], allowed)
        if close is not None:
            return f"unknown key '{loc[-1]}'", f"; did you mean '{close}'?"
        return f"unknown key '{loc[-1]}'", f"; allowed keys: {', '.join(allowed)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for m in (_union_members(_type_at(loc)) or []) for t in _kind_tags(m)]
        listed = ", ".join(tags)
        if kind == "union_tag_not_found":
            return f"required field is missing (one of {listed})", ""
        tag = ctx.get("tag")
        close = suggest(tag, tags)
        hint = f"; did you mean '{close}'?" if close else ""
        return f"unknown kind '{tag}'; expected one of {listed}", hint
    if kind == "literal_error":
        choices = _choices(str(ctx.get("expected", "")))
        close = suggest(value, choices) if isinstance(value, str) else None
        return f"must be one of {', '.join(choices)}", (f"; did you mean '{close}'?" if close else "")
    message = str(err.get("msg", kind))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :], ""
    return message[:1].lower() + message[1:], ""


def _translate(exc: ValidationError, doc: Document) -> list[PolicyIssue]:
    data = doc.data
    # Errors of the branches of one union at one place become one issue ("...; or ...").
    grouped: dict[tuple[PathT, PathT, str, Any], tuple[list[str], list[str], list[str]]] = {}
    for n, err in enumerate(exc.errors(include_url=False, include_input=True)):
        loc = tuple(err["loc"])
        kind = err["type"]
        path, dropped = _data_path(data, loc, missing=kind == "missing")
        point: PathT = path
        at = "auto"
        if kind == "missing":
            point = path[:-1]
        elif kind == "union_tag_not_found":
            path = (*path, "kind")
            point = path[:-1]
        elif kind == "union_tag_invalid":
            path = (*path, "kind")
            point = path
            at = "value"
        elif kind == "extra_forbidden" or "[key]" in loc:
            at = "key"

        value = err.get("input", _MISSING)
        message, hint = _message(err, loc, value)
        secret = is_secret_path(path) or any(p in ("api_key", "headers") for p in loc)
        echo = not secret and path not in doc.interpolated and kind not in _NO_ECHO
        got = ""
        if echo and value is not _MISSING:
            shown = _show(value)
            if shown is not None and shown not in message:
                got = f" (got {shown})"
        key = (path, point, at, dropped if dropped else n)
        messages, gots, hints = grouped.setdefault(key, ([], [], []))
        for item, bucket in ((message, messages), (got, gots), (hint, hints)):
            if item and item not in bucket:
                bucket.append(item)
    return [
        doc.locator.issue(
            path, "; or ".join(m) + "".join(g[:1]) + "".join(h[:1]), at, point=point  # type: ignore[arg-type]
        )
        for (path, point, at, _), (m, g, h) in grouped.items()
    ]
