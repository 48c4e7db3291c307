"""Shadow traffic: a sampled copy of a served request sent to the route's shadow model, in the
background, after the primary answer is on its way.

It never delays or fails the primary: it starts after the primary's record is handed over, runs
as its own task, and is bounded (`MAX_IN_FLIGHT`): when that many shadows are running, the next
one is dropped and counted. Which requests are shadowed is a deterministic draw per request id
(`rate`). The shadow is always a non-streaming call (its answer is recorded whole, whatever the
primary was). Its record: same `request_id` (the link to its primary), `attempt: 0`,
`attempt_reason: shadow`, `served: false`; it runs the route's guards and is sampled for scorers
like a primary (the same draw, so a scored primary has its shadow scored too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from proxy.errors import UpstreamError
from proxy.logs import get_logger
from proxy.providers import UpstreamCall
from proxy.records import Record, new_id
from proxy.scoring import draw

__all__ = ["MAX_IN_FLIGHT", "Shadows"]

log = get_logger("sluicegate.shadow")

MAX_IN_FLIGHT = 32


class Shadows:
    """Starts shadow calls and counts what happened to them (shown in /readyz)."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = {"sent": 0, "answered": 0, "failed": 0, "dropped_saturated": 0}

    def maybe_send(self, gateway: Any, route: Any, primary: Record, upstream_body: dict[str, Any]) -> None:
        """Sync, never waits: decide, then start the shadow call as a task (or drop and count)."""
        shadow = route.config.shadow
        if shadow is None or draw(primary.request_id, salt=f"shadow:{route.name}") >= shadow.rate:
            return
        if len(self._tasks) >= self.max_in_flight:
            self.counts["dropped_saturated"] += 1
            return
        self.counts["sent"] += 1
        task = asyncio.create_task(self._run(gateway, route, primary, dict(upstream_body), shadow.model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, gateway: Any, route: Any, primary: Record, body: dict[str, Any], variant: str) -> None:
        pinned = gateway.policy.models[variant]
        record = dataclasses.replace(
            primary, id=new_id("att_"), attempt=0, attempt_reason="shadow", variant=variant,
            provider=pinned.provider, model_requested=pinned.model, started_at=time.time(), served=False,
            response=None, model_served=None, system_fingerprint=None, finish_reason=None, tool_calls=None,
            usage=None, cost_usd=None, first_byte_at=None, ended_at=None, latency_ms=None, ttft_ms=None,
            upstream_status=None, status=None, outcome="ok", error=None, guards=[], stream=False)
        body.update(pinned.params)
        body["model"] = pinned.model
        body.pop("stream", None)
        body.pop("stream_options", None)
        record.request = body
        record.params = {k: v for k, v in body.items() if k in primary.params or k in pinned.params}
        clock = time.perf_counter()
        try:
            reply = await gateway.providers[pinned.provider].send(UpstreamCall(primary.endpoint, body, route.timeout))
        except UpstreamError as exc:
            self.counts["failed"] += 1
            record.ended_at = time.time()
            record.latency_ms = round((time.perf_counter() - clock) * 1000, 3)
            record.upstream_status, record.outcome, record.error = exc.upstream_status, exc.outcome, exc.message
            gateway.record(record)
            return
        except Exception as exc:  # noqa: BLE001 - a shadow must never take anything down
            self.counts["failed"] += 1
            log.error("shadow_failed", request_id=primary.request_id, error=f"{type(exc).__name__}: {exc}"[:300])
            return
        from proxy.server._answers import describe_answer

        self.counts["answered"] += 1
        record.first_byte_at, record.ended_at = reply.first_byte_at, time.time()
        record.latency_ms = round((time.perf_counter() - clock) * 1000, 3)
        record.upstream_status = record.status = reply.status
        record.response, record.response_bytes = reply.data, len(reply.content)
        describe_answer(gateway, record, reply.data)
        if route.guards is not None:
            record.guards = [failure.to_dict() for failure in route.guards.run(body, reply.data)]
        gateway.record(record)
        if gateway.scoring is not None:
            gateway.scoring.offer(record)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "in_flight": len(self._tasks), "max_in_flight": self.max_in_flight}

    async def drain(self, timeout: float) -> None:
        """At shutdown: let running shadows finish (their records count), then cancel the rest."""
        if self._tasks:
            done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
