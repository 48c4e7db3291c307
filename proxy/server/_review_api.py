"""The human review queue: `GET /v1/review/next`, `POST /v1/review/{id}`, `POST /v1/review`.

Entries live in the store's `reviews` table (one per record and human scorer; the background
scorer puts them there by `rate` or by an `also` trigger, `POST /v1/review` by hand). An entry is
pending until a `human` score with the same id (`{record_id}:{scorer}`) exists; a label is that
score, written through the recorder like every other row, so labelling again replaces it.

What a reviewer sees is the record as stored: the route's capture mode was applied before it
reached the store, so the queue never shows more than the store keeps (and never a key).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.config._errors import suggest
from proxy.errors import InvalidRequest, RouteNotFound, ServiceUnavailable, SluicegateError, error_response
from proxy.guards import TAXONOMY_TABLE
from proxy.logs import get_logger
from proxy.scoring._score import Score, answer_text
from proxy.scoring._worker import score_row
from proxy.server._gateway import effective_taxonomy
from proxy.server._request import read_json_body
from proxy.server._state import Gateway

__all__ = ["DEFAULT_LABELS", "PENDING_HEADER", "add_review", "label_review", "next_review", "next_item"]

log = get_logger("sluicegate.review")

DEFAULT_LABELS = ("pass", "fail")  # a scorer no longer in the policy keeps the HumanScorer default
PENDING_HEADER = "x-sluicegate-review-pending"
MAX_NOTE_CHARS = 10_000
MAX_REVIEWER_CHARS = 200

_ENTRY_COLUMNS = ("id", "record_id", "request_id", "route", "variant", "scorer", "reason", "entered_at")
_PENDING = "NOT EXISTS (SELECT 1 FROM scores s WHERE s.id = r.id AND s.kind = 'human')"
# the record fields a reviewer sees (the stored row is capture-applied; nothing else is shown)
_RECORD_FIELDS = ("id", "request_id", "attempt", "attempt_reason", "served", "endpoint", "route", "variant",
                  "provider", "model_requested", "model_served", "capture", "started_at", "latency_ms", "status",
                  "outcome", "finish_reason", "error", "episode_id", "tags", "template_ref", "retrieval_ids",
                  "usage", "params")


# --------------------------------------------------------------------------- helpers


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=dict(headers or {}))


def _not_found(message: str, param: str) -> RouteNotFound:
    return RouteNotFound(message, param=param, code="not_found")


async def _fetch(gateway: Gateway, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    try:
        return await gateway.store.fetch(sql, params)
    except Exception as exc:  # the store is down: say so, never a 500
        log.warning("review_store_unavailable", error=str(exc)[:300])
        raise ServiceUnavailable("the record store cannot be read right now; try again shortly") from None


def _human_scorers(policy: Any) -> dict[str, Any]:
    return {name: config for name, config in policy.scorers.items() if config.kind == "human"}


def scorer_labels(policy: Any, scorer: str) -> list[str]:
    config = _human_scorers(policy).get(scorer)
    return list(config.labels) if config is not None else list(DEFAULT_LABELS)


def taxonomy_classes(policy: Any) -> list[dict[str, Any]]:
    """The classes a label may name: built-in and the policy's, with severity and description."""
    out = []
    for name, severity in effective_taxonomy(policy).items():
        entry = policy.taxonomy.get(name)
        description = entry.description if entry is not None and entry.description else None
        if description is None and name in TAXONOMY_TABLE:
            description = TAXONOMY_TABLE[name][1]
        out.append({"name": name, "severity": severity, "description": description})
    return out


def _known_list(names: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _unknown(what: str, value: str, known: Sequence[str]) -> str:
    close = suggest(value, known)
    hint = f"; did you mean '{close}'?" if close else ""
    return f"unknown {what} '{value}'{hint} (known: {_known_list(list(known)) or 'none'})"


def _check_scorer(policy: Any, scorer: str, param: str = "scorer") -> None:
    humans = _human_scorers(policy)
    if scorer in humans:
        return
    if not humans:
        raise InvalidRequest("the policy has no human scorer; add one under `scorers:` "
                             "(e.g. review: {kind: human, rate: 0.02})", param=param)
    if scorer in policy.scorers:
        raise InvalidRequest(f"scorer '{scorer}' is a {policy.scorers[scorer].kind} scorer, not a human one; "
                             f"human scorers: {', '.join(humans)}", param=param)
    raise InvalidRequest(_unknown("human scorer", scorer, list(humans)), param=param)


def _string(body: Mapping[str, Any], field: str, *, required: bool = False, max_chars: int | None = None,
            hint: str = "") -> str | None:
    value = body.get(field)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"missing required field '{field}'{hint}", param=field,
                                 code="missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"field '{field}' must be a string", param=field, code="invalid_type")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidRequest(f"field '{field}' is {len(value)} characters; the limit is {max_chars}",
                             param=field, code="invalid_value")
    return value


def _only(body: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for field in body:
        if field not in allowed:
            raise InvalidRequest(f"unknown field '{field}'; allowed fields: {', '.join(allowed)}", param=field,
                                 code="unknown_parameter")


# --------------------------------------------------------------------------- what a reviewer sees


def _text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type"):
                    parts.append(f"[{part['type']}]")  # an image or audio part: named, not shown
        return "\n".join(parts)
    return orjson.dumps(content).decode()


def _calls(calls: Any) -> list[dict[str, Any]]:
    """Tool calls (or a legacy function call) as name + arguments text."""
    if isinstance(calls, Mapping):
        calls = [calls]
    out = []
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, Mapping):
            continue
        fn = call.get("function", call)
        fn = fn if isinstance(fn, Mapping) else {}
        arguments = fn.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        out.append({"id": call.get("id"), "name": fn.get("name"), "arguments": arguments})
    return out


def _messages(request: Any) -> list[dict[str, Any]]:
    """The request's conversation, one entry per message, ready to display."""
    if not isinstance(request, Mapping):
        return []
    messages = request.get("messages")
    if isinstance(messages, list):
        out = []
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            entry: dict[str, Any] = {"role": message.get("role"), "text": _text(message.get("content"))}
            if message.get("name"):
                entry["name"] = message["name"]
            if message.get("tool_call_id"):
                entry["tool_call_id"] = message["tool_call_id"]
            calls = _calls(message.get("tool_calls") or message.get("function_call"))
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
        return out
    for field in ("prompt", "input"):  # completions / embeddings
        value = request.get(field)
        if isinstance(value, str):
            return [{"role": field, "text": value}]
        if isinstance(value, list):
            return [{"role": field, "text": v if isinstance(v, str) else orjson.dumps(v).decode()} for v in value]
    return []


def _answer(row: Mapping[str, Any]) -> dict[str, Any]:
    """The first choice of the captured answer: its text, tool calls, refusal, finish reason."""
    response = row.get("response")
    choice: Mapping[str, Any] = {}
    if isinstance(response, Mapping) and isinstance(response.get("choices"), list) and response["choices"]:
        first = response["choices"][0]
        choice = first if isinstance(first, Mapping) else {}
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else None
    if message is not None:
        text = _text(message.get("content"))
        calls = _calls(message.get("tool_calls") or message.get("function_call"))
        refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else None
    else:
        text = choice.get("text") if isinstance(choice.get("text"), str) else None
        calls, refusal = [], None
    if not calls and row.get("tool_calls") and row.get("capture") != "refs_only":
        calls = _calls(row.get("tool_calls"))
    return {"text": text, "tool_calls": calls, "refusal": refusal,
            "finish_reason": choice.get("finish_reason", row.get("finish_reason")),
            "summary": answer_text(response) if isinstance(response, Mapping) else ""}


def record_view(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A stored record as the review page shows it; None when the record is not in the store."""
    if row is None:
        return None
    view = {field: row.get(field) for field in _RECORD_FIELDS}
    refs_only = row.get("capture") == "refs_only"
    view["text_captured"] = not refs_only
    view["messages"] = [] if refs_only else _messages(row.get("request"))
    view["answer"] = _answer(row) if not refs_only else {"text": None, "tool_calls": [], "refusal": None,
                                                          "finish_reason": row.get("finish_reason"), "summary": ""}
    view["request"] = row.get("request")  # as captured (a summary of counts and hashes under refs_only)
    guards = row.get("guards")
    view["guards"] = [g for g in guards if isinstance(g, Mapping)] if isinstance(guards, list) else []
    return view


async def _record(gateway: Gateway, record_id: str) -> dict[str, Any] | None:
    rows = await _fetch(gateway, "SELECT data FROM records WHERE id = ?", (record_id,))
    return orjson.loads(rows[0][0]) if rows else None


async def _scores(gateway: Gateway, record_id: str, exclude: str | None = None) -> list[dict[str, Any]]:
    rows = await _fetch(gateway, "SELECT id, scorer, kind, label, score, taxonomy, confidence, created_at, data "
                                 "FROM scores WHERE record_id = ? ORDER BY created_at, id", (record_id,))
    out = []
    for id_, scorer, kind, label, score, taxonomy, confidence, created_at, data in rows:
        if id_ == exclude:
            continue
        extra = orjson.loads(data) if data else {}
        out.append({"scorer": scorer, "kind": kind, "label": label, "score": score, "taxonomy": taxonomy,
                    "confidence": confidence, "reason": extra.get("reason"), "error": extra.get("error"),
                    "reviewer": extra.get("reviewer"), "created_at": created_at})
    return out


def _entry(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(_ENTRY_COLUMNS, row))


async def _entry_by_id(gateway: Gateway, entry_id: str) -> dict[str, Any] | None:
    rows = await _fetch(gateway, f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM reviews WHERE id = ?", (entry_id,))
    return _entry(rows[0]) if rows else None


async def _human_label(gateway: Gateway, entry_id: str) -> dict[str, Any] | None:
    rows = await _fetch(gateway, "SELECT label, taxonomy, created_at, data FROM scores WHERE id = ? AND kind = 'human'",
                        (entry_id,))
    if not rows:
        return None
    label, taxonomy, created_at, data = rows[0]
    extra = orjson.loads(data) if data else {}
    return {"label": label, "taxonomy": taxonomy, "note": extra.get("reason"), "reviewer": extra.get("reviewer"),
            "created_at": created_at}


# --------------------------------------------------------------------------- GET /v1/review/next


async def next_item(gateway: Gateway, *, scorer: str | None = None, route: str | None = None,
                    after: str | None = None) -> tuple[dict[str, Any] | None, int]:
    """(the oldest pending entry matching the filters, with everything a reviewer needs, or None;
    how many entries are pending under the filters). `after`: an entry id; only entries queued
    after it count for the item (a skip), not for the pending count."""
    policy = gateway.policy
    if scorer is not None:
        _check_scorer(policy, scorer)
    if route is not None and route not in policy.routes:
        raise InvalidRequest(_unknown("route", route, list(policy.routes)), param="route")
    where, params = [_PENDING], []
    if scorer is not None:
        where.append("r.scorer = ?")
        params.append(scorer)
    if route is not None:
        where.append("r.route = ?")
        params.append(route)
    (pending,), = await _fetch(gateway, f"SELECT count(*) FROM reviews r WHERE {' AND '.join(where)}", params)
    if after is not None:
        cursor = await _entry_by_id(gateway, after)
        if cursor is None:
            raise InvalidRequest(f"'after' names no review entry ('{after}'); send the id of the entry you skipped",
                                 param="after")
        where.append("(r.entered_at > ? OR (r.entered_at = ? AND r.id > ?))")
        params += [cursor["entered_at"], cursor["entered_at"], cursor["id"]]
    rows = await _fetch(gateway, f"SELECT {', '.join('r.' + c for c in _ENTRY_COLUMNS)} FROM reviews r "
                                 f"WHERE {' AND '.join(where)} ORDER BY r.entered_at, r.id LIMIT 1", params)
    if not rows:
        return None, pending
    entry = _entry(rows[0])
    row = await _record(gateway, entry["record_id"])
    item = {"object": "review.item", **entry, "pending": pending,
            "labels": scorer_labels(policy, entry["scorer"]), "taxonomy": taxonomy_classes(policy),
            "record": record_view(row), "scores": await _scores(gateway, entry["record_id"], exclude=entry["id"])}
    return item, pending


async def next_review(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    query = request.query_params
    try:
        unknown = sorted(set(query) - {"scorer", "route", "after"})
        if unknown:
            raise InvalidRequest(f"unknown query parameter '{unknown[0]}'; allowed: scorer, route, after",
                                 param=unknown[0], code="unknown_parameter")
        item, pending = await next_item(gateway, scorer=query.get("scorer") or None, route=query.get("route") or None,
                                        after=query.get("after") or None)
    except SluicegateError as exc:
        return error_response(exc)
    headers = {PENDING_HEADER: str(pending), "cache-control": "no-store"}
    if item is None:
        return Response(status_code=204, headers=headers)
    return _json(item, headers=headers)


# --------------------------------------------------------------------------- POST /v1/review/{id}

_LABEL_FIELDS = ("label", "taxonomy", "note", "reviewer")


async def label_review(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    entry_id = request.path_params["id"]
    try:
        _, body = await read_json_body(request, gateway.max_body_bytes)
        entry = await _entry_by_id(gateway, entry_id)
        if entry is None:
            raise _not_found(f"no review entry '{entry_id}'; ids look like '<record_id>:<scorer>' "
                             "(GET /v1/review/next gives the next one)", "id")
        _only(body, _LABEL_FIELDS)
        labels = scorer_labels(gateway.policy, entry["scorer"])
        label = _string(body, "label", required=True, hint=f"; one of: {', '.join(labels)}")
        if label not in labels:
            raise InvalidRequest(f"label '{label}' is not one of scorer '{entry['scorer']}''s labels; "
                                 f"send one of: {', '.join(labels)}", param="label", code="invalid_value")
        taxonomy = _string(body, "taxonomy")
        known = effective_taxonomy(gateway.policy)
        if taxonomy is not None and taxonomy not in known:
            raise InvalidRequest(_unknown("taxonomy class", taxonomy, list(known)) +
                                 "; add new classes under `taxonomy:` in the policy", param="taxonomy",
                                 code="invalid_value")
        note = _string(body, "note", max_chars=MAX_NOTE_CHARS)
        reviewer = _string(body, "reviewer", required=True, max_chars=MAX_REVIEWER_CHARS,
                           hint=" (who labels: a name or handle)")
        previous = await _human_label(gateway, entry_id)
    except SluicegateError as exc:
        return error_response(exc)
    assert label is not None
    value = 1.0 if label == "pass" else 0.0 if label == "fail" else None  # as the rule scorers score
    score = Score(record_id=entry["record_id"], request_id=entry["request_id"], scorer=entry["scorer"], kind="human",
                  label=label, score=value, taxonomy=taxonomy, reason=note, weight=1.0)
    gateway.recorder.submit({**score_row(score), "reviewer": reviewer, "review_reason": entry["reason"]})
    await gateway.recorder.flush()
    stored = await _human_label(gateway, entry_id)
    log.info("review_labelled", id=entry_id, scorer=entry["scorer"], label=label, relabel=previous is not None,
             stored=stored is not None)
    body_out = {"object": "review.label", "id": entry_id, "record_id": entry["record_id"],
                "request_id": entry["request_id"], "scorer": entry["scorer"], "label": label, "taxonomy": taxonomy,
                "note": note, "reviewer": reviewer, "created_at": score.created_at,
                # "stored": in the store now; "accepted": spilled while the store is down, written on recovery
                "status": "stored" if stored is not None else "accepted",
                "replaced": previous}
    return _json(body_out)


# --------------------------------------------------------------------------- POST /v1/review

_ADD_FIELDS = ("record_id", "request_id", "scorer", "note")
_FIND_RECORD = "SELECT id, request_id, route, variant FROM records WHERE id = ?"
# the attempt whose answer the client got; else (all blocked or failed) the last non-shadow attempt
_FIND_REQUEST = ("SELECT id, request_id, route, variant FROM records WHERE request_id = ? "
                 "AND (attempt_reason IS NULL OR attempt_reason <> 'shadow') "
                 "ORDER BY served DESC, attempt DESC LIMIT 1")


async def _find(gateway: Gateway, field: str, value: str) -> tuple[Any, ...] | None:
    sql = _FIND_RECORD if field == "record_id" else _FIND_REQUEST
    rows = await _fetch(gateway, sql, (value,))
    if not rows:  # served a moment ago: its record may still be in the recorder's buffer
        await gateway.recorder.flush()
        rows = await _fetch(gateway, sql, (value,))
    return rows[0] if rows else None


async def add_review(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    try:
        _, body = await read_json_body(request, gateway.max_body_bytes)
        _only(body, _ADD_FIELDS)
        record_id = _string(body, "record_id")
        request_id = _string(body, "request_id")
        if (record_id is None) == (request_id is None):
            raise InvalidRequest("send exactly one of 'record_id' (one attempt) or 'request_id' (the answer the "
                                 "client got; the x-sluicegate-request-id header)", param="record_id")
        humans = list(_human_scorers(gateway.policy))
        scorer = _string(body, "scorer", required=len(humans) != 1,
                         hint=f"; a human scorer of the policy: {', '.join(humans) or 'none defined'}")
        scorer = scorer if scorer is not None else humans[0]
        _check_scorer(gateway.policy, scorer)
        note = _string(body, "note", max_chars=MAX_NOTE_CHARS)
        field, value = ("record_id", record_id) if record_id is not None else ("request_id", request_id)
        assert value is not None
        found = await _find(gateway, field, value)
        if found is None:
            what = "record" if field == "record_id" else "request"
            raise _not_found(f"no {what} with {field} '{value}' is in the store", field)
        entry_id = f"{found[0]}:{scorer}"
        existing = await _entry_by_id(gateway, entry_id)
    except SluicegateError as exc:
        return error_response(exc)
    if existing is not None:  # already queued (by rate, a trigger or by hand): one entry per record and scorer
        labelled = await _human_label(gateway, entry_id)
        return _json({"object": "review.entry", **existing, "status": "already_queued",
                      "pending": labelled is None, "label": labelled})
    row = {"row": "review", "id": entry_id, "record_id": found[0], "request_id": found[1], "route": found[2],
           "variant": found[3], "scorer": scorer, "reason": "manual", "entered_at": time.time(), "note": note}
    gateway.recorder.submit(row)
    await gateway.recorder.flush()
    log.info("review_added", id=entry_id, scorer=scorer)
    out = {key: row[key] for key in _ENTRY_COLUMNS}
    return _json({"object": "review.entry", **out, "note": note, "status": "queued", "pending": True}, status=201)
