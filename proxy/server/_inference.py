"""The request path, top to bottom.

read body -> check fields -> request metadata -> route -> assign variant -> for each attempt
(assigned variant, then fallbacks): pin model and params -> output cache (`cache:` routes) ->
upstream call -> record the attempt -> answer (or relay the stream) with X-Sluicegate-* headers.

Nothing here waits on the store: records are handed to the recorder, which writes them later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from proxy.errors import GuardBlocked, RouteNotFound, SluicegateError, UpstreamError, UpstreamTimeout, error_response
from proxy.logs import get_logger
from proxy.metadata import RequestMeta, read_meta
from proxy.providers import UpstreamCall, UpstreamReply
from proxy.providers._retry import retry_delay, safe_to_retry
from proxy.records import Record, new_id
from proxy.guards import GuardResult
from proxy.routing import Assignment, sticky_key
from proxy.server._answers import (CLIENT_CLOSED, PASSTHROUGH_VARIANT, describe_answer, finish_cancelled,
                                   finish_request)
from proxy.server._cache import cache_key, completion_events
from proxy.server._disconnect import DisconnectWatch
from proxy.server._gateway import CompiledRoute
from proxy.server._relay import RelayResponse, buffer_stream
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
    record: Record | None = None  # the current attempt's; handed to the recorder once its ended_at is set
    watch: DisconnectWatch | None = None
    key_slot: Callable[[], None] | None = None
    waiting = "upstream"  # what the attempt is waiting for (a key of WAITING), for a cancelled record
    try:
        caller = gateway.auth.caller(request.headers)  # before the body: no work for unknown callers
        raw, body = await read_json_body(request, gateway.max_body_bytes, gateway.policy.server.body_timeout)
        check_fields(endpoint, body, gateway.policy.server)
        meta = read_meta(request.headers, body)
        route, assignment = _route(gateway, request, body, meta, caller)
        route_name = route.name if route is not None else body["model"]
        gateway.auth.allow(caller, route_name)
        if caller is not None:
            key_slot = gateway.key_slots.take(caller, gateway.policy.server.max_concurrent_per_key)
            headers.update(gateway.limiter.admit(caller))
        gateway.recent.add(request_id, meta.episode_id)
        headers["x-sluicegate-route"] = route_name
        stream = bool(body.get("stream")) and endpoint in STREAMING_ENDPOINTS
        guards = route.guards if route is not None and endpoint != "embeddings" else None
        deadline = clock + route.timeout if route is not None and route.timeout else None
        plan = route.plan(assignment.variant) if route is not None else None
        variant, reason, attempt, retries, upstream_retries = assignment.variant, "primary", 1, 0, 0
        retry_wait = 0.0
        watch = DisconnectWatch(request.receive)  # the body is read: from here on, a client that leaves cancels
        while True:
            headers["x-sluicegate-variant"] = variant
            record = _new_record(gateway, request_id, attempt, reason, endpoint, route_name, variant,
                                 body, meta, assignment, route, started_at if attempt == 1 else time.time())
            record.caller = caller.name if caller is not None else None
            if retry_wait:  # the same upstream again, after the wait it asked for
                waiting = "retry"
                await asyncio.sleep(retry_wait)
                record.started_at, retry_wait = time.time(), 0.0
            upstream_body, drop_usage_chunk = _upstream_body(gateway, body, record, meta, stream)
            record.request = upstream_body
            record.request_bytes = len(raw)
            key = cache_key(record.provider, upstream_body) if route is not None and route.config.cache else None
            if key is not None:
                waiting = "cache"
                hit = await _answer_from_cache(gateway, key, record, body, upstream_body, guards, stream, headers,
                                               clock)
                if hit is not None:
                    return hit
            call = UpstreamCall(endpoint, upstream_body, _remaining(deadline, record))
            provider = gateway.providers[record.provider]
            waiting = "line"
            release = await gateway.slots.acquire(record.provider)  # the provider's max_concurrent (or None)
            waiting = "upstream"
            try:
                if stream and not (guards is not None and route.buffer_streams):  # type: ignore[union-attr]
                    upstream = await _bounded(provider.stream(call), call.timeout, record.provider)
                    record.upstream_status = upstream.status
                    record.first_byte_at = upstream.first_byte_at
                    record.served = True
                    headers["x-sluicegate-guards"] = "deferred" if guards is not None else "pass"
                    if route is not None:
                        gateway.shadows.maybe_send(gateway, route, record, upstream_body)
                    on_done = partial(_keep_in_cache, gateway, route, key) if key is not None else None
                    relay = RelayResponse(gateway, guards, upstream, record, drop_usage_chunk, headers, clock,
                                          on_done, tuple(r for r in (release, key_slot) if r is not None), watch)
                    # the relay records the attempt, stops the watch and gives both slots back when the stream ends
                    record = watch = key_slot = release = None
                    return relay
                if stream:
                    reply = await _bounded(buffer_stream(provider, call, record, drop_usage_chunk, clock),
                                           call.timeout, record.provider)
                else:
                    reply = await _bounded(provider.send(call), call.timeout, record.provider)
            except UpstreamError as exc:
                release = _give_back(release)  # not held while waiting to retry
                _finish_failed(record, exc)
                gateway.record(record)
                delay = _retry_delay(gateway, record.provider, exc, upstream_retries, deadline)
                if delay is not None:
                    log.info("upstream_retry", request_id=request_id, provider=exc.provider, variant=variant,
                             delay_s=round(delay, 3), error=exc.message)
                    retry_wait = delay
                    reason, attempt, upstream_retries = "retry", attempt + 1, upstream_retries + 1
                    continue
                following = plan.after_upstream_error() if plan is not None and _worth_another_try(exc) else None
                if following is None:
                    raise
                log.warning("upstream_failed_trying_next", request_id=request_id, provider=exc.provider,
                            variant=variant, next=following, error=exc.message)
                variant, reason, attempt, upstream_retries = following, "fallback", attempt + 1, 0
                continue
            finally:
                _give_back(release)  # once the reply is in (a relayed stream gives it back itself)
            _finish_reply(gateway, record, reply, clock)
            failures = guards.run(upstream_body, record.response) if guards is not None else []
            record.guards = [failure.to_dict() for failure in failures]
            action = _action(route, failures)
            if action in RETRY_ACTIONS and retries < route.max_retries:  # type: ignore[union-attr]
                following = plan.after_guard_failure(fallbacks_only=action == "fallback")  # type: ignore[union-attr]
                if following is not None:
                    record.served, record.outcome = False, "guard_failed"
                    gateway.record(record)
                    variant, reason, attempt, retries = following, "retry", attempt + 1, retries + 1
                    continue
            headers["x-sluicegate-guards"] = guard_header(failures)
            if action == "block" or (action in RETRY_ACTIONS and _blocks(route, failures)):
                record.served, record.outcome, record.status = False, "guard_blocked", 422
                gateway.record(record)
                raise GuardBlocked(failures)
            gateway.served(record)
            if key is not None and not failures:
                _keep_in_cache(gateway, route, key, record)
            if route is not None:
                gateway.shadows.maybe_send(gateway, route, record, upstream_body)
            finish_request(gateway, request_id, route_name, variant, reply.status, clock, attempt)
            media_type = "text/event-stream" if stream else "application/json"
            return Response(reply.content, status_code=reply.status, headers=headers, media_type=media_type)
    except SluicegateError as exc:
        finish_request(gateway, request_id, headers.get("x-sluicegate-route"), headers.get("x-sluicegate-variant"),
                       exc.status, clock, None, error=exc.message, level=exc.log_level)
        return error_response(exc, headers)
    except ClientDisconnect:  # gone while sending its body: nothing was routed or sent anywhere yet
        finish_request(gateway, request_id, None, None, CLIENT_CLOSED, clock, None,
                       error="the client closed the connection before its body arrived")
        return Response(status_code=CLIENT_CLOSED)  # never read: the client is gone
    except asyncio.CancelledError:
        client_left = watch is not None and watch.absorb()
        if record is not None and record.ended_at is None:  # the attempt under way: recorded, never lost
            finish_cancelled(gateway, record, client_left=client_left, waiting=waiting)
            gateway.record(record)
        finish_request(gateway, request_id, headers.get("x-sluicegate-route"), headers.get("x-sluicegate-variant"),
                       CLIENT_CLOSED if client_left else 503, clock, record.attempt if record is not None else None,
                       error=record.error if record is not None else "cancelled")
        if not client_left:
            raise  # the server is stopping: let the cancellation go on
        return Response(status_code=CLIENT_CLOSED)  # never read: the client is gone
    finally:
        if watch is not None:
            watch.stop()
        _give_back(key_slot)  # the caller's slot, at the end of the request (a stream's: at the stream's end)


async def _answer_from_cache(gateway: Gateway, key: str, record: Record, body: dict[str, Any],
                             upstream_body: dict[str, Any], guards: Any, stream: bool, headers: dict[str, str],
                             clock: float) -> Response | None:
    """The cached answer as this attempt's, or None: not cached, or it fails the guards as they are now."""
    answer = await gateway.cache.get(key)
    if answer is None:
        headers["x-sluicegate-cache"] = "miss"
        if gateway.metrics is not None:
            gateway.metrics.cache_miss()
        return None
    failures = guards.run(upstream_body, answer) if guards is not None else []
    if failures:
        headers["x-sluicegate-cache"] = "miss"
        return None
    record.cache_hit = record.served = True
    record.status, record.response = 200, answer
    record.ended_at = time.time()
    record.latency_ms = round((time.perf_counter() - clock) * 1000, 3)
    describe_answer(gateway, record, answer)
    record.cost_usd = 0.0  # nothing was paid for this answer
    headers["x-sluicegate-cache"] = "hit"
    headers["x-sluicegate-guards"] = "pass"
    gateway.record(record)  # not offered to scorers: this very answer had its chance when first served
    finish_request(gateway, record.request_id, record.route, record.variant, 200, clock, record.attempt)
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return Response(completion_events(answer, include_usage), headers=headers, media_type="text/event-stream")
    return Response(orjson.dumps(answer), headers=headers, media_type="application/json")


def _keep_in_cache(gateway: Gateway, route: CompiledRoute, key: str, record: Record) -> None:
    """Store an answer that was served whole and passed its guards."""
    if record.status == 200 and record.outcome == "ok" and record.response and not record.guards:
        gateway.cache.put(key, route=route.name, variant=record.variant, model=record.model_requested,
                          answer=record.response, ttl_s=route.config.cache.ttl)


def _give_back(release: Any) -> None:
    if release is not None:
        release()


def _route(gateway: Gateway, request: Request, body: dict[str, Any], meta: RequestMeta,
           caller: Any) -> tuple[CompiledRoute | None, Assignment]:
    model = body["model"]
    route = gateway.routes.get(model)
    if route is not None:
        key = sticky_key(route.sticky, request.headers, body, body.get("metadata") or {})
        splitter = route.splitter_for(request.headers, meta.tags, meta.app_metadata,
                                      caller.name if caller is not None else None) if route.conditions \
            else route.splitter
        if splitter is route.splitter and route.config.canary is not None:
            stored = gateway.canary_stages.get(route.name)
            if stored is not None:  # the stage the controller (or an operator) set, read from the store
                splitter = route.canary_splitter(stored[0])
        return route, splitter.assign(key)
    if gateway.policy.passthrough is not None:
        return None, Assignment(PASSTHROUGH_VARIANT, -1, False)
    # only the routes this caller may use: a key limited to some learns nothing of the others
    known = ", ".join(sorted(name for name in gateway.routes if caller is None or caller.may_use(name))) or "none"
    raise RouteNotFound(f"no route named '{model}'; the routes you may use are: {known} (GET /v1/models lists "
                        "them)", param="model")


def _new_record(gateway: Gateway, request_id: str, attempt: int, reason: str, endpoint: str, route_name: str,
                variant: str, body: dict[str, Any], meta: RequestMeta, assignment: Assignment,
                route: CompiledRoute | None, started_at: float) -> Record:
    policy = gateway.policy
    if route is None:
        provider, model, capture = policy.passthrough.provider, body["model"], policy.passthrough.capture
    else:
        pinned = policy.models[variant]
        provider, model, capture = pinned.provider, pinned.model, route.capture
    return Record(
        id=new_id("att_"), request_id=request_id, attempt=attempt, attempt_reason=reason, endpoint=endpoint,
        route=route_name, variant=variant, provider=provider, model_requested=model, started_at=started_at,
        experiment=route.splitter.experiment if route is not None else None, correlation_id=meta.correlation_id,
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


def _remaining(deadline: float | None, record: Record) -> float | None:
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


def _retry_delay(gateway: Gateway, provider: str, exc: UpstreamError, done: int,
                 deadline: float | None) -> float | None:
    """Seconds to wait before retrying the same upstream, or None: not safe, no retries left, or
    the wait would pass the route's deadline."""
    config = gateway.policy.providers[provider].retry
    if done >= config.max_retries or not safe_to_retry(exc):
        return None
    delay = retry_delay(exc, done, base_s=config.base_delay_ms / 1000, max_s=config.max_delay_ms / 1000)
    if deadline is not None and time.perf_counter() + delay >= deadline:
        return None
    return delay


def _worth_another_try(exc: UpstreamError) -> bool:
    retryable = getattr(exc, "retryable", None)
    return True if retryable is None else bool(retryable)


RETRY_ACTIONS = ("retry_other_variant", "fallback")


def guard_header(failures: list[GuardResult]) -> str:
    """`pass`, or `guard:class` pairs (names hold no commas or spaces)."""
    return ",".join(f"{f.guard}:{f.taxonomy}" for f in failures) if failures else "pass"
_ACTION_RANK = {"flag": 0, "block": 1, "fallback": 2, "retry_other_variant": 3}


def _failure_action(route: CompiledRoute, failure: GuardResult) -> str:
    return route.actions.get(failure.guard) or route.actions.get(failure.severity) or "flag"


def _action(route: CompiledRoute | None, failures: list[GuardResult]) -> str:
    """What to do about an answer: retrying beats blocking beats flagging, while a retry is possible."""
    if not failures or route is None:
        return "pass"
    return max((_failure_action(route, f) for f in failures), key=_ACTION_RANK.__getitem__)


def _blocks(route: CompiledRoute | None, failures: list[GuardResult]) -> bool:
    """No retry left: block if any failure's own action is `block`."""
    return route is not None and any(_failure_action(route, f) == "block" for f in failures)


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
