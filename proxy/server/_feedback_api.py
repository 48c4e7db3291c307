"""`POST /v1/feedback` and `/v1/feedback/batch`: outcomes in, through the never-blocking recorder.

A keyed outcome's scope (caller, subject, metric) is checked against the keys this process saw recently
(`FeedbackKeys`), then the store (one primary-key look-up): a repeat is answered as the first time
(`idempotent_replay: true`, header `idempotent-replayed: true`), different content is a 409. What only
the store's write can see is kept aside there (proxy.records._conflicts)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, RouteNotFound, SluicegateError, error_response
from proxy.feedback import KeyClaim, parse_feedback, repeat_of, subject_of
from proxy.logs import get_logger
from proxy.records import Outcome
from proxy.records._store import LOOKUP_LANE
from proxy.server._request import read_json_body
from proxy.server._state import Gateway

__all__ = ["feedback", "feedback_batch"]

log = get_logger("sluicegate.feedback")

REPLAY_HEADER = "idempotent-replayed"  # as Stripe's API says it: this answer repeats the first one

# point look-ups, on the store's look-up lane: never queued behind a report
_EXISTS = {
    "request_id": "SELECT 1 FROM records WHERE request_id = ? LIMIT 1",
    "episode_id": "SELECT 1 FROM records WHERE episode_id = ? LIMIT 1",
}
_CLAIMED = "SELECT value, source, data FROM outcomes WHERE id = ?"


class UnknownSubject(RouteNotFound):
    code = "not_found"


async def _known(gateway: Gateway, field: str, value: str) -> bool | None:
    """True or False; None when the store cannot say right now (then the outcome is kept anyway)."""
    if value in gateway.recent:
        return True
    try:
        return bool(await gateway.store.fetch(_EXISTS[field], (value,), lane=LOOKUP_LANE))
    except Exception as exc:  # the store is down: accept, the report joins later
        log.warning("feedback_unverified", field=field, error=str(exc))
        return None


async def _stored_claim(gateway: Gateway, outcome_id: str) -> KeyClaim | None:
    """What the store holds under a keyed outcome's id (written by another process, or before a restart);
    None when nothing, or when the store cannot say now (the write-time check then decides)."""
    try:
        rows = await gateway.store.fetch(_CLAIMED, (outcome_id,), lane=LOOKUP_LANE)
    except Exception as exc:  # noqa: BLE001 - the store is down: proxy.records._conflicts catches it at write time
        log.warning("feedback_key_unchecked", outcome_id=outcome_id, error=str(exc))
        return None
    if not rows:
        return None
    value, source, data = rows[0]
    note = (orjson.loads(data) if isinstance(data, (str, bytes)) else data or {}).get("note")
    return KeyClaim.of(value, source, note, verified=True)


def _answer(outcome: Outcome, verified: bool, replay: bool) -> dict[str, Any]:
    field, value = subject_of(outcome)
    return {"object": "feedback", "id": outcome.id, "metric": outcome.metric, field: value, "status": "accepted",
            "verified": verified, "idempotent_replay": replay}


async def _accept(gateway: Gateway, body: Any, caller: str | None) -> dict[str, Any]:
    """Validate, check the key's scope, hand the outcome to the recorder; the answer (or a 4xx raised)."""
    outcome: Outcome = parse_feedback(body, gateway.policy.metrics, caller)
    keys, keyed = gateway.feedback_keys, outcome.digest is not None
    if keyed and repeat_of(claim := keys.get(outcome.id), outcome):  # a retry while the first is recent
        assert claim is not None
        return _answer(outcome, claim.verified, replay=True)
    field, value = subject_of(outcome)
    known = await _known(gateway, field, value)
    if known is False:
        raise UnknownSubject(f"no request or episode with {field} '{value}' was served by this gateway",
                             param=field)
    if keyed:
        stored = await _stored_claim(gateway, outcome.id)
        # from here to submit(): no await, so two concurrent uses of one key cannot both pass
        claim = keys.get(outcome.id) or stored
        if repeat_of(claim, outcome):
            assert claim is not None
            keys.remember(outcome.id, claim)
            return _answer(outcome, claim.verified, replay=True)
        keys.remember(outcome.id, KeyClaim.of(outcome.value, outcome.source, outcome.note, known is True))
    gateway.recorder.submit(outcome)
    if gateway.scoring is not None:  # a negative outcome may make the request worth scoring now
        gateway.scoring.offer_feedback(outcome, gateway.policy.metrics.get(outcome.metric))
    return _answer(outcome, known is True, replay=False)


def _caller_name(gateway: Gateway, request: Request) -> str | None:
    caller = gateway.auth.caller(request.headers)  # any caller of this gateway may report outcomes
    return caller.name if caller is not None else None


async def feedback(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        caller = _caller_name(gateway, request)
        _, body = await read_json_body(request, gateway.max_body_bytes)
        result = await _accept(gateway, body, caller)
    except SluicegateError as exc:
        return error_response(exc)
    headers = {REPLAY_HEADER: "true"} if result["idempotent_replay"] else None
    return Response(orjson.dumps(result), status_code=202, media_type="application/json", headers=headers)


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
        caller = _caller_name(gateway, request)
        raw = await request.body()
        if len(raw) > gateway.max_body_bytes:
            raise InvalidRequest(f"batch is over the limit of {gateway.max_body_bytes} bytes")
        items = _batch_items(raw)
    except SluicegateError as exc:
        return error_response(exc)
    accepted, errors = [], []
    for index, item in enumerate(items):
        try:
            accepted.append(await _accept(gateway, item, caller))
        except SluicegateError as exc:
            errors.append({"index": index, "status": exc.status, "error": orjson.loads(exc.body())["error"]})
    status = 202 if accepted or not items else 400
    body = {"object": "feedback.batch", "accepted": len(accepted), "rejected": len(errors),
            "replayed": sum(1 for item in accepted if item["idempotent_replay"]), "errors": errors,
            "ids": [item["id"] for item in accepted]}
    if status == 400:  # nothing accepted: also an error in OpenAI's shape, naming the first problem
        first = errors[0]["error"]
        body["error"] = {**first, "message": f"every item of the batch was rejected; item 0: {first['message']}"}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
