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
    "AuthenticationFailed",
    "PermissionDenied",
    "RateLimited",
    "UpstreamError",
    "UpstreamUnreachable",
    "UpstreamTimeout",
    "UpstreamBadResponse",
    "UpstreamHTTPError",
    "ServiceUnavailable",
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


class AuthenticationFailed(InvalidRequest):
    """No key, or a key the policy does not know (OpenAI: 401 invalid_api_key). The key is never echoed."""

    status = 401
    code = "invalid_api_key"
    log_level = "warning"


class PermissionDenied(InvalidRequest):
    status = 403
    code = "permission_denied"
    log_level = "warning"


class RateLimited(SluicegateError):
    """A caller over its rate limit (429 with Retry-After and x-ratelimit-* headers)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    log_level = "info"


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
    code = "upstream_bad_response"
    outcome = "malformed"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an error status. 4xx bodies pass through unchanged."""

    def __init__(self, message: str, *, provider: str, upstream_status: int, body: bytes,
                 content_type: str | None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, provider=provider, upstream_status=upstream_status, headers=headers)
        self.upstream_body = body
        self.content_type = content_type or "application/json"
        if upstream_status < 500:
            self.status = upstream_status
            self.log_level = "info"

    @property
    def retryable(self) -> bool:
        """Worth trying another model: rate limited, or the upstream broke."""
        return self.upstream_status == 429 or self.upstream_status >= 500

    def body(self) -> bytes:
        if self.upstream_status < 500 and self.upstream_body:
            return self.upstream_body
        return super().body()


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_response(exc: SluicegateError, headers: Mapping[str, str] | None = None) -> Response:
    all_headers = {**exc.headers, **(headers or {})}
    media_type = "application/json"
    if isinstance(exc, UpstreamHTTPError) and exc.upstream_status < 500 and exc.upstream_body:
        media_type = exc.content_type
    return Response(exc.body(), status_code=exc.status, headers=all_headers, media_type=media_type)
