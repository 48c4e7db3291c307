"""An upstream's error answer, re-shaped into OpenAI's error JSON and scrubbed, never passed through.

What is kept, where safe: the upstream's status (a 4xx keeps it, a 5xx becomes our 502), and from an
OpenAI-style body (`{"error": {...}}`, also `{"error": "..."}`, `{"message"|"detail": "..."}` of
vLLM, Ollama and other servers) its message (scrubbed, at most `MAX_MESSAGE_CHARS`), its `type` and
`code` when they are short identifiers, its `param` (scrubbed, bounded). A body that is not JSON
(an HTML page, a proxy's text) is described (status, content type, size), plus the start of plain
text (scrubbed); its bytes are never served — the client always gets `application/json`.
Of the upstream's headers only `retry-after` and `retry-after-ms` pass, and only if well-formed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from proxy.errors import UpstreamHTTPError
from proxy.providers._scrub import Scrubber

__all__ = ["ERROR_BODY_BYTES", "MAX_MESSAGE_CHARS", "bounded", "describe_body", "http_error", "pass_headers",
           "safe_identifier"]

ERROR_BODY_BYTES = 64 * 1024  # read of an error body at most; the rest is dropped unread
MAX_MESSAGE_CHARS = 1000
_SNIPPET_CHARS = 200
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SECONDS = re.compile(r"[0-9]{1,9}")
_MILLISECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


def http_error(provider: str, status: int, body: bytes, headers: Mapping[str, str], scrubber: Scrubber, *,
               cut: bool = False) -> UpstreamHTTPError:
    """The error for an upstream's answer with status >= 400 (`cut`: the body was longer than read)."""
    fields = _openai_fields(body, scrubber) if not cut else None
    if fields is not None and fields.get("message"):
        detail = str(fields["message"])
    else:
        detail = describe_body(body, headers.get("content-type"), scrubber.text, cut=cut)
        fields = {**(fields or {}), "message": f"upstream '{provider}' returned {status}: {detail}"}
    return UpstreamHTTPError(f"upstream '{provider}' returned {status}: {detail}", provider=provider,
                             upstream_status=status, error=fields, headers=pass_headers(headers))


def describe_body(body: bytes, content_type: str | None, scrub: Callable[[str], str], *, cut: bool = False) -> str:
    """A few words on a body that is not an OpenAI error: its kind and size, and the start of plain
    text (through `scrub`). Markup is never quoted."""
    if not body:
        return "an empty body"
    kind = (content_type or "").split(";")[0].strip().lower()[:64]
    size = f"over {len(body)}" if cut else str(len(body))
    if "html" in kind or "xml" in kind or body.lstrip()[:1] == b"<":
        return f"an HTML page of {size} bytes (not shown)"
    snippet = scrub(" ".join(body.decode("utf-8", "replace").split()))[:_SNIPPET_CHARS]
    return f"{'a ' + kind if kind else 'a'} body of {size} bytes: {snippet}"


def _openai_fields(body: bytes, scrubber: Scrubber) -> dict[str, str | None] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error: Any = data.get("error")
    if isinstance(error, str):
        error = {"message": error}
    elif not isinstance(error, dict):
        error = {"message": data.get("message") if isinstance(data.get("message"), str) else data.get("detail")}
    message = error.get("message")
    param = error.get("param")
    return {
        "message": bounded(scrubber.text(message)) if isinstance(message, str) and message.strip() else None,
        "type": safe_identifier(error.get("type")),
        "param": bounded(scrubber.text(param), _SNIPPET_CHARS) if isinstance(param, str) and param else None,
        "code": safe_identifier(error.get("code")),
    }


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters (scrub first: a cut must not split a secret out of reach)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_identifier(value: Any) -> str | None:
    """An upstream's error `type` or `code` if it is a short identifier (ints as text), else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if _IDENTIFIER.fullmatch(text) else None


def pass_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's `retry-after` (seconds or an HTTP date) and `retry-after-ms`, if well-formed."""
    out: dict[str, str] = {}
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if _SECONDS.fullmatch(value) or (len(value) <= 40 and _is_http_date(value)):
            out["retry-after"] = value
    value = headers.get("retry-after-ms")
    if value is not None and _MILLISECONDS.fullmatch(value.strip()):
        out["retry-after-ms"] = value.strip()
    return out


def _is_http_date(value: str) -> bool:
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True
