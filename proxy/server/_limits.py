"""Rate limits and concurrency caps per caller key, and the cap on concurrent upstream requests per provider.

Rate limits count in fixed one-minute windows: requests admitted, and tokens (prompt + completion)
of the answers. A request is refused (429, Retry-After = the seconds left in the window) when
either count has reached the key's limit. The decision is always local — the request path never
waits on Redis: each process counts, and with `auth.rate_limit_store` a background task adds its
counts to Redis every second (INCRBY) and reads back the replicas' totals. A window may so admit
up to one second of the other replicas' traffic beyond the limit; without Redis (or while it is
unreachable) each process enforces the limits on its own traffic.

Concurrency per key is counted in this process only (requests in flight end within seconds or
minutes, so there is nothing worth sharing): a key may have `max_concurrent` requests in flight
(default `server.max_concurrent_per_key`), so one key cannot take a provider's whole pool; the next
one gets a 429 at once. A request holds its slot from admission to its end — a stream until its last
event — whatever fallbacks or retries it makes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from proxy.errors import ConcurrencyLimited, RateLimited, ServiceUnavailable
from proxy.logs import get_logger

__all__ = ["KeySlots", "ProviderSlots", "RateLimiter"]

log = get_logger("sluicegate.limits")

WINDOW_S = 60
SYNC_EVERY_S = 1.0


@dataclasses.dataclass(slots=True)
class _Window:
    id: int = -1
    requests: int = 0  # this process's, not yet added to Redis
    tokens: int = 0
    shared_requests: int = 0  # every replica's, as Redis last said (this process's synced ones included)
    shared_tokens: int = 0


class RateLimiter:
    def __init__(self, redis_url: str | None = None, *, prefix: str = "sluicegate:ratelimit",
                 clock: Callable[[], float] = time.time) -> None:
        self._windows: dict[str, _Window] = {}
        self._limits: dict[str, Any] = {}  # caller name -> its RateLimit (as of its last request)
        self._redis_url = redis_url
        self._prefix = prefix
        self._clock = clock
        self._client: Any = None
        self.shared = redis_url is not None
        self.sync_errors = 0

    def _window(self, name: str) -> tuple[_Window, float]:
        now = self._clock()
        wid = int(now // WINDOW_S)
        window = self._windows.get(name)
        if window is None or window.id != wid:
            window = self._windows[name] = _Window(id=wid)
        return window, WINDOW_S - (now % WINDOW_S)

    def admit(self, caller: Any) -> dict[str, str]:
        """Count a request of `caller`, or raise RateLimited; returns the x-ratelimit-* headers."""
        limit = caller.rate_limit
        if limit is None:
            return {}
        self._limits[caller.name] = limit
        window, left = self._window(caller.name)
        used_requests = window.shared_requests + window.requests
        used_tokens = window.shared_tokens + window.tokens
        retry = str(max(1, math.ceil(left)))
        if limit.requests_per_minute is not None and used_requests >= limit.requests_per_minute:
            raise RateLimited(f"rate limit reached for key '{caller.name}': {limit.requests_per_minute} requests per "
                              f"minute; retry after {retry} s", headers={"retry-after": retry})
        if limit.tokens_per_minute is not None and used_tokens >= limit.tokens_per_minute:
            raise RateLimited(f"rate limit reached for key '{caller.name}': {limit.tokens_per_minute} tokens per "
                              f"minute; retry after {retry} s", headers={"retry-after": retry})
        window.requests += 1
        headers = {}
        if limit.requests_per_minute is not None:
            headers["x-ratelimit-limit-requests"] = str(limit.requests_per_minute)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit.requests_per_minute - used_requests - 1))
            headers["x-ratelimit-reset-requests"] = f"{retry}s"
        if limit.tokens_per_minute is not None:
            headers["x-ratelimit-limit-tokens"] = str(limit.tokens_per_minute)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limit.tokens_per_minute - used_tokens))
        return headers

    def used_tokens(self, caller: str | None, usage: Any) -> None:
        """An answer's tokens count against its caller's window (callers with a limit only)."""
        if caller is None or caller not in self._limits or not isinstance(usage, dict):
            return
        total = usage.get("total_tokens")
        if not isinstance(total, (int, float)):
            total = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        window, _ = self._window(caller)
        window.tokens += int(total)

    # ------------------------------------------------------------------ sharing through Redis

    async def run(self) -> None:
        """Every second: this process's counts into Redis, every replica's totals back."""
        if self._redis_url is None:
            return
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(self._redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            while True:
                await asyncio.sleep(SYNC_EVERY_S)
                try:
                    await self.sync()
                except Exception as exc:  # noqa: BLE001 - Redis down: limits stay per process meanwhile
                    self.sync_errors += 1
                    if self.sync_errors % 60 == 1:
                        log.warning("ratelimit_sync_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            await self._client.aclose()

    async def sync(self) -> None:
        batch = [(name, w, w.id, w.requests, w.tokens) for name, w in self._windows.items()]
        if not batch:
            return
        pipe = self._client.pipeline(transaction=False)
        for name, _, wid, requests, tokens in batch:
            key = f"{self._prefix}:{name}:{wid}"
            pipe.hincrby(key, "requests", requests)
            pipe.hincrby(key, "tokens", tokens)
            pipe.expire(key, 2 * WINDOW_S)
        results = await pipe.execute()
        for i, (_, window, wid, requests, tokens) in enumerate(batch):
            if window.id != wid:
                continue  # the window turned over while we were away
            window.requests -= requests  # now in Redis (counts taken meanwhile stay local)
            window.tokens -= tokens
            window.shared_requests, window.shared_tokens = int(results[3 * i]), int(results[3 * i + 1])


class KeySlots:
    """Requests in flight per caller key; at the key's cap, the next is refused (429, Retry-After: 1)."""

    __slots__ = ("_in_flight",)

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def take(self, caller: Any, default_cap: int | None) -> Callable[[], None] | None:
        """A slot for one request of `caller` (call the returned function once, when the request
        ends), or None when the key has no cap; ConcurrencyLimited when it is at its cap."""
        cap = caller.max_concurrent if caller.max_concurrent is not None else default_cap
        if cap is None:
            return None
        name = caller.name
        held = self._in_flight.get(name, 0)
        if held >= cap:
            where = f"auth.keys.{name}.max_concurrent" if caller.max_concurrent is not None \
                else "server.max_concurrent_per_key"
            raise ConcurrencyLimited(f"key '{name}' already has {held} requests in flight, its limit ({where}: "
                                     f"{cap}); retry when one of them has finished", headers={"retry-after": "1"})
        self._in_flight[name] = held + 1
        return _Slot(self._in_flight, name)

    def in_flight(self) -> dict[str, int]:
        return dict(self._in_flight)


class _Slot:
    """One request's place under its key's cap; giving it back twice gives back one."""

    __slots__ = ("_counts", "_name")

    def __init__(self, counts: dict[str, int], name: str) -> None:
        self._counts: dict[str, int] | None = counts
        self._name = name

    def __call__(self) -> None:
        counts, self._counts = self._counts, None
        if counts is None:
            return
        left = counts[self._name] - 1
        if left:
            counts[self._name] = left
        else:
            del counts[self._name]  # keys that come and go leave nothing behind


class ProviderSlots:
    """At most `max_concurrent` upstream requests in flight per provider; the rest wait in line up to
    `queue_timeout` seconds, then get a 503 that names the provider, with Retry-After."""

    def __init__(self, policy: Any, previous: ProviderSlots | None = None) -> None:
        self._slots: dict[str, tuple[asyncio.Semaphore, int, float]] = {}
        for name, provider in policy.providers.items():
            if provider.max_concurrent is None:
                continue
            kept = previous._slots.get(name) if previous is not None else None
            if kept is not None and kept[1] == provider.max_concurrent:
                self._slots[name] = (kept[0], kept[1], provider.queue_timeout)  # the same count of requests in flight
            else:
                self._slots[name] = (asyncio.Semaphore(provider.max_concurrent), provider.max_concurrent,
                                     provider.queue_timeout)

    async def acquire(self, provider: str) -> Callable[[], None] | None:
        """A slot (call the returned function to give it back), or None when the provider has no cap."""
        entry = self._slots.get(provider)
        if entry is None:
            return None
        semaphore, cap, timeout = entry
        try:
            async with asyncio.timeout(timeout):
                await semaphore.acquire()
        except TimeoutError:
            raise ServiceUnavailable(f"upstream '{provider}' has {cap} requests in flight (its max_concurrent); "
                                     f"this one waited {timeout:g} s for a slot", code="upstream_busy",
                                     headers={"retry-after": "1"}) from None
        return semaphore.release

    def in_flight(self) -> dict[str, int]:
        return {name: cap - sem._value for name, (sem, cap, _) in self._slots.items()}  # noqa: SLF001


class HeaderLimit:
    """ASGI middleware: requests whose headers together exceed `server.max_header_bytes` get a 431
    before any endpoint runs (httptools has no configurable header limit of its own)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            gateway = getattr(scope["app"].state, "gateway", None) if "app" in scope else None
            limit = gateway.policy.server.max_header_bytes if gateway is not None else None
            size = sum(len(k) + len(v) for k, v in scope["headers"])
            if limit is not None and size > limit:
                from proxy.errors import HeadersTooLarge, error_response

                response = error_response(HeadersTooLarge(f"request headers are {size} bytes; the limit is {limit} "
                                                          "(server.max_header_bytes)"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
