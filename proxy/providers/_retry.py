"""Retrying the same upstream: which faults are safe to retry, and how long to wait.

Only faults where the upstream cannot have acted on the request, or said so itself: it could not be
reached (connect error), it rate-limited (429), or it failed (5xx). A timeout or a connection cut
mid-answer is not retried on the same upstream (the request may have been processed); fallbacks
handle those. Streams are retried only before their first byte reached the client (the request path
never retries once it has started relaying).

The wait honours the upstream: `retry-after-ms`, then `Retry-After` (seconds or an HTTP date);
otherwise exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff and
Jitter", 2015): uniform in [0, min(cap, base * 2^n)].
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from proxy.errors import UpstreamError, UpstreamHTTPError, UpstreamUnreachable

__all__ = ["retry_delay", "safe_to_retry"]


def safe_to_retry(exc: UpstreamError) -> bool:
    if isinstance(exc, UpstreamUnreachable):
        return True
    if isinstance(exc, UpstreamHTTPError):
        return exc.upstream_status == 429 or exc.upstream_status >= 500
    return False


def _header_delay(headers: Mapping[str, str], now: float) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def retry_delay(exc: UpstreamError, retry_index: int, *, base_s: float, max_s: float,
                rng: Callable[[], float] = random.random, now: Callable[[], float] = time.time) -> float:
    """Seconds to wait before retry number `retry_index` (0-based). An upstream's own wait is
    honoured even past `max_s` (the caller's deadline decides whether it is worth waiting)."""
    told = _header_delay(getattr(exc, "headers", None) or {}, now())
    if told is not None:
        return told
    return rng() * min(max_s, base_s * (2 ** retry_index))
