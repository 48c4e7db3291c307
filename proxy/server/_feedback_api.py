"""`POST /v1/feedback` and `/v1/feedback/batch`: outcomes in, through the never-blocking recorder."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, RouteNotFound, SluicegateError, error_response
from proxy.feedback import parse_feedback
from proxy.logs import get_logger
from proxy.records import Outcome
from proxy.server._request import read_json_body
from proxy.server._state import Gateway

__all__ = ["feedback", "feedback_batch"]

log = get_logger("sluicegate.feedback")

_EXISTS = {
    "request_id": "SELECT 1 FROM records WHERE request_id = ? LIMIT 1",
    "episode_id": "SELECT 1 FROM records WHERE episode_id = ? LIMIT 1",
}


class UnknownSubject(RouteNotFound):
    code = "not_found"


async def _known(gateway: Gateway, field: str, value: str) -> bool | None:
    """True or False; None when the store cannot say right now (then the outcome is kept anyway)."""
    if value in gateway.recent:
        return True
    try:
        return bool(await gateway.store.fetch(_EXISTS[field], (value,)))
    except Exception as exc:  # the store is down: accept, the report joins later
        log.warning("feedback_unverified", field=field, error=str(exc))
        return None


async def _accept(gateway: Gateway, body: Any) -> dict[str, Any]:
    outcome: Outcome = parse_feedback(body, gateway.policy.metrics)
    field = "request_id" if outcome.request_id is not None else "episode_id"
    value = outcome.request_id or outcome.episode_id
    assert value is not None
    known = await _known(gateway, field, value)
    if known is False:
        raise UnknownSubject(f"no request or episode with {field} '{value}' was served by this gateway",
                             param=field)
    gateway.recorder.submit(outcome)
    if gateway.scoring is not None:  # a negative outcome may make the request worth scoring now
        gateway.scoring.offer_feedback(outcome, gateway.policy.metrics.get(outcome.metric))
    return {"object": "feedback", "id": outcome.id, "metric": outcome.metric, field: value,
            "status": "accepted", "verified": known is True}


async def feedback(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        gateway.auth.caller(request.headers)  # any caller of this gateway may report outcomes
        _, body = await read_json_body(request, gateway.max_body_bytes)
        result = await _accept(gateway, body)
    except SluicegateError as exc:
        return error_response(exc)
    return Response(orjson.dumps(result), status_code=202, media_type="application/json")


def _batch_items(raw: bytes) -> list[Any]:
    """A JSON array, or JSON lines (one object per line)."""
    text = raw.strip()
    if not text:
        raise InvalidRequest("request body is empty; send a JSON array or JSON lines")
    try:
        if text.startswith(b"["):
            items = orjson.loads(text)
        else:
            items = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"batch is neither a JSON array nor JSON lines: {exc}") from None
    return items


async def feedback_batch(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        gateway.auth.caller(request.headers)
        raw = await request.body()
        if len(raw) > gateway.max_body_bytes:
            raise InvalidRequest(f"batch is over the limit of {gateway.max_body_bytes} bytes")
        items = _batch_items(raw)
    except SluicegateError as exc:
        return error_response(exc)
    accepted, errors = [], []
    for index, item in enumerate(items):
        try:
            accepted.append(await _accept(gateway, item))
        except SluicegateError as exc:
            errors.append({"index": index, "status": exc.status, "error": orjson.loads(exc.body())["error"]})
    status = 202 if accepted or not items else 400
    body = {"object": "feedback.batch", "accepted": len(accepted), "rejected": len(errors), "errors": errors,
            "ids": [item["id"] for item in accepted]}
    if status == 400:  # nothing accepted: also an error in OpenAI's shape, naming the first problem
        first = errors[0]["error"]
        body["error"] = {**first, "message": f"every item of the batch was rejected; item 0: {first['message']}"}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
