"""The scoring queue on Redis Streams (`--queue redis://…`): the scale-out `ScoringQueue`.

Why it looks like this:
- `offer` is on the request path, so it never touches Redis: jobs go to a bounded local buffer and a
  background task sends them in pipelined XADD batches. Redis down: the buffer fills, further offers
  are refused and counted (`dropped`), and the task retries with backoff, logging at most every
  `LOG_EVERY_S`; Redis back: the buffer drains. A batch whose send failed is sent again (a job may
  land twice; score writes are idempotent and a claim delivers one job id once).
- One stream, one consumer group per scorer set (`group_for(policy)`): workers of a group share the
  jobs (XREADGROUP), each job goes to one of them. A job is XACKed only after its scores are written
  (`Scoring.run_once` flushes first, because `durable` is True). A worker that dies leaves its jobs
  pending; after the visibility timeout another worker takes them over (XAUTOCLAIM, min-idle =
  visibility). Once a job has been delivered `max_deliveries` times, it goes to `<stream>:dead`
  with its delivery count, and it is counted.
- Jobs carry ids, not records (`StoredJob`, `LateJob`): the worker loads the row from the store.
- XADD trims with `MAXLEN ~ maxlen`, so a backlog longer than that loses its oldest jobs. We count
  that as well as Redis lets us: `trimmed_unread` = entries-added − entries-read − (unread entries
  still in the stream). It is exact when the group is caught up or when its last-delivered id is
  older than the stream's first entry. Otherwise it is the last exact value, refreshed every
  `stats_interval_s`. Pending (delivered, unacked) jobs that were trimmed are counted exactly when
  XAUTOCLAIM reports them (`trimmed_pending`). Nothing XDELs entries from the main stream, so these
  counts stay exact. Several groups can share one stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.scoring._job_codec import decode_job, encode_job
from proxy.scoring._queue import Delivery

__all__ = ["DEFAULT_STREAM", "RedisStreamQueue", "default_consumer", "group_for", "is_redis_url"]

log = structlog.get_logger("sluicegate.scoring.redis")

DEFAULT_STREAM = "sluicegate:scoring"
LOG_EVERY_S = 30.0  # "Redis unreachable" is logged at most this often
AUTOCLAIM_EVERY_S = 1.0  # how often a consumer looks for other consumers' expired jobs
MAX_BLOCK_S = 5.0  # a blocking read never outlasts the socket timeout
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def group_for(policy: Any) -> str:
    """The default consumer group: one per scorer set. Workers with the same scorers share jobs, and a
    fleet with other scorers gets every job as well."""
    names = ",".join(sorted(policy.scorers))
    return "scorers:" + hashlib.blake2b(names.encode(), digest_size=4).hexdigest()


def default_consumer() -> str:
    """Unique per process, so two workers on one host never share pending entries."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"***@{host}" + (f":{parts.port}" if parts.port else "")))


class RedisStreamQueue:
    """A `ScoringQueue` on one Redis stream and consumer group. `consume=False`: a producer only (the
    gateway with `--scoring external`); its `claim` idles and returns nothing. Call `start()`
    before offering and `close()` at the end."""

    durable = True  # Scoring writes a batch's scores before acking it

    def __init__(self, url: str, *, group: str, stream: str = DEFAULT_STREAM, consumer: str | None = None,
                 consume: bool = True, maxlen: int = 100_000, approximate: bool = True,
                 buffer_size: int = 10_000, batch_size: int = 500, max_deliveries: int = 5,
                 dead_maxlen: int = 10_000, stats_interval_s: float = 2.0, retry_max_s: float = 5.0,
                 connect_timeout_s: float = 1.0) -> None:
        if min(maxlen, buffer_size, batch_size, max_deliveries, dead_maxlen) < 1:
            raise ValueError("maxlen, buffer_size, batch_size, max_deliveries and dead_maxlen must be >= 1")
        self.url = _safe_url(url)
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.consumer = consumer or default_consumer()
        self.consume = consume
        self._maxlen = maxlen
        self._approximate = approximate
        self._buffer_size = buffer_size
        self._batch_size = batch_size
        self._max_deliveries = max_deliveries
        self._dead_maxlen = dead_maxlen
        self._stats_interval_s = stats_interval_s
        self._retry_max_s = retry_max_s
        # few, short retries: the sender and the worker loop have their own backoff
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, socket_timeout=MAX_BLOCK_S + 5.0,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1))
        self._buffer: deque[tuple[str, bytes]] = deque()
        self._sending = 0  # jobs taken from the buffer by the batch being sent: still count towards the bound
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._group_ready = False
        self._inflight: dict[str, tuple[list[bytes], float]] = {}  # job id -> (its entry ids, visible again at)
        self._unacked: list[bytes] = []  # entry ids whose XACK failed: retried on the next ack or claim
        self._autoclaim_cursor: bytes | str = "0-0"
        self._next_autoclaim = 0.0
        self._next_stats = 0.0
        self._next_log = 0.0
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._counts = {"offered": 0, "dropped": 0, "sent": 0, "send_failures": 0, "delivered": 0,
                        "redelivered": 0, "acked": 0, "dead": 0, "trimmed_pending": 0, "undecodable": 0}
        self._snapshot: dict[str, Any] = {"length": None, "pending": None, "lag": None, "entries_added": None,
                                          "entries_read": None, "trimmed_unread": None, "dead_letters": None,
                                          "as_of": None}

    # ------------------------------------------------------------------ producer (request path)

    def offer(self, job_id: str, payload: Any) -> bool:
        """Buffer the job for the sender; False (counted as dropped) when the buffer is full or closed."""
        self._counts["offered"] += 1
        if self._closed or len(self._buffer) + self._sending >= self._buffer_size:
            self._counts["dropped"] += 1
            return False
        self._buffer.append((job_id, encode_job(payload)))
        self._wake.set()
        return True

    async def start(self) -> None:
        """Start the sender (it connects in the background: a gateway starts even when Redis is down)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sluicegate-redis-queue")

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every buffered job has reached Redis; False when some had not within `timeout`."""
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while self._buffer or self._sending:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> int:
        """Refuse further offers, send what is buffered within `timeout`, then disconnect. Returns how
        many jobs were left unsent (and logs them): those are lost, as the in-process queue's are."""
        self._closed = True
        if self._task is not None:
            # Redis unreachable: a shorter wait (a shutdown must not hang on it), in case it is back
            await self.flush(timeout if self._reachable is not False else min(timeout, 1.0))
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = len(self._buffer)
        if left:
            log.warning("scoring.queue_closed_unsent", left=left, stream=self.stream, url=self.url)
        if self.consume:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._ack_entries([])
                    await self._forget_consumer()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
        return left

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._buffer:
                self._wake.clear()
                try:
                    async with asyncio.timeout(max(0.0, self._next_stats - time.monotonic())):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            try:
                if self._buffer:
                    await self._send_batch()
                if time.monotonic() >= self._next_stats:
                    await self.refresh_stats()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (*_UNREACHABLE, RedisError) as exc:
                self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._retry_max_s)

    async def _send_batch(self) -> None:
        n = min(self._batch_size, len(self._buffer))
        batch = [self._buffer.popleft() for _ in range(n)]
        self._sending = n
        try:
            await self._ensure_group()
            pipe = self._redis.pipeline(transaction=False)
            for job_id, data in batch:
                pipe.xadd(self.stream, {"id": job_id, "job": data}, maxlen=self._maxlen,
                          approximate=self._approximate)
            await pipe.execute()
        except BaseException:
            self._counts["send_failures"] += 1
            self._buffer.extendleft(reversed(batch))  # back at the front, in order: sent again
            raise
        finally:
            self._sending = 0
        self._counts["sent"] += n
        self._reachable_again()

    async def _ensure_group(self) -> None:
        """Create the group at the stream's start (so jobs offered before any worker ran are kept),
        with ENTRIESREAD 0: Redis then counts the group's reads exactly, which `trimmed_unread` needs
        (without it Redis estimates the count and the estimate hides entries trimmed unread)."""
        if self._group_ready:
            return
        try:
            try:
                await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True, entries_read=0)
            except ResponseError as exc:
                if "BUSYGROUP" in str(exc) or "syntax" not in str(exc).lower():
                    raise
                await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)  # Redis < 7
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # ------------------------------------------------------------------ consumer

    async def claim(self, max_items: int, *, visibility_s: float, wait_s: float = 1.0) -> list[Delivery]:
        """Expired jobs of any consumer of the group first (XAUTOCLAIM), then new ones (XREADGROUP,
        blocking up to `wait_s` when there is nothing else). Redis unreachable: logged, nothing."""
        if not self.consume:
            await asyncio.sleep(wait_s)  # a producer: `sluicegate worker` processes consume
            return []
        try:
            await self._ensure_group()
            if self._unacked:
                await self._ack_entries([])
            raw: list[tuple[bytes, dict[bytes, bytes], int]] = []
            if time.monotonic() >= self._next_autoclaim:
                raw += await self._autoclaim(max_items, visibility_s)
            if len(raw) < max_items:
                block = None if raw or wait_s <= 0 else max(1, int(min(wait_s, MAX_BLOCK_S) * 1000))
                response = await self._redis.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                        count=max_items - len(raw), block=block)
                streams = response.items() if isinstance(response, dict) else (response or [])
                for _, entries in streams:
                    for entry_id, fields in entries:
                        raw.append((entry_id, fields, 1))
            self._reachable_again()
            return await self._deliver(raw, visibility_s)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was deleted (or Redis restarted empty): create it again
            return []
        except _UNREACHABLE as exc:
            self._failed(exc)
            await asyncio.sleep(min(max(wait_s, 0.05), 1.0))
            return []

    async def _autoclaim(self, count: int, visibility_s: float) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        """Take over jobs idle for longer than the visibility timeout, with their delivery counts."""
        response = await self._redis.xautoclaim(self.stream, self.group, self.consumer, int(visibility_s * 1000),
                                                start_id=self._autoclaim_cursor, count=count)
        cursor, claimed = response[0], response[1]
        deleted = response[2] if len(response) > 2 else []
        self._autoclaim_cursor = cursor
        wrapped = _text(cursor) == "0-0"  # else more may wait behind this page: look again next claim
        self._next_autoclaim = time.monotonic() + (min(visibility_s / 2, AUTOCLAIM_EVERY_S) if wrapped else 0.0)
        gone = [entry_id for entry_id, fields in claimed if not fields]  # Redis < 7 reports trimmed ones here
        self._counts["trimmed_pending"] += len(deleted) + len(gone)
        if gone:
            await self._redis.xack(self.stream, self.group, *gone)
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields]
        if not claimed:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for entry_id, _ in claimed:
            pipe.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
        pending = await pipe.execute()
        out = []
        for (entry_id, fields), info in zip(claimed, pending, strict=True):
            if info:  # else acked meanwhile by its slow first consumer: done
                out.append((entry_id, fields, int(info[0]["times_delivered"])))
        self._counts["redelivered"] += len(out)
        return out

    async def _deliver(self, raw: list[tuple[bytes, dict[bytes, bytes], int]], visibility_s: float) -> list[Delivery]:
        """Dead-letter what was delivered too often (or cannot be read); one delivery per job id."""
        now = time.monotonic()
        self._inflight = {k: v for k, v in self._inflight.items() if v[1] > now}
        dead: list[tuple[bytes, dict[bytes, bytes], int, str]] = []
        out: list[Delivery] = []
        for entry_id, fields, count in raw:
            if count > self._max_deliveries:
                dead.append((entry_id, fields, count, "max_deliveries"))
                continue
            try:
                job_id, payload = _text(fields[b"id"]), decode_job(fields[b"job"])
            except (KeyError, ValueError, TypeError):
                self._counts["undecodable"] += 1
                dead.append((entry_id, fields, count, "undecodable"))
                continue
            held = self._inflight.get(job_id)
            if held is not None and entry_id not in held[0]:
                held[0].append(entry_id)  # offered twice, the first still being scored here: one delivery
                continue
            self._counts["delivered"] += 1
            self._inflight[job_id] = ([entry_id], now + visibility_s)
            out.append(Delivery(job_id, payload, count))
        if dead:
            try:
                await self._dead_letter(dead)
            except (*_UNREACHABLE, RedisError) as exc:  # still pending: taken over and dead-lettered later
                self._failed(exc)
        return out

    async def _dead_letter(self, items: list[tuple[bytes, dict[bytes, bytes], int, str]]) -> None:
        # not MULTI: the two keys may live on different cluster slots; a crash in between repeats
        # the dead letter, never loses it
        pipe = self._redis.pipeline(transaction=False)
        for entry_id, fields, count, reason in items:
            pipe.xadd(self.dead_stream, {**fields, "entry": entry_id, "group": self.group, "deliveries": count,
                                         "reason": reason, "dead_at": time.time()},
                      maxlen=self._dead_maxlen, approximate=True)
            pipe.xack(self.stream, self.group, entry_id)
        await pipe.execute()
        self._counts["dead"] += len(items)
        log.warning("scoring.dead_letters", count=len(items), stream=self.dead_stream,
                    jobs=[_text(fields.get(b"id", b"?")) for _, fields, _, _ in items][:10])

    async def ack(self, ids: Iterable[str]) -> None:
        """XACK the jobs' entries (every entry of a job offered twice). Redis unreachable: the acks are
        kept and retried; if this process dies first, the jobs are scored again (idempotent)."""
        entries: list[bytes] = []
        for job_id in ids:
            held = self._inflight.pop(job_id, None)
            if held is not None:
                entries.extend(held[0])
        try:
            await self._ack_entries(entries)
        except _UNREACHABLE as exc:
            self._failed(exc)

    async def _ack_entries(self, entries: list[bytes]) -> None:
        todo = [*self._unacked, *entries]
        if not todo:
            return
        self._unacked = todo[-100_000:]
        await self._redis.xack(self.stream, self.group, *todo)
        self._unacked = []
        self._counts["acked"] += len(todo)

    async def _forget_consumer(self) -> None:
        """Remove this consumer from the group when it holds nothing (dead consumers otherwise pile
        up in XINFO CONSUMERS). With pending jobs it stays, so that they can be claimed."""
        mine = await self._redis.xpending_range(self.stream, self.group, min="-", max="+", count=1,
                                                consumername=self.consumer)
        if not mine:
            await self._redis.xgroup_delconsumer(self.stream, self.group, self.consumer)

    # ------------------------------------------------------------------ stats

    async def refresh_stats(self) -> dict[str, Any]:
        """Read the stream's and the group's figures from Redis (the sender does it every
        `stats_interval_s`; `stats()` is synchronous and returns the last ones)."""
        self._next_stats = time.monotonic() + self._stats_interval_s
        pipe = self._redis.pipeline(transaction=False)
        pipe.xinfo_stream(self.stream)
        pipe.xinfo_groups(self.stream)
        pipe.xlen(self.dead_stream)
        info, groups, dead = await pipe.execute(raise_on_error=False)
        for result in (info, groups, dead):
            if isinstance(result, _UNREACHABLE):
                raise result
        snap = dict(self._snapshot, as_of=time.time())
        snap["dead_letters"] = dead if isinstance(dead, int) else None
        if isinstance(info, Exception):  # no such key: nothing offered yet
            snap.update(length=0, pending=0, lag=0)
            self._snapshot = snap
            return snap
        mine = next((g for g in groups if _text(g.get("name")) == self.group), None) \
            if isinstance(groups, list) else None
        snap["length"] = length = int(info.get("length", 0))
        snap["entries_added"] = added = info.get("entries-added")
        if mine is None:
            snap.update(pending=None, lag=None, entries_read=None)
            self._snapshot = snap
            return snap
        snap["pending"] = int(mine.get("pending", 0))
        snap["entries_read"] = read = mine.get("entries-read")
        last = mine.get("last-delivered-id")
        first = info.get("first-entry")
        unread: int | None = None
        if length == 0 or (last is not None and _text(last) == _text(info.get("last-generated-id"))):
            unread = 0  # caught up
        elif first and last is not None and _id(last) < _id(first[0]):
            unread = length  # the stream was trimmed past what the group read: all of it is unread
        if unread is not None and added is not None and read is not None:
            snap["trimmed_unread"] = max(0, int(added) - int(read) - unread)
        lag = mine.get("lag")
        trimmed = snap["trimmed_unread"] or 0
        # Redis 7.0 counts trimmed entries in the lag; what is still waiting is the rest
        snap["lag"] = unread if unread is not None else (max(0, int(lag) - trimmed) if lag is not None else None)
        self._snapshot = snap
        return snap

    def stats(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.url, "stream": self.stream, "group": self.group,
                "consumer": self.consumer if self.consume else None, **self._counts,
                "buffered": len(self._buffer) + self._sending, "buffer_size": self._buffer_size,
                "in_flight": len(self._inflight), "maxlen": self._maxlen, "max_deliveries": self._max_deliveries,
                "redis_reachable": self._reachable, "last_error": self._last_error, **self._snapshot}

    # ------------------------------------------------------------------ reachability

    def _failed(self, exc: BaseException) -> None:
        """A Redis call failed (unreachable, or an error reply): remembered, logged now and then."""
        unreachable = isinstance(exc, _UNREACHABLE)
        if unreachable:
            self._reachable = False
        self._group_ready = False  # Redis may come back empty: create the group again
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + LOG_EVERY_S
            log.warning("scoring.redis_unreachable" if unreachable else "scoring.redis_error", url=self.url,
                        stream=self.stream, error=self._last_error,
                        buffered=len(self._buffer) + self._sending, dropped=self._counts["dropped"])

    def _reachable_again(self) -> None:
        if self._reachable is False:
            log.info("scoring.redis_reachable_again", url=self.url, stream=self.stream,
                     buffered=len(self._buffer), dropped=self._counts["dropped"])
            self._next_log = 0.0
        self._reachable = True

