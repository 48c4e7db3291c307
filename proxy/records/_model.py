"""The record: one per request attempt, replayable, free of secrets."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from typing import Any

__all__ = ["Outcome", "Record", "new_id"]


# Ids need uniqueness, not secrecy: a generator seeded from the OS (and reseeded in a forked child)
# costs no system call per id, where os.urandom cost ~2% of the gateway's CPU (issue 5 profile).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_id(prefix: str = "") -> str:
    """A time-ordered unique id: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"{prefix}{int(time.time() * 1000):012x}{_ids.getrandbits(64):016x}"


@dataclasses.dataclass(slots=True)
class Record:
    """Everything known about one attempt of one request.

    `request_id` is shared by all attempts of one client request (it is the value of the
    `x-sluicegate-request-id` response header); `id` is unique per attempt; `served` marks the
    attempt whose answer reached the client. Text fields hold what the route's capture mode
    allows and nothing else; no key or Authorization value is ever put here.
    """

    id: str
    request_id: str
    attempt: int
    attempt_reason: str  # primary | fallback | retry | shadow
    endpoint: str  # chat.completions | completions | embeddings
    route: str
    variant: str
    provider: str
    model_requested: str
    started_at: float  # epoch seconds
    experiment: str | None = None
    served: bool = False
    correlation_id: str | None = None
    episode_id: str | None = None
    user_id: str | None = None
    template_ref: str | None = None
    retrieval_ids: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    bucket: int | None = None
    stream: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    capture: str = "full"  # full | redacted | refs_only
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    request_hash: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    model_served: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    first_byte_at: float | None = None
    ended_at: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    upstream_status: int | None = None
    status: int | None = None  # what the client got (served attempt) or would have got
    outcome: str = "ok"  # ok | upstream_error | timeout | connect_error | stream_cut | cancelled | malformed |
    # upstream_too_large | upstream_busy | …
    error: str | None = None
    guards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cache_hit: bool = False
    policy_version: str | None = None
    caller: str | None = None  # the name of the caller's key (auth.keys), never the key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class Outcome:
    """A downstream outcome the app reported, about one request or one whole episode.

    Stored beside the records (same recorder, same store). With an idempotency key, `id` is derived
    from (caller, request or episode, metric, key) and `digest` from the content (value, source,
    note): a repeated report is stored once, and a different report under the same id is refused
    (409 at the API; at write time it goes to `outcome_conflicts`, see `proxy.records._conflicts`).
    """

    id: str
    metric: str
    value: float  # booleans are 1.0 / 0.0
    level: str  # inference | episode
    received_at: float
    request_id: str | None = None
    episode_id: str | None = None
    source: str | None = None
    note: str | None = None
    caller: str | None = None  # the name of the caller's key (auth.keys), never the key; None on an open gateway
    idempotency_key: str | None = None  # as the caller sent it
    digest: str | None = None  # of (value, source, note), set with an idempotency key
    kind: str = "outcome"  # tells outcome rows from record rows in a spill file
