"""Cross-site request forgery: state changes another site's page makes a browser send, refused.

A browser attaches what it holds for this gateway (the dashboard's Basic login) to requests that
another site's page makes, and an open gateway needs nothing at all. Without asking this gateway
first (a CORS preflight, which it never grants) such a page can send only a "simple" request: a
form, `text/plain` or no content type, no custom header, no `Authorization` of its own. So every
state-changing request (any method but GET, HEAD, OPTIONS) passes, before its endpoint runs:

1. Fetch Metadata: `Sec-Fetch-Site: cross-site` is refused (every current browser sends it).
2. `Origin`, when sent, must be this gateway's own, compared as scheme + host + port with the
   scheme's default port filled in: the request's scheme and `Host`, or `server.public_origins`
   when a proxy in front changes the scheme or port. `Origin: null` (sandboxed frames, data: pages)
   is refused.
3. JSON endpoints (everything but the dashboard's HTML forms) take a JSON body only:
   `application/json`, `application/*+json` or JSON Lines — types a form cannot send. A POST
   without a body may have no content type (`curl -X POST …/admin/reload`).
4. `Authorization: Basic` (a browser's login, attached on its own) is accepted on JSON endpoints
   only with the page's CSRF token in `x-sluicegate-csrf` and an `Origin` header. A Bearer key is
   never attached by a browser by itself, so it needs neither.

The dashboard's forms check their own token and Origin/Referer in the handler (proxy/ui/_csrf.py),
with `same_origin` and `csrf_token` from here. Cost on the request path: one pass over the headers
of a POST; a Basic request also computes one HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from proxy.errors import CrossSiteRefused, SluicegateError, UnsupportedMediaType, error_response
from proxy.keys import hash_key, presented_key
from proxy.logs import get_logger
from proxy.server._hosts import parse_host

__all__ = ["API_ACTION", "CSRF_HEADER", "CrossSiteCheck", "csrf_token", "normalize_origin", "own_origins",
           "same_origin", "valid_csrf_token"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-sluicegate-csrf"
API_ACTION = "json-api"  # the token of the JSON endpoints (forms' tokens are per path: paths start with "/")
DEFAULT_PORTS = {"http": 80, "https": 443}
_JSON_LINES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines",
                         "application/x-jsonlines"})
_WANTED = frozenset({b"sec-fetch-site", b"origin", b"content-type", b"content-length", b"transfer-encoding",
                     b"authorization", b"host", CSRF_HEADER.encode()})
_PROCESS_SECRET = secrets.token_bytes(32)

log = get_logger("sluicegate.crosssite")


# --------------------------------------------------------------------------- tokens


def _token_key(headers: Mapping[str, str]) -> bytes:
    """Keyed by the credential the browser presents (its SHA-256, which every replica can compute);
    without one (an open gateway) by a secret of this process."""
    credential = presented_key(headers)
    if credential is None:
        return _PROCESS_SECRET
    return hashlib.sha256(b"sluicegate-ui-csrf\0" + hash_key(credential).encode()).digest()


def csrf_token(headers: Mapping[str, str], action: str) -> str:
    """The token a page embeds for `action` (a form's path, or `API_ACTION` for the JSON endpoints)."""
    return hmac.new(_token_key(headers), action.encode(), hashlib.sha256).hexdigest()


def valid_csrf_token(headers: Mapping[str, str], action: str, sent: str | None) -> bool:
    return hmac.compare_digest((sent or "").encode(), csrf_token(headers, action).encode())


# --------------------------------------------------------------------------- origins


def normalize_origin(value: str | None) -> str | None:
    """`scheme://host:port` of an Origin (or a Referer URL), the scheme's default port filled in;
    None for `null`, an opaque or unparsable origin."""
    if not value or value == "null":
        return None
    parts = urlsplit(value.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname.rstrip(".")
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def own_origins(scheme: str, host: str | None, configured: Sequence[str] = ()) -> tuple[str, ...]:
    """The origins a page of this gateway has: `server.public_origins` when set, else the request's
    scheme with its `Host` (the name and port the browser used)."""
    if configured:
        return tuple(configured)
    parsed = parse_host(host)
    if parsed is None or scheme not in DEFAULT_PORTS:
        return ()
    name, port = parsed
    return (f"{scheme}://{name}:{port or DEFAULT_PORTS[scheme]}",)


def _configured(app: Any) -> Sequence[str]:
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    return gateway.policy.server.public_origins if gateway is not None else ()


def same_origin(source: str | None, scheme: str, host: str | None, app: Any = None) -> tuple[bool, str]:
    """(whether `source`, an Origin or Referer, is one of this gateway's origins; the first of those,
    for messages)."""
    ours = own_origins(scheme, host, _configured(app))
    seen = normalize_origin(source)
    return seen is not None and seen in ours, (ours[0] if ours else f"no usable Host header ({host!r:.100})")


# --------------------------------------------------------------------------- the check


def _headers(scope: Any) -> dict[str, str]:
    """The few headers the check reads, in one pass (the first of each)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found.setdefault(name.decode(), value.decode("latin-1"))
    return found


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type in _JSON_LINES or (
        media_type.startswith("application/") and media_type.endswith("+json"))


def refusal(scope: Any, form_post: Callable[[str], bool]) -> SluicegateError | None:
    """Why this state-changing request is refused (None: it may proceed)."""
    headers = _headers(scope)
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return CrossSiteRefused("refused: a page on another site sent this (Sec-Fetch-Site: cross-site), and this "
                                "gateway changes nothing on another site's behalf. Call it from a server-side "
                                "client, or use the dashboard's own pages")
    origin = headers.get("origin")
    if origin is not None:
        same, ours = same_origin(origin, scope.get("scheme", "http"), headers.get("host"), scope.get("app"))
        if not same:
            what = ("Origin: null (a sandboxed or data: page, or a redirect from another site)" if origin == "null"
                    else f"the Origin header ({origin[:100]!r}) names another site")
            return CrossSiteRefused(f"refused: {what}, not this gateway ({ours}; scheme, host and port must all "
                                    "match). If a proxy in front changes the scheme or port, list the origin "
                                    "browsers use in server.public_origins")
    if form_post(scope["path"]):
        return None  # the dashboard's forms: their token and Origin/Referer are checked by the handler
    content_type = headers.get("content-type")
    media_type = content_type.partition(";")[0].strip().lower() if content_type is not None else None
    has_body = "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("0", "")
    if (media_type is None and has_body) or (media_type is not None and not _is_json(media_type)):
        sent = f"content-type {content_type!r:.100}" if content_type is not None else "no content-type"
        return UnsupportedMediaType(f"the body was sent with {sent}; this endpoint takes JSON only: send "
                                    "`content-type: application/json` (JSON Lines: application/x-ndjson). "
                                    "A form or text/plain body is what another site's page can make a browser send",
                                    param="content-type")
    authorization = headers.get("authorization", "")
    if authorization[:6].lower() == "basic ":
        if origin is None or not valid_csrf_token(headers, API_ACTION, headers.get(CSRF_HEADER)):
            return CrossSiteRefused("refused: Basic credentials (a browser's login) are accepted here only from this "
                                    f"gateway's pages, which send an Origin header and the page's {CSRF_HEADER} token. "
                                    "API clients: send `Authorization: Bearer <key>` instead")
    return None


class CrossSiteCheck:
    """ASGI middleware: state-changing requests pass `refusal` before any endpoint runs (403/415,
    OpenAI's error shape, nothing done). `form_post(path)`: the dashboard's HTML form endpoints."""

    def __init__(self, app: Any, form_post: Callable[[str], bool] = lambda path: False) -> None:
        self.app = app
        self.form_post = form_post

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = refusal(scope, self.form_post)
            if problem is not None:
                log.warning("state_change_refused", method=scope["method"], path=scope["path"][:200],
                            code=problem.code)
                await error_response(problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)
