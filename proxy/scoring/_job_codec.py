"""Jobs as a durable queue carries them: JSON with ids and the sampling decision, never the record.

A record may hold text its route's capture mode keeps out of the store; a queue that copied it would
be a second, unmanaged store. So a `Job` travels as its record's id (and request id, route, weight,
rule), and the worker loads the row the store kept (`StoredJob`). A `LateJob` is a request id and
its feedback. Any other JSON value passes as is (tests, tools).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from proxy.scoring._worker import Job, LateJob, StoredJob

__all__ = ["decode_job", "encode_job"]


def encode_job(payload: Any) -> bytes:
    """A job as the stream holds it: ids and the sampling decision, never the record's text."""
    if isinstance(payload, Job):
        r = payload.record
        doc: dict[str, Any] = {"kind": "job", "record_id": r.id, "request_id": r.request_id, "route": r.route,
                               "weight": payload.weight, "rule": payload.rule, "offered_at": time.time()}
    elif isinstance(payload, StoredJob):
        doc = {"kind": "job", "record_id": payload.record_id, "request_id": payload.request_id,
               "route": payload.route, "weight": payload.weight, "rule": payload.rule,
               "offered_at": payload.offered_at}
    elif isinstance(payload, LateJob):
        doc = {"kind": "late", "request_id": payload.request_id, "feedback": sorted(payload.feedback),
               "offered_at": payload.offered_at}
    else:
        doc = {"kind": "value", "value": payload}  # any JSON value (tests, tools)
    return orjson.dumps(doc)


def decode_job(data: bytes) -> Any:
    doc = orjson.loads(data)
    kind = doc.get("kind")
    if kind == "job":
        return StoredJob(doc["record_id"], doc["request_id"], doc["route"], float(doc["weight"]), doc["rule"],
                         float(doc["offered_at"]))
    if kind == "late":
        return LateJob(doc["request_id"], frozenset(doc["feedback"]), doc.get("offered_at"))
    if kind == "value":
        return doc["value"]
    raise ValueError(f"unknown job kind {kind!r}")
