"""Reading an answer into its record, a cancelled attempt's record, and the one access line per request."""

from __future__ import annotations

import time
from typing import Any

from proxy.costs import cost_usd
from proxy.prices import price_for
from proxy.logs import get_logger
from proxy.records import Record
from proxy.server._state import Gateway

__all__ = ["CANCELLED", "CLIENT_CLOSED", "PASSTHROUGH_VARIANT", "WAITING", "describe_answer", "finish_cancelled",
           "finish_request"]

log = get_logger("sluicegate.access")

PASSTHROUGH_VARIANT = "passthrough"

# `outcome` of an attempt the gateway stopped before it finished, its upstream call closed: the client
# disconnected (`error` says so; a stream's `served` says whether any event had reached it), or the
# server was shutting down. Stream records of earlier versions say `client_disconnected` instead.
CANCELLED = "cancelled"
CLIENT_CLOSED = 499  # nginx's "client closed request": a status no client receives, for logs and metrics


# what a cancelled attempt was waiting for, as its record's `error` says it
WAITING = {
    "upstream": "while waiting for the upstream",
    "line": "while waiting in line for provider '{provider}' (its max_concurrent)",
    "retry": "while waiting to retry",
    "cache": "while the output cache was read",
}


def finish_cancelled(gateway: Gateway, record: Record, *, client_left: bool, waiting: str) -> None:
    """An attempt stopped half-way, waiting for `waiting` (a key of WAITING): what it had spent so far
    (time; the upstream's status, bytes, the answer and usage so far, where they were known) stays on
    the record, which is not served."""
    if record.response:
        describe_answer(gateway, record, record.response)
    record.ended_at = time.time()
    record.latency_ms = round((record.ended_at - record.started_at) * 1000, 3)
    record.served = False
    record.outcome = CANCELLED
    record.status = CLIENT_CLOSED if client_left else 503
    who = "the client closed the connection" if client_left else "the server stopped the request"
    record.error = f"{who} {WAITING[waiting].format(provider=record.provider)}"


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
