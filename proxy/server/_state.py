"""Gateway: what the request path reads — swapped as a whole when the policy changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.feedback import FeedbackKeys, RecentIds
from proxy.providers import ProviderAdapter
from proxy.server._gateway import CompiledRoute
from proxy.server._limits import KeySlots
from proxy.server._shadow import Shadows

__all__ = ["Gateway"]


@dataclasses.dataclass(slots=True)
class Gateway:
    policy: Any  # proxy.config.Policy
    routes: dict[str, CompiledRoute]
    providers: dict[str, ProviderAdapter]
    recorder: Any  # proxy.records.Recorder
    store: Any  # proxy.records.RecordStore
    max_body_bytes: int
    recent: RecentIds = dataclasses.field(default_factory=RecentIds)  # ids feedback may refer to
    feedback_keys: FeedbackKeys = dataclasses.field(default_factory=FeedbackKeys)  # recent idempotency keys
    scoring: Any = None  # proxy.scoring.Scoring when a route has scorers
    shadows: Shadows = dataclasses.field(default_factory=Shadows)  # background shadow calls
    canary_stages: dict[str, tuple[float, str]] = dataclasses.field(default_factory=dict)  # from the store
    cache: Any = None  # proxy.server._cache.ResponseCache: the output cache of `cache:` routes
    metrics: Any = None  # proxy.server._metrics.Metrics
    auth: Any = None  # proxy.server._auth.Authenticator
    limiter: Any = None  # proxy.server._limits.RateLimiter
    slots: Any = None  # proxy.server._limits.ProviderSlots
    key_slots: KeySlots = dataclasses.field(default_factory=KeySlots)  # kept as it is across reloads

    def record(self, record: Any) -> None:
        """A finished attempt: counted, then handed to the recorder."""
        if self.metrics is not None:
            self.metrics.attempt(record)
        self.recorder.submit(record)

    def served(self, record: Any) -> None:
        """The record of an answer the client got: recorded, then offered to sampling."""
        self.record(record)
        if self.limiter is not None:
            self.limiter.used_tokens(record.caller, record.usage)
        if self.scoring is not None:
            self.scoring.offer(record)
