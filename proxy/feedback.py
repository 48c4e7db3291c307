"""Downstream outcomes: checking what an app reports and turning it into `Outcome` rows.

An app reports whether the user's task got done (or was corrected, escalated, …) for one request
(`request_id`, from the `x-sluicegate-request-id` header) or one whole episode (`episode_id`).
Metrics are declared in the policy's `metrics:`; the metric's `level` says which id it takes.

Idempotency is scoped to (caller, request or episode, metric): the outcome id is derived from those
and the caller's `idempotency_key`, so two callers, two episodes or two metrics never share an id
(nobody can pre-claim another app's keys). Within one scope the same key with the same content
(value, source, note) is a repeat — answered as the first time, stored once — and with different
content a 409 naming the fields that differ (`FeedbackKeys` remembers recent keys; the API also asks
the store; `proxy.records._conflicts` keeps what only the store's write can see).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import IdempotencyConflict, InvalidRequest
from proxy.records import Outcome, new_id

__all__ = ["FeedbackKeys", "KeyClaim", "RecentIds", "content_digest", "parse_feedback", "repeat_of", "scoped_id",
           "subject_of"]

_FIELDS = {"request_id", "episode_id", "metric", "value", "source", "idempotency_key", "note"}


class RecentIds:
    """The ids of the last N requests and episodes served, so feedback that arrives before the
    records reach the store is still recognised. O(1), bounded."""

    __slots__ = ("_ids", "_capacity")

    # 50,000 ids cover minutes of traffic, far longer than a record takes to reach the store (well under a
    # second, or the spill file's replay); at ~180 bytes an id, 200,000 held ~36 MB (the soak showed it)
    def __init__(self, capacity: int = 50_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, *ids: str | None) -> None:
        for value in ids:
            if value is not None:
                self._ids[value] = None
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def __contains__(self, value: str) -> bool:
        return value in self._ids


@dataclasses.dataclass(frozen=True, slots=True)
class KeyClaim:
    """What an idempotency key was first used for, in its scope: enough to tell a repeat from a conflict
    and to say which field differs (texts as their in-process hash: small to hold, never shown)."""

    value: float
    source: int
    note: int
    verified: bool  # the first answer's `verified`

    @classmethod
    def of(cls, value: float, source: str | None, note: str | None, verified: bool) -> KeyClaim:
        return cls(float(value), hash(source), hash(note), verified)


class FeedbackKeys:
    """Outcome id -> `KeyClaim` of the last N keyed outcomes this process accepted: a repeat or a
    conflict is answered without the store while the first outcome is still in the recorder's buffer
    or spill file. O(1), bounded (~300 bytes an entry)."""

    __slots__ = ("_claims", "_capacity")

    # 20,000 keys cover minutes of keyed feedback; an outcome reaches the store well within a second
    # normally, and from then on the store answers (or, while it is down, the write-time check does)
    def __init__(self, capacity: int = 20_000) -> None:
        self._claims: OrderedDict[str, KeyClaim] = OrderedDict()
        self._capacity = capacity

    def get(self, outcome_id: str) -> KeyClaim | None:
        return self._claims.get(outcome_id)

    def remember(self, outcome_id: str, claim: KeyClaim) -> None:
        self._claims[outcome_id] = claim
        self._claims.move_to_end(outcome_id)
        while len(self._claims) > self._capacity:
            self._claims.popitem(last=False)

    def __len__(self) -> int:
        return len(self._claims)


def scoped_id(caller: str | None, field: str, subject: str, metric: str, key: str) -> str:
    """The outcome id of an idempotency key in its scope (a JSON array hashed: no separator ambiguity)."""
    return f"out_{hashlib.sha256(orjson.dumps([caller, field, subject, metric, key])).hexdigest()[:32]}"


def content_digest(value: float, source: str | None, note: str | None) -> str:
    """What the store compares at write time: the same content under the same id is a repeat."""
    return hashlib.sha256(orjson.dumps([float(value), source, note])).hexdigest()[:32]


def subject_of(outcome: Outcome) -> tuple[str, str]:
    """("request_id" or "episode_id", its value)."""
    if outcome.request_id is not None:
        return "request_id", outcome.request_id
    assert outcome.episode_id is not None
    return "episode_id", outcome.episode_id


def repeat_of(claim: KeyClaim | None, outcome: Outcome) -> bool:
    """True when `outcome` repeats what its key was first used for; False when the key is new here;
    `IdempotencyConflict` (409, `param` = the first field that differs) when the content differs."""
    if claim is None:
        return False
    differ = [name for name, same in (("value", claim.value == outcome.value),
                                      ("source", claim.source == hash(outcome.source)),
                                      ("note", claim.note == hash(outcome.note))) if not same]
    if not differ:
        return True
    field, subject = subject_of(outcome)
    was = f" (first {claim.value:g}, now {outcome.value:g})" if "value" in differ else ""
    key = outcome.idempotency_key or ""
    raise IdempotencyConflict(
        f"idempotency_key {key[:100]!r} was already used for metric '{outcome.metric}' on {field} "
        f"'{subject[:100]}' with a different {' and '.join(differ)}{was}; the first outcome stays. Repeat a key "
        "only to retry the same outcome; send a new key for a new one", param=differ[0])


def _string(body: Mapping[str, Any], field: str, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidRequest(f"missing required field '{field}'", param=field, code="missing_required_parameter")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"field '{field}' must be a non-empty string", param=field, code="invalid_type")
    return value


def parse_feedback(body: Any, metrics: Mapping[str, Any], caller: str | None = None) -> Outcome:
    """Validates one feedback object against the declared metrics; raises `InvalidRequest`.
    `caller`: the name of the caller's key (None on an open gateway), part of the key's scope."""
    if not isinstance(body, dict):
        raise InvalidRequest("feedback must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}",
                             param=unknown[0])
    name = _string(body, "metric", required=True)
    assert name is not None
    metric = metrics.get(name)
    if metric is None:
        declared = ", ".join(sorted(metrics)) or "none — declare them under `metrics:` in the policy"
        raise InvalidRequest(f"unknown metric '{name}'; declared metrics: {declared}", param="metric",
                             code="unknown_metric")
    request_id, episode_id = _string(body, "request_id"), _string(body, "episode_id")
    if metric.level == "inference" and (request_id is None or episode_id is not None):
        raise InvalidRequest(f"metric '{name}' is reported per request: send 'request_id' (the "
                             f"x-sluicegate-request-id header) and no 'episode_id'", param="request_id")
    if metric.level == "episode" and (episode_id is None or request_id is not None):
        raise InvalidRequest(f"metric '{name}' is reported per episode: send 'episode_id' (the "
                             f"x-sluicegate-episode header) and no 'request_id'", param="episode_id")
    key = _string(body, "idempotency_key")
    value, source, note = _value(body.get("value"), name, metric.type), _string(body, "source"), _string(body, "note")
    if key is None:
        outcome_id, digest = new_id("out_"), None
    else:
        field, subject = ("request_id", request_id) if request_id is not None else ("episode_id", episode_id)
        assert subject is not None
        outcome_id, digest = scoped_id(caller, field, subject, name, key), content_digest(value, source, note)
    return Outcome(id=outcome_id, metric=name, value=value, level=metric.level, received_at=time.time(),
                   request_id=request_id, episode_id=episode_id, source=source, note=note, caller=caller,
                   idempotency_key=key, digest=digest)


def _value(value: Any, name: str, kind: str) -> float:
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidRequest(f"metric '{name}' is boolean: 'value' must be true or false", param="value",
                                 code="invalid_type")
        return 1.0 if value else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"metric '{name}' is a number: 'value' must be a number", param="value",
                             code="invalid_type")
    return float(value)
