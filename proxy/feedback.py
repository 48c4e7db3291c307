"""Downstream outcomes: checking what an app reports and turning it into `Outcome` rows.

An app reports whether the user's task got done (or was corrected, escalated, …) for one request
(`request_id`, from the `x-sluicegate-request-id` header) or one whole episode (`episode_id`).
Metrics are declared in the policy's `metrics:`; the metric's `level` says which id it takes.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest
from proxy.records import Outcome, new_id

__all__ = ["RecentIds", "parse_feedback"]

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


def _string(body: Mapping[str, Any], field: str, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidRequest(f"missing required field '{field}'", param=field, code="missing_required_parameter")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"field '{field}' must be a non-empty string", param=field, code="invalid_type")
    return value


def parse_feedback(body: Any, metrics: Mapping[str, Any]) -> Outcome:
    """Validates one feedback object against the declared metrics; raises `InvalidRequest`."""
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
    outcome_id = f"out_{hashlib.sha256(key.encode()).hexdigest()[:32]}" if key else new_id("out_")
    return Outcome(id=outcome_id, metric=name, value=_value(body.get("value"), name, metric.type),
                   level=metric.level, received_at=time.time(), request_id=request_id, episode_id=episode_id,
                   source=_string(body, "source"), note=_string(body, "note"))


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
