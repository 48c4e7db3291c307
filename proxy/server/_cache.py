"""The exact-match output cache (`cache: {mode: exact, ttl}` on a route).

Temperature 0 is not determinism: providers return different answers to the same request. A route
that needs reproducible outputs caches them. The key is the SHA-256 of the request as sent upstream
(the pinned model and params included) and the provider; fields that cannot change the answer
(`user`, `metadata`, `stream`, `stream_options`) are left out, so a streamed and a plain request
share an entry. Only answers that were served with no guard failure are stored.

Entries live in the store (table `response_cache`), so every replica on one store shares them, and
in a small in-memory LRU in front of it. A look-up waits on the store's own look-up lane (never
behind a report) for at most `lookup_timeout_s`; a slow or failing store is a miss, counted, never
an error. Writes go through the recorder like records: the request path never waits on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson

from proxy.logs import get_logger
from proxy.records._store import LOOKUP_LANE

__all__ = ["ResponseCache", "cache_key", "completion_events"]

log = get_logger("sluicegate.cache")

KEY_IGNORES = frozenset({"user", "metadata", "stream", "stream_options"})
_LOOKUP = "SELECT answer, created_at, expires_at FROM response_cache WHERE key = ? AND expires_at > ?"


def cache_key(provider: str, upstream_body: dict[str, Any]) -> str:
    """The entry's key: provider + the request as sent upstream, minus fields that cannot change the answer."""
    body = {k: v for k, v in upstream_body.items() if k not in KEY_IGNORES}
    canonical = orjson.dumps({"provider": provider, "body": body}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class ResponseCache:
    def __init__(self, store: Any, recorder: Any, *, memory_entries: int = 1024,
                 lookup_timeout_s: float = 0.05) -> None:
        self._store = store
        self._recorder = recorder
        self._memory: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()  # key -> (expires, answer)
        self.memory_entries = memory_entries
        self.lookup_timeout_s = lookup_timeout_s
        self.counts = {"hits": 0, "misses": 0, "stored": 0, "lookup_timeouts": 0, "lookup_errors": 0}

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached answer, or None (absent, expired, or the store did not answer in time)."""
        now = time.time()
        entry = self._memory.get(key)
        if entry is not None:
            if entry[0] > now:
                self._memory.move_to_end(key)
                self.counts["hits"] += 1
                return entry[1]
            del self._memory[key]
        answer = await self._lookup(key, now)
        self.counts["hits" if answer is not None else "misses"] += 1
        return answer

    async def _lookup(self, key: str, now: float) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self.lookup_timeout_s):
                rows = await self._store.fetch(_LOOKUP, [key, now], lane=LOOKUP_LANE)
        except TimeoutError:
            self.counts["lookup_timeouts"] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - the store being down is a miss, not a failed request
            self.counts["lookup_errors"] += 1
            log.warning("cache_lookup_failed", error=f"{type(exc).__name__}: {exc}"[:200])
            return None
        if not rows:
            return None
        answer = orjson.loads(rows[0][0])
        self._remember(key, float(rows[0][2]), answer)
        return answer

    def put(self, key: str, *, route: str, variant: str, model: str, answer: dict[str, Any], ttl_s: float) -> None:
        now = time.time()
        self._remember(key, now + ttl_s, answer)
        self._recorder.submit({"row": "cache", "key": key, "route": route, "variant": variant, "model": model,
                               "created_at": now, "expires_at": now + ttl_s,
                               "answer": orjson.dumps(answer).decode()})
        self.counts["stored"] += 1

    def _remember(self, key: str, expires_at: float, answer: dict[str, Any]) -> None:
        self._memory[key] = (expires_at, answer)
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {**self.counts, "in_memory": len(self._memory)}


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def completion_events(answer: dict[str, Any], include_usage: bool) -> bytes:
    """A cached (non-streamed) answer as the SSE stream the API would have sent: content and tool
    calls in one delta per choice, then the finish reasons, the usage chunk if asked, `[DONE]`."""
    chat = answer.get("object") == "chat.completion"
    head = {"id": answer.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": answer.get("created"), "model": answer.get("model")}
    if answer.get("system_fingerprint") is not None:
        head["system_fingerprint"] = answer["system_fingerprint"]
    events = []
    for choice in answer.get("choices") or []:
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
            if message.get("refusal") is not None:
                delta["refusal"] = message["refusal"]
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            events.append(_sse({**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                     "finish_reason": None}]}))
            events.append(_sse({**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                                     "finish_reason": choice.get("finish_reason")}]}))
        else:
            events.append(_sse({**head, "choices": [{"index": index, "text": choice.get("text", ""),
                                                     "logprobs": None,
                                                     "finish_reason": choice.get("finish_reason")}]}))
    if include_usage and answer.get("usage") is not None:
        events.append(_sse({**head, "choices": [], "usage": answer["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)
