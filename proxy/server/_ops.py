"""Operational endpoints: liveness, readiness with detail, and the model list (the routes)."""

from __future__ import annotations

import asyncio

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import SluicegateError, error_response
from proxy.server._disclosure import public_readiness, shows_details
from proxy.server._state import Gateway

__all__ = ["healthz", "readyz", "list_models"]

_STARTED = int(time.time())


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the policy is loaded and the upstream pools exist.

    A failing store does not make the gateway unready — requests keep flowing and records are
    spilled to disk — but it shows here as `degraded`, with the recorder's counts.
    """
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        return _json({"status": "starting", "policy": None}, 503)
    recorder = gateway.recorder.stats()
    writable = recorder.get("store_healthy", True)  # the last write succeeded: a full disk still answers pings
    journal = recorder.get("journal") or {}
    degraded = not writable or recorder.get("dropped", 0) > 0 or not journal.get("writable", True)
    policy = gateway.policy
    body = {
        "status": "degraded" if degraded else "ready",
        "policy": {"source": str(policy.source), "version": policy.version, "routes": sorted(gateway.routes)},
        "providers": {name: {"kind": adapter.kind, "pool": "ready"} for name, adapter in gateway.providers.items()},
        "store": {"url": gateway.store.url, "writable": writable, "last_write_at": recorder.get("last_write_at"),
                  "failures_in_a_row": recorder.get("store_failures", 0),
                  "last_failure_at": recorder.get("last_failure_at"), "last_error": recorder.get("last_error")},
        "recorder": recorder,
        "scoring": gateway.scoring.stats() if gateway.scoring is not None else None,
        "reload": getattr(getattr(request.app.state, "reloader", None), "last", None),
        "shadows": gateway.shadows.stats(),
        "cache": gateway.cache.stats() if gateway.cache is not None else None,
        "process": {"asyncio_tasks": len(asyncio.all_tasks())},  # a leak of tasks shows here (soak bench)
    }
    return _json(body if shows_details(request) else public_readiness(body))  # no paths, URLs, providers


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        caller = gateway.auth.caller(request.headers)
    except SluicegateError as exc:
        return error_response(exc)
    data = [{"id": name, "object": "model", "created": _STARTED, "owned_by": "sluicegate"}
            for name in gateway.routes if caller is None or caller.may_use(name)]  # a caller sees its routes
    return _json({"object": "list", "data": data})
