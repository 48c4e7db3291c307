"""One error tree, and the one place that turns it into OpenAI's error JSON, a status and a log level.

Every error a client can see is a `SluicegateError`. Messages say what to fix and never carry a
secret (no API key, no Authorization value, no upstream URL query string).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

__all__ = [
    "SluicegateError",
    "InvalidRequest",
    "PayloadTooLarge",
    "RouteNotFound",
    "HeadersTooLarge",
    "RequestTimeout",
    "IdempotencyConflict",
    "AuthenticationFailed",
    "PermissionDenied",
    "CrossSiteRefused",
    "HostNotAllowed",
    "UnsupportedMediaType",
    "RateLimited",
    "ConcurrencyLimited",
    "UpstreamError",
    "UpstreamUnreachable",
    "UpstreamTimeout",
    "UpstreamBadResponse",
    "UpstreamHTTPError",
    "UpstreamTooLarge",
    "UpstreamBusy",
    "ServiceUnavailable",
    "TooManyConnections",
    "GuardBlocked",
    "error_body",
    "error_response",
]


class SluicegateError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    log_level: str = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequest(SluicegateError):
    status = 400
    type = "invalid_request_error"
    log_level = "info"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class RouteNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class HeadersTooLarge(InvalidRequest):
    status = 431
    code = "headers_too_large"


class RequestTimeout(InvalidRequest):
    status = 408
    code = "request_timeout"


class IdempotencyConflict(InvalidRequest):
    """An idempotency key reused, in the same scope, with different content; `param` names a field that differs."""

    status = 409
    code = "idempotency_key_conflict"


class AuthenticationFailed(InvalidRequest):
    """No key, or a key the policy does not know (OpenAI: 401 invalid_api_key). The key is never echoed."""

    status = 401
    code = "invalid_api_key"
    log_level = "warning"


class PermissionDenied(InvalidRequest):
    status = 403
    code = "permission_denied"
    log_level = "warning"


class CrossSiteRefused(PermissionDenied):
    """A state change a browser may have sent on another site's behalf (CSRF); nothing was done."""

    code = "cross_site_request"


class HostNotAllowed(InvalidRequest):
    """`Host` is not one of `server.allowed_hosts` (a DNS-rebinding page reaches a local gateway so)."""

    status = 421
    code = "host_not_allowed"
    log_level = "warning"


class UnsupportedMediaType(InvalidRequest):
    """A body whose content type a cross-site form can send (or none): JSON endpoints take JSON only."""

    status = 415
    code = "unsupported_media_type"


class RateLimited(SluicegateError):
    """A caller over its rate limit (429 with Retry-After and x-ratelimit-* headers)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    log_level = "info"


class ConcurrencyLimited(RateLimited):
    """A caller with as many requests in flight as its key may have (429 with Retry-After)."""

    code = "concurrency_limit_exceeded"


class GuardBlocked(SluicegateError):
    """The answer failed a guard whose action is `block`; it is recorded, never returned."""

    status = 422
    type = "invalid_response_error"
    code = "guard_failed"
    log_level = "warning"

    def __init__(self, failures: Sequence[Any]) -> None:
        named = "; ".join(f"guard '{f.guard}' ({f.taxonomy}, {f.severity}): {f.detail}" for f in failures)
        super().__init__(f"the upstream's answer was blocked: {named}", param=None)
        self.failures = list(failures)


class ServiceUnavailable(SluicegateError):
    status = 503
    type = "server_error"
    code = "service_unavailable"
    log_level = "warning"


class TooManyConnections(ServiceUnavailable):
    """A new connection past `server.max_connections`: answered at once, then closed (no request read)."""

    code = "too_many_connections"


class UpstreamError(SluicegateError):
    """An upstream fault. `provider` names the upstream; the message names it too."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    log_level = "warning"
    outcome = "upstream_error"

    def __init__(self, message: str, *, provider: str, upstream_status: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.provider = provider
        self.upstream_status = upstream_status


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"
    outcome = "connect_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    outcome = "timeout"


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer cannot be used: not JSON, cut short, a redirect, invalid UTF-8, ..."""

    code = "upstream_bad_response"
    outcome = "malformed"


class UpstreamTooLarge(UpstreamError):
    """The upstream sent more than a `limits:` bound of its provider allows (a body, an SSE event,
    a decompression ratio). What it sent is dropped, never served or stored."""

    code = "upstream_too_large"
    outcome = "upstream_too_large"


class UpstreamBusy(UpstreamError):
    """Every pooled connection to the upstream stayed busy for the provider's `pool_timeout`."""

    status = 503
    type = "server_error"
    code = "upstream_busy"
    outcome = "upstream_busy"

    def __init__(self, message: str, *, provider: str, retry_after_s: int = 1) -> None:
        super().__init__(message, provider=provider, headers={"retry-after": str(retry_after_s)})


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an error status.

    The client never gets the upstream's bytes: `error` holds the upstream's own OpenAI-style fields
    (message, type, param, code), re-shaped and scrubbed of secrets by the adapter
    (proxy/providers/_upstream_error.py). A 4xx keeps its status and those fields; a 5xx becomes a
    502 with `message`, which names the upstream.
    """

    def __init__(self, message: str, *, provider: str, upstream_status: int,
                 error: Mapping[str, str | None] | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, provider=provider, upstream_status=upstream_status, headers=headers)
        self.error = dict(error) if error else None
        if upstream_status < 500:
            self.status = upstream_status
            self.log_level = "info"

    @property
    def retryable(self) -> bool:
        """Worth trying another model: rate limited, or the upstream broke."""
        return self.upstream_status == 429 or self.upstream_status >= 500

    def body(self) -> bytes:
        error = self.error
        if self.upstream_status < 500 and error and error.get("message"):
            return error_body(str(error["message"]), error.get("type") or self.type, error.get("param"),
                              error.get("code"))
        return super().body()


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(exc: SluicegateError, headers: Mapping[str, str] | None = None) -> Response:
    all_headers = {**exc.headers, **(headers or {})}
    # always our own JSON: an upstream's content type (text/html, ...) is never served from our origin
    return Response(exc.body(), status_code=exc.status, headers=all_headers, media_type="application/json")
