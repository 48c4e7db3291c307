"""Turning page data into responses: the Jinja2 environment, the number formats, the headers.

Numbers are formatted with the report's own `fmt` (the terminal and HTML reports use it too), so a
figure reads the same on every surface and the tests can compare a page cell with the JSON value
formatted the same way. Templates are autoescaped; the only markup passed through unescaped is the
SVG the chart helpers build, which escapes every text it puts in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jinja2
import orjson
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from proxy.reports._render_text import fmt

__all__ = ["html_page", "json_response", "pct", "stage", "when"]

# The pages load only their own CSS and JS from /ui/static; forms post only back to the gateway.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# same-origin: the browser sends Origin and Referer on the dashboard's own POSTs (the CSRF check
# needs one of them) and never to another site
_HTML_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                 "referrer-policy": "same-origin", "cache-control": "no-store", "x-frame-options": "DENY"}


def pct(x: Any) -> str:
    """A share in [0, 1] as the reports print it ("61.3%"; "—" when unknown)."""
    return fmt(x, "pct")


def when(t: Any) -> str:
    """Epoch seconds as a UTC time to the second ("—" when unknown)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))
    except (TypeError, ValueError, OverflowError, OSError):  # None, or not a time a calendar has
        return "—"


def stage(x: Any) -> str:
    """A canary stage ("25%")."""
    return "—" if x is None else f"{float(x):g}%"


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("proxy.ui", "templates"),
                             autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, pct=pct, when=when, stage=stage, tojson_text=_json_text,
                       ms=lambda x: fmt(x, "ms"), usd=lambda x: fmt(x, "usd"))
    env.globals["raw"] = Markup  # for SVG from the chart helpers and script_json: both escape what they embed
    return env


_ENV = _environment()


def html_page(request: Request, template: str, context: Mapping[str, Any], status: int = 200) -> Response:
    body = _ENV.get_template(template).render(request=request, path=request.url.path, **context)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=_HTML_HEADERS)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})
