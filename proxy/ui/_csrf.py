"""Cross-site request forgery on the dashboard's HTML forms (they move canaries and spend on replays).

A browser attaches a Basic login to requests another site makes, so every state-changing form is
checked twice (on top of the gateway-wide checks of proxy/server/_crosssite.py, which already
refused `Sec-Fetch-Site: cross-site` and a foreign `Origin`):

* same origin: the `Origin` header (else `Referer`) must be this gateway's own origin, compared as
  scheme + host + port (the scheme's default port filled in) with the request's scheme and `Host`,
  or with `server.public_origins` when a proxy in front changes them. The pages send
  `Referrer-Policy: same-origin`, so a browser sends both.
* a per-page token: an HMAC over the form's path, keyed by the admin's own credential (its key's
  SHA-256, which every replica can compute) or, on a gateway without admin keys, by a secret of
  this process. Another site can read neither.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request

from proxy.server._crosssite import csrf_token, same_origin, valid_csrf_token

__all__ = ["CSRFRefused", "FIELD", "check", "token"]

FIELD = "csrf_token"


class CSRFRefused(Exception):
    """The form did not come from a page of this gateway; the message says which check failed."""


def token(request: Request, action: str) -> str:
    """The token a page embeds in the form that posts to `action` (a path)."""
    return csrf_token(request.headers, action)


def _same_origin(request: Request) -> None:
    headers = request.headers
    source, name = headers.get("origin"), "Origin"
    if not source or source == "null":
        source, name = headers.get("referer"), "Referer"
    if not source:
        raise CSRFRefused("the request has neither an Origin nor a Referer header, so it cannot be shown to come "
                          "from this dashboard; submit the form from the dashboard page")
    same, ours = same_origin(source, request.url.scheme, headers.get("host"), request.scope.get("app"))
    if not same:
        raise CSRFRefused(f"the {name} header names another site ({source[:100]!r}), not this gateway ({ours}: "
                          "scheme, host and port must all match); forms are accepted only from the dashboard's "
                          "own pages")


def check(request: Request, form: Mapping[str, str], action: str) -> None:
    """Raise `CSRFRefused` unless the form came from this gateway's page for `action`."""
    _same_origin(request)
    if not valid_csrf_token(request.headers, action, form.get(FIELD)):
        raise CSRFRefused("the form's token is missing or not this page's (was the page loaded with another key, "
                          "or from another gateway without admin keys?); reload the page and submit again")
