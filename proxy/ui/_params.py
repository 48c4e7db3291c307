"""Query parameters shared by a page and its JSON twin, parsed once so both see the same filters."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from proxy.errors import InvalidRequest
from proxy.times import time_param, time_range  # the one parser of time parameters (re-exported)
from proxy.ui._records import FILTERS, Search

__all__ = ["MAX_FORM_BYTES", "read_form", "search_params", "time_param", "time_range"]

MAX_FORM_BYTES = 64 * 1024
MAX_OFFSET = 1_000_000_000


def search_params(query: Mapping[str, str]) -> Search:
    unknown = sorted(set(query) - set(FILTERS) - {"offset"})
    if unknown:
        raise InvalidRequest(f"unknown search parameter '{unknown[0]}'; known: {', '.join(FILTERS)}, offset",
                             param=unknown[0])
    try:
        offset = min(max(0, int(query.get("offset") or 0)), MAX_OFFSET)
    except ValueError:
        raise InvalidRequest("'offset' must be a whole number", param="offset") from None
    since, until = time_range(query)
    text = {k: (query.get(k) or "").strip()[:500] for k in FILTERS if k not in ("since", "until")}
    return Search(**text, since=since, until=until, offset=offset)


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form (what the dashboard's forms send); {} for anything else.
    Parsed here rather than with `request.form()`, which needs python-multipart for two small forms."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest(f"the form is larger than {MAX_FORM_BYTES} bytes")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
