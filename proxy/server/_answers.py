"""Reading an answer into its record, and the one access line per request."""

from __future__ import annotations

import time
from typing import Any

from proxy.costs import cost_usd
from proxy.prices import price_for
from proxy.logs import get_logger
from proxy.records import Record
from proxy.server._state import Gateway

__all__ = ["PASSTHROUGH_VARIANT", "finish_request", "describe_answer"]

log = get_logger("sluicegate.access")

PASSTHROUGH_VARIANT = "passthrough"


def describe_answer(gateway: Gateway, record: Record, data: dict[str, Any]) -> None:
    """Served model, fingerprint, finish reason, tool calls, usage and cost, from an answer."""
    record.model_served = data.get("model")
    record.system_fingerprint = data.get("system_fingerprint")
    record.usage = data.get("usage")
    choices = data.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        first = choices[0]
        record.finish_reason = first.get("finish_reason")
        message = first.get("message")
        if isinstance(message, dict) and message.get("tool_calls"):
            record.tool_calls = message["tool_calls"]
    if record.variant != PASSTHROUGH_VARIANT:
        record.cost_usd = cost_usd(price_for(gateway.policy.models[record.variant]), record.usage)


def finish_request(gateway: Gateway, request_id: str, route: str | None, variant: str | None, status: int,
                   clock: float, attempts: int | None, *, error: str | None = None, level: str = "info") -> None:
    """The request is answered: one log line, and the request metrics."""
    seconds = time.perf_counter() - clock
    getattr(log, level)("request", request_id=request_id, route=route, variant=variant, status=status,
                        latency_ms=round(seconds * 1000, 2), attempts=attempts, error=error)
    if gateway.metrics is not None:
        gateway.metrics.request(route, variant, status, seconds)
