"""Client connections: a deadline for every state a connection can idle in, and a cap on how many.

uvicorn (0.55, httptools) arms its keep-alive timer only after a response: a connection that never
sends a byte, or sends its request line and headers one byte at a time, is held forever (issue 17:
10,000 idle and 2,000 slow-header connections took 19,945 of 20,000 descriptors), and
`limit_concurrency` answers 503 to *requests* but never caps connections. The subclass below adds,
with one timer per request (never per byte):

- idle: a new connection must send its first byte within `server.idle_timeout` (uvicorn's keep-alive
  timer, armed at connect as well as after each response), then closed silently;
- headers: from a request's first byte, the request line and headers must be complete within
  `server.header_timeout`, else `408 request_timeout` and close (the body has `server.body_timeout`);
- cap: past `server.max_connections` open connections a new one is answered `503
  too_many_connections` without reading its request, and closed; one `connections.over_cap` log
  line at the first refusal, then at most one per `OVER_CAP_LOG_EVERY_S` with the count.

The limits are read from the current policy when a connection opens, so a reload applies to new
connections.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable, Sized
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import RequestTimeout, SluicegateError, TooManyConnections
from proxy.logs import get_logger

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedHttpProtocol", "guarded_http_protocol", "policy_limits",
           "raise_open_file_limit"]

log = get_logger("sluicegate.server")

OVER_CAP_LOG_EVERY_S = 10.0
# A refused connection is half-closed and drained for a moment before the close, so the client reads
# the 503 instead of a reset (closing with its request unread makes the kernel send RST). Bounded:
# past MAX_LINGERING such connections at once, refusals close at once.
LINGER_S = 1.0
MAX_LINGERING = 64


class ConnectionLimits(Protocol):
    """What the guard reads (the policy's `server:`)."""

    header_timeout: float
    idle_timeout: float
    max_connections: int


class ConnectionGuard:
    """The limits, the descriptor budget, and the over-cap log of one listening server."""

    def __init__(self, limits: Callable[[], ConnectionLimits]) -> None:
        self.limits = limits
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # half the descriptors stay for upstream pools, the store, logs and the listening socket
        self.descriptor_cap = soft // 2 if soft != resource.RLIM_INFINITY else None
        wanted = limits().max_connections
        if self.descriptor_cap is not None and wanted > self.descriptor_cap:
            log.warning("connections.cap_lowered", max_connections=wanted, effective=self.descriptor_cap,
                        open_file_limit=soft, hint="raise the open-file limit (`ulimit -n`, LimitNOFILE=)")
        self.lingering = 0
        self.refused = 0  # since the process started
        self._unlogged = 0
        self._last_log = -OVER_CAP_LOG_EVERY_S
        self._log_timer: asyncio.TimerHandle | None = None

    def cap(self, limits: ConnectionLimits) -> int:
        if self.descriptor_cap is None:
            return limits.max_connections
        return max(1, min(limits.max_connections, self.descriptor_cap))

    def note_refused(self, loop: asyncio.AbstractEventLoop, cap: int, connections: Sized) -> None:
        self.refused += 1
        self._unlogged += 1
        wait = self._last_log + OVER_CAP_LOG_EVERY_S - time.monotonic()
        if wait <= 0:
            self._log_over_cap(cap, connections)
        elif self._log_timer is None:  # the refusals until then go out in one line
            self._log_timer = loop.call_later(wait, self._log_over_cap, cap, connections)

    def _log_over_cap(self, cap: int, connections: Sized) -> None:
        self._log_timer = None
        self._last_log = time.monotonic()
        log.warning("connections.over_cap", max_connections=cap, open=len(connections), refused=self._unlogged,
                    total_refused=self.refused, log_every_s=OVER_CAP_LOG_EVERY_S,
                    hint="raise server.max_connections (and `ulimit -n`), or limit clients in front")
        self._unlogged = 0


def _raw_error(error: SluicegateError) -> bytes:
    """An error in OpenAI's shape as a whole HTTP/1.1 response that closes the connection."""
    body = error.body()
    headers = "".join(f"{name}: {value}\r\n" for name, value in error.headers.items()).encode("latin-1")
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (error.status, _REASONS[error.status]),
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body),
        headers, b"\r\n", body,
    ])


_REASONS = {408: b"Request Timeout", 503: b"Service Unavailable"}
_REFUSAL = _raw_error(TooManyConnections("the gateway has as many connections open as server.max_connections "
                                         "allows; retry shortly", headers={"retry-after": "1"}))


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the idle and header deadlines and the connection cap."""

    guard: ClassVar[ConnectionGuard]
    _header_timer: asyncio.TimerHandle | None = None
    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limits = self.guard.limits()
        cap = self.guard.cap(limits)
        if len(self.connections) >= cap:
            refused = _RefusedConnection(self.guard, self.loop)
            transport.set_protocol(refused)
            refused.connection_made(transport)
            self.guard.note_refused(self.loop, cap, self.connections)
            return
        super().connection_made(transport)
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]  (uvicorn: after each response)
        self.header_timeout = limits.header_timeout
        # uvicorn arms this only after a response; armed now, a connection that never speaks is closed
        self.timeout_keep_alive_task = self.loop.call_later(limits.idle_timeout, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # between requests (none yet, or the last one answered): these bytes start the next request's head
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        error = RequestTimeout(f"the request line and headers took longer than {self.header_timeout:g} s "
                               "(server.header_timeout); send them at once")
        self.transport.write(_raw_error(error))
        self.transport.close()


class _RefusedConnection(asyncio.Protocol):
    """A connection past the cap: a 503 at once, its bytes ignored, closed (after a short drain)."""

    def __init__(self, guard: ConnectionGuard, loop: asyncio.AbstractEventLoop) -> None:
        self._guard = guard
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: Any) -> None:
        transport.write(_REFUSAL)
        if self._guard.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the 503, then FIN; what the client still sends is read and dropped
        self._guard.lingering += 1
        self._counted = True
        self._timer = self._loop.call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._counted:
            self._guard.lingering -= 1
            self._counted = False


def guarded_http_protocol(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class to pass as `uvicorn.Config(http=...)`, bound to `guard`."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft open-file limit toward `wanted` (never past the hard limit); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def policy_limits(app: Any, initial: Any) -> Callable[[], ConnectionLimits]:
    """The `server:` of the policy `app` serves now (a reload replaces its gateway), else of `initial`."""

    def limits() -> ConnectionLimits:
        gateway = getattr(app.state, "gateway", None)
        return (gateway.policy if gateway is not None else initial).server

    return limits
