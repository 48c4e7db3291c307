"""The request path, top to bottom.

read body -> check fields -> request metadata -> route -> assign variant -> for each attempt
(assigned variant, then fallbacks): pin model and params -> upstream call -> record the attempt
-> answer (or relay the stream) with X-Sluicegate-* headers.

Nothing here waits on the store: records are handed to the recorder, which writes them later.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import RouteNotFound, SluicegateError, UpstreamError, UpstreamTimeout, error_response
from proxy.logs import get_logger
from proxy.metadata import RequestMeta, read_meta
from proxy.providers import UpstreamCall, UpstreamReply
from proxy.records import Record, new_id
from proxy.routing import Assignment, Splitter, sticky_key
from proxy.server._answers import PASSTHROUGH_VARIANT, access_log, describe_answer
from proxy.server._relay import RelayResponse
from proxy.server._request import check_fields, read_json_body
from proxy.server._state import Gateway

__all__ = ["serve_inference"]

log = get_logger("sluicegate.gateway")

STREAMING_ENDPOINTS = ("chat.completions", "completions")


async def serve_inference(request: Request, endpoint: str) -> Response:
    gateway: Gateway = request.app.state.gateway
    started_at = time.time()
    clock = time.perf_counter()
    request_id = new_id("req_")
    headers = {"x-sluicegate-request-id": request_id}
    try:
        raw, body = await read_json_body(request, gateway.max_body_bytes)
        check_fields(endpoint, body)
        meta = read_meta(request.headers, body)
        route_name, assignment, plan, splitter = _route(gateway, request, body)
        headers["x-sluicegate-route"] = route_name
        headers["x-sluicegate-variant"] = assignment.variant
        stream = bool(body.get("stream")) and endpoint in STREAMING_ENDPOINTS
        route = gateway.routes.get(route_name)
        deadline = clock + route.timeout if route is not None and route.timeout else None
        for attempt_no, (variant, reason) in enumerate(plan, 1):
            record = _new_record(gateway, request_id, attempt_no, reason, endpoint, route_name, variant,
                                 body, meta, assignment, splitter, started_at if attempt_no == 1 else time.time())
            upstream_body, drop_usage_chunk = _upstream_body(gateway, body, record, meta, stream)
            record.request = upstream_body
            record.request_bytes = len(raw)
            call = UpstreamCall(endpoint, upstream_body, _remaining(deadline, gateway, record))
            provider = gateway.providers[record.provider]
            try:
                if stream:
                    upstream = await _bounded(provider.stream(call), call.timeout, record.provider)
                    record.upstream_status = upstream.status
                    record.first_byte_at = upstream.first_byte_at
                    record.served = True
                    return RelayResponse(gateway, upstream, record, drop_usage_chunk, headers, clock)
                reply = await _bounded(provider.send(call), call.timeout, record.provider)
            except UpstreamError as exc:
                _finish_failed(record, exc)
                gateway.recorder.submit(record)
                if not _worth_another_try(exc) or attempt_no == len(plan):
                    raise
                log.warning("upstream_failed_trying_next", request_id=request_id, provider=exc.provider,
                            variant=variant, error=exc.message)
                continue
            _finish_reply(gateway, record, reply, clock)
            gateway.recorder.submit(record)
            headers["x-sluicegate-variant"] = variant
            headers["x-sluicegate-guards"] = "pass"
            response = Response(reply.content, status_code=reply.status, headers=headers,
                                media_type="application/json")
            access_log(request_id, route_name, variant, reply.status, clock, attempt_no)
            return response
        raise AssertionError("unreachable: a route plan is never empty")
    except SluicegateError as exc:
        access_log(request_id, headers.get("x-sluicegate-route"), headers.get("x-sluicegate-variant"),
                exc.status, clock, None, error=exc.message, level=exc.log_level)
        return error_response(exc, headers)


def _route(gateway: Gateway, request: Request, body: dict[str, Any]
           ) -> tuple[str, Assignment, list[tuple[str, str]], Splitter | None]:
    model = body["model"]
    route = gateway.routes.get(model)
    if route is not None:
        key = sticky_key(route.sticky, request.headers, body, body.get("metadata") or {})
        assignment = route.splitter.assign(key)
        return route.name, assignment, route.plan(assignment.variant), route.splitter
    if gateway.policy.passthrough is not None:
        return model, Assignment(PASSTHROUGH_VARIANT, -1, False), [(PASSTHROUGH_VARIANT, "primary")], None
    known = ", ".join(sorted(gateway.routes)) or "none"
    raise RouteNotFound(f"no route named '{model}'; the routes are: {known} (GET /v1/models lists them)",
                        param="model")


def _new_record(gateway: Gateway, request_id: str, attempt: int, reason: str, endpoint: str, route: str,
                variant: str, body: dict[str, Any], meta: RequestMeta, assignment: Assignment,
                splitter: Splitter | None, started_at: float) -> Record:
    policy = gateway.policy
    if variant == PASSTHROUGH_VARIANT:
        provider, model, capture = policy.passthrough.provider, body["model"], policy.passthrough.capture
    else:
        pinned = policy.models[variant]
        provider, model = pinned.provider, pinned.model
        capture = gateway.routes[route].capture
    return Record(
        id=new_id("att_"), request_id=request_id, attempt=attempt, attempt_reason=reason, endpoint=endpoint,
        route=route, variant=variant, provider=provider, model_requested=model, started_at=started_at,
        experiment=splitter.experiment if splitter else None, correlation_id=meta.correlation_id,
        episode_id=meta.episode_id, user_id=meta.user_id, template_ref=meta.template_ref,
        retrieval_ids=meta.retrieval_ids, tags=meta.tags, bucket=assignment.bucket if assignment.sticky else None,
        stream=bool(body.get("stream")), capture=capture, policy_version=policy.version,
    )


def _upstream_body(gateway: Gateway, body: dict[str, Any], record: Record, meta: RequestMeta,
                   stream: bool) -> tuple[dict[str, Any], bool]:
    """The body sent upstream: the caller's, with the pinned model and params, minus our metadata.

    Returns it and whether we asked for the usage chunk ourselves (then it is not relayed).
    """
    out = dict(body)
    out["model"] = record.model_requested
    if record.variant != PASSTHROUGH_VARIANT:
        out.update(gateway.policy.models[record.variant].params)
    provider = gateway.policy.providers[record.provider]
    if "metadata" in out:
        if meta.app_metadata and provider.forward_metadata:
            out["metadata"] = meta.app_metadata
        else:
            del out["metadata"]
    for name in provider.strip_params:
        out.pop(name, None)
    record.params = {k: out[k] for k in _PARAM_KEYS if k in out}
    drop_usage_chunk = False
    if stream:
        options = out.get("stream_options") or {}
        if not options.get("include_usage"):
            out["stream_options"] = {**options, "include_usage": True}
            drop_usage_chunk = True
    return out, drop_usage_chunk


_PARAM_KEYS = ("temperature", "top_p", "seed", "max_tokens", "max_completion_tokens", "n", "stop",
               "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
               "response_format", "tool_choice", "parallel_tool_calls", "reasoning_effort", "dimensions",
               "encoding_format")


def _remaining(deadline: float | None, gateway: Gateway, record: Record) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.perf_counter()
    if left <= 0:
        raise UpstreamTimeout(f"the route's deadline passed before upstream '{record.provider}' was tried",
                              provider=record.provider)
    return left


async def _bounded(call: Any, timeout: float | None, provider: str) -> Any:
    if timeout is None:
        return await call
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError:
        raise UpstreamTimeout(f"upstream '{provider}' did not answer within the route's deadline "
                              f"({timeout:.1f}s left)", provider=provider) from None


def _worth_another_try(exc: UpstreamError) -> bool:
    retryable = getattr(exc, "retryable", None)
    return True if retryable is None else bool(retryable)


def _finish_failed(record: Record, exc: UpstreamError) -> None:
    record.ended_at = time.time()
    record.latency_ms = round((record.ended_at - record.started_at) * 1000, 3)
    record.upstream_status = exc.upstream_status
    record.status = exc.status
    record.outcome = exc.outcome
    record.error = exc.message


def _finish_reply(gateway: Gateway, record: Record, reply: UpstreamReply, clock: float) -> None:
    data = reply.data
    record.served = True
    record.first_byte_at = reply.first_byte_at
    record.ended_at = time.time()
    record.latency_ms = round((time.perf_counter() - clock) * 1000, 3)
    record.upstream_status = reply.status
    record.status = reply.status
    record.response = data
    record.response_bytes = len(reply.content)
    describe_answer(gateway, record, data)
