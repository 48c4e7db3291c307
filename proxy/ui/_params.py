"""Query parameters shared by a page and its JSON twin, parsed once so both see the same filters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from proxy.errors import InvalidRequest
from proxy.ui._records import FILTERS, Search

__all__ = ["MAX_FORM_BYTES", "read_form", "search_params", "time_param", "time_range"]

MAX_FORM_BYTES = 64 * 1024
LATEST = 253402300800.0  # 10000-01-01: times past it (or before 1970) are typing errors
MAX_OFFSET = 1_000_000_000


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """Epoch seconds from epoch seconds, an ISO time or an age ("24h"), as the CLI and /v1/reports take."""
    value = (query.get(name) or "").strip()
    if not value:
        return None
    from proxy.cli import parse_time

    try:
        seconds = parse_time(value)
    except Exception:  # noqa: BLE001 - argparse's error type; the message below says what to write
        seconds = math.nan
    if not 0 <= seconds < LATEST:  # also NaN and infinities: no page can show such a time
        raise InvalidRequest(f"'{name}' is not a time ({value[:50]!r}): use epoch seconds, an ISO time such as "
                             "2026-11-23T10:00, or an age such as 24h", param=name)
    return seconds


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    return time_param(query, "since"), time_param(query, "until")


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
