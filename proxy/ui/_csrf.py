"""Cross-site request forgery: the dashboard's POST forms change canaries and spend on replays.

Today an admin proves itself with an `Authorization: Bearer` header, which a browser never attaches
to a request another site makes; but a proxy in front, or a later login with a cookie or Basic auth,
would be attached. So every state-changing form is checked twice:

* same origin: the `Origin` header (else `Referer`) must name this gateway's own host, as the
  browser saw it (`Host`; the port too when both carry one). The pages send
  `Referrer-Policy: same-origin`, so a browser sends both.
* a per-page token: an HMAC over the form's path, keyed by the admin's own credential (its key's
  SHA-256, which every replica can compute) or, on a gateway without admin keys, by a secret of
  this process. Another site can read neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.requests import Request

from proxy.keys import hash_key, presented_key

__all__ = ["CSRFRefused", "check", "token"]

FIELD = "csrf_token"
_PROCESS_SECRET = secrets.token_bytes(32)


class CSRFRefused(Exception):
    """The form did not come from a page of this gateway; the message says which check failed."""


def _key(request: Request) -> bytes:
    credential = presented_key(request.headers)
    if credential is None:
        return _PROCESS_SECRET
    return hashlib.sha256(b"sluicegate-ui-csrf\0" + hash_key(credential).encode()).digest()


def token(request: Request, action: str) -> str:
    """The token a page embeds in the form that posts to `action` (a path)."""
    return hmac.new(_key(request), action.encode(), hashlib.sha256).hexdigest()


def _host_port(netloc: str) -> tuple[str, int | None]:
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        port = -1  # a malformed port matches nothing
    return (parts.hostname or "").lower(), port


def _same_origin(headers: Mapping[str, str]) -> None:
    """The form's page and this gateway share a host name, and a port when both name one (a proxy in
    front may forward `Host` without the port the browser used: nginx's `$host`)."""
    host = headers.get("host") or ""
    source = headers.get("origin")
    name = "Origin"
    if not source or source == "null":
        source, name = headers.get("referer"), "Referer"
    if not source:
        raise CSRFRefused("the request has neither an Origin nor a Referer header, so it cannot be shown to come "
                          "from this dashboard; submit the form from the dashboard page")
    netloc = urlsplit(source).netloc
    (seen, seen_port), (ours, our_port) = _host_port(netloc), _host_port(host)
    same = bool(seen) and seen == ours and (seen_port is None or our_port is None or seen_port == our_port)
    if not same:
        raise CSRFRefused(f"the {name} header names another site ({netloc or source!r}), not this gateway "
                          f"({host or 'no Host header'}); forms are accepted only from the dashboard's own pages")


def check(request: Request, form: Mapping[str, str], action: str) -> None:
    """Raise `CSRFRefused` unless the form came from this gateway's page for `action`."""
    _same_origin(request.headers)
    sent = form.get(FIELD) or ""
    if not hmac.compare_digest(sent.encode(), token(request, action).encode()):
        raise CSRFRefused("the form's token is missing or not this page's (was the page loaded with another key, "
                          "or from another gateway without admin keys?); reload the page and submit again")
