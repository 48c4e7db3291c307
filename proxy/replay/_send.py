"""One replayed call: through the gateway's provider adapter, paced, retried a bounded number of times.

The adapters are the gateway's own (`proxy.providers.build_provider`), so a replay speaks to each
upstream exactly as production does (Azure paths, Anthropic translation, headers, keys). Only the
non-streaming `send` is used.

Retries follow the gateway's rule (`proxy.providers._retry`): only faults where the upstream
cannot have acted on the request — a connect error, a 429, a 5xx — and the wait is the upstream's
own `retry-after-ms` / `Retry-After` when it sends one (a 429 also pauses every other call to that
provider: see `Pacer`), else exponential backoff with full jitter. After `max_retries` the item is
an error item: counted, never a pass. A timeout or a broken answer is not retried (the upstream may
have done the work; a replay must not pay twice silently).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.errors import SluicegateError, UpstreamError, UpstreamHTTPError
from proxy.providers import ProviderAdapter, UpstreamCall
from proxy.providers._retry import retry_delay, safe_to_retry
from proxy.replay._pace import Pacer

__all__ = ["DEFAULT_MAX_RETRIES", "Reply", "Sender", "error_class", "transient"]

DEFAULT_MAX_RETRIES = 4


@dataclasses.dataclass(slots=True)
class Reply:
    """What came back: an answer (`data`, `status`) or, after the retries, the last error."""

    data: dict[str, Any] | None
    status: int | None
    latency_ms: float | None  # of the call that answered (waits between retries excluded)
    attempts: int
    error: str | None = None
    error_class: str | None = None
    transient: bool = False  # the error was of a kind that may pass (429, 5xx, connect, timeout, broken answer)


def transient(exc: SluicegateError) -> bool:
    """A fault that says nothing about the model (worth trying again later), unlike an error status the
    upstream gave *this request* (a 400 for a parameter the candidate does not take is its answer)."""
    if isinstance(exc, UpstreamHTTPError):
        return exc.retryable
    return isinstance(exc, UpstreamError)


def error_class(exc: SluicegateError) -> str:
    """`http_<status>` for an upstream error status (or the status of a request the adapter refused
    before sending it), else the fault's outcome (`timeout`, `connect_error`, `malformed`)."""
    if isinstance(exc, UpstreamHTTPError):
        return f"http_{exc.upstream_status}"
    if isinstance(exc, UpstreamError):
        return exc.outcome
    return f"http_{exc.status}"


class Sender:
    """Sends bodies through adapters with pacing and bounded retries; counts what it did."""

    def __init__(self, pacer: Pacer, *, max_retries: int = DEFAULT_MAX_RETRIES, base_delay_s: float = 0.5,
                 max_delay_s: float = 30.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.pacer = pacer
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep
        self.calls = 0
        self.retries = 0
        self.rate_limited = 0  # 429 answers seen

    async def send(self, adapter: ProviderAdapter, endpoint: str, body: dict[str, Any]) -> Reply:
        attempts = 0
        while True:
            await self.pacer.acquire(adapter.name)
            attempts += 1
            self.calls += 1
            clock = time.perf_counter()
            try:
                reply = await adapter.send(UpstreamCall(endpoint, body))
            except UpstreamError as exc:
                if isinstance(exc, UpstreamHTTPError) and exc.upstream_status == 429:
                    self.rate_limited += 1
                if attempts <= self.max_retries and safe_to_retry(exc):
                    delay = retry_delay(exc, attempts - 1, base_s=self.base_delay_s, max_s=self.max_delay_s)
                    if isinstance(exc, UpstreamHTTPError) and exc.upstream_status == 429:
                        self.pacer.pause(adapter.name, delay)  # the limit is the provider's, for every worker
                    self.retries += 1
                    await self._sleep(delay)
                    continue
                return Reply(None, exc.upstream_status, None, attempts, exc.message, error_class(exc), transient(exc))
            except SluicegateError as exc:  # refused before sending (e.g. a parameter a provider cannot take)
                return Reply(None, exc.status, None, attempts, exc.message, error_class(exc), False)
            latency = round((time.perf_counter() - clock) * 1000, 3)
            return Reply(reply.data, reply.status, latency, attempts)
