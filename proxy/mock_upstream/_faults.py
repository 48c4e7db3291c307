"""Fault responses: OpenAI error bodies, a connection cut after the headers, a truncated JSON body,
and a wait that outlasts any client timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.mock_upstream._shapes import error_body

__all__ = [
    "MockConnectionReset",
    "ResetResponse",
    "error_response",
    "http_fault",
    "malformed_json_response",
    "wait_for_disconnect",
    "quiet_injected_resets",
    "TIMEOUT_FAULT_S",
]

TIMEOUT_FAULT_S = 300.0

try:  # a client in the same process (httpx.ASGITransport) sees the same exception type as over a socket
    from httpx import RemoteProtocolError as _ResetBase
except ImportError:  # pragma: no cover - httpx is a dependency of the project
    _ResetBase = ConnectionResetError  # type: ignore[assignment,misc]


class MockConnectionReset(_ResetBase):
    """Raised inside the ASGI app to cut the connection (faults `reset` / `reset_mid_stream`).

    Under uvicorn the connection is then closed with the response incomplete. In process, through
    `httpx.ASGITransport`, the client receives this exception itself, an `httpx.RemoteProtocolError`
    like the one a client sees over a socket.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class _DropInjectedResets(logging.Filter):
    """uvicorn logs an exception that cuts a connection at ERROR, with a traceback; injected cuts are intended."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        for _ in range(4):
            if isinstance(exc, MockConnectionReset):
                return False
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            else:
                break
        return True


_FILTER = _DropInjectedResets()


def quiet_injected_resets() -> None:
    """Keep uvicorn from logging the connection cuts this mock injects (other errors still log)."""
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, type_, param, code), status_code=status, headers=headers,
                    media_type="application/json")


def http_fault(fault: str, retry_after: float) -> Response | None:
    """The response of an `http_*` fault, or None for another fault."""
    if fault == "http_500":
        return error_response(500, "The server had an error while processing your request. Sorry about that! "
                              "(mock fault http_500)", "server_error")
    if fault == "http_503":
        return error_response(503, "The engine is currently overloaded, please try again later. "
                              "(mock fault http_503)", "server_error", code="overloaded")
    if fault == "http_429":
        headers = {
            "retry-after": str(max(0, math.ceil(retry_after))),
            "retry-after-ms": str(round(retry_after * 1000)),
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after:g}s",
        }
        return error_response(429, f"Rate limit reached for requests. Please try again in {retry_after:g}s. "
                              "(mock fault http_429)", "rate_limit_exceeded", code="rate_limit_exceeded",
                              headers=headers)
    if fault == "http_400":
        return error_response(400, "Invalid request (mock fault http_400).", "invalid_request_error",
                              code="invalid_value")
    return None


class ResetResponse(Response):
    """Headers with a Content-Length larger than what is sent, part of the body, then the connection is cut."""

    def __init__(self, full_body: bytes, media_type: str) -> None:
        super().__init__(b"", media_type=media_type)
        self.partial = full_body[: len(full_body) // 2]
        self.declared = len(full_body) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        headers.append((b"content-length", str(self.declared).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.partial, "more_body": True})
        raise MockConnectionReset("mock upstream: connection cut before the body completed (fault reset)")


def malformed_json_response(full_body: bytes) -> Response:
    """200 with a JSON body cut in half (the Content-Length matches what is sent)."""
    return Response(full_body[: max(1, len(full_body) // 2)], media_type="application/json")


async def wait_for_disconnect(request: Request, max_s: float = TIMEOUT_FAULT_S) -> None:
    """Wait until the client goes away, at most `max_s` seconds (fault `timeout`)."""

    async def _wait() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait(), max_s)
