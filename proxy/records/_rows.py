"""Rows as the stores take them, for every backend: which columns are copied out of a record (for
filters, indexes and reports; the whole row is in `data`), and the other kinds of rows (outcomes,
scores, reviews, cursors, canary state and decisions, cache entries) that travel the same write path
(recorder, spill file, one transaction per batch), told apart by a marker: `kind: outcome` (an
Outcome's own field) or `row: <kind>`. Each backend turns `SIDE_TABLES` into its own SQL.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from proxy.records._capture import request_hash
from proxy.records._model import Outcome, Record
from proxy.records._seal import encode_row

__all__ = ["INDEXED_COLUMNS", "REPORT_COLUMNS", "SIDE_TABLES", "V3_REPORT_COLUMNS", "SideTable", "row_params",
           "scalar", "side_params", "side_row"]

# Columns copied out of the row (for filtering and indexes); the whole row is in `data`.
INDEXED_COLUMNS = (
    "request_id", "attempt", "served", "started_at", "route", "variant", "experiment",
    "episode_id", "correlation_id", "user_id", "provider", "model_requested", "model_served",
    "status", "outcome", "request_hash",
)

# Columns (schema v3) holding what the reports aggregate, so a report never parses `data`. They are
# declared without a type (no affinity): a value is stored exactly as it came (int stays int, float
# stays float), as json_extract would return it. `guard_failures` counts the failed guards (passed
# missing, null, false or 0); `failed_guards` is NULL or a compact JSON array of [taxonomy, severity]
# per failed guard (only ~a few % of rows have one).
V3_REPORT_COLUMNS = (
    "attempt_reason", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cost_usd",
    "system_fingerprint", "guard_failures", "failed_guards",
)
REPORT_COLUMNS = (*V3_REPORT_COLUMNS, "cache_hit",  # v7: cache hits stay out of latency and cost figures
                  "bucket", "policy_version")  # v9: the unit of randomization (sticky or not) and the policy in force



@dataclasses.dataclass(frozen=True, slots=True)
class SideTable:
    """Where one kind of row goes. `replace`: a row with the same key replaces the stored one (a
    re-delivered score, a human relabel, a cursor, a current state); else the first one stays.
    `with_data`: the whole row is kept as JSON in `data` after the named columns."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    replace: bool = False
    with_data: bool = False

    @property
    def all_columns(self) -> tuple[str, ...]:
        return (*self.columns, "data") if self.with_data else self.columns


SIDE_TABLES: dict[str, SideTable] = {
    "outcome": SideTable("outcomes", ("id", "metric", "value", "level", "received_at", "request_id", "episode_id",
                                      "source", "digest"), ("id",), with_data=True),  # digest: schema v8
    "score": SideTable("scores", ("id", "record_id", "request_id", "scorer", "kind", "label", "score", "taxonomy",
                                  "confidence", "weight", "cost_usd", "created_at"), ("id",), replace=True,
                       with_data=True),
    "review": SideTable("reviews", ("id", "record_id", "request_id", "route", "variant", "scorer", "reason",
                                    "entered_at", "note"), ("id",)),
    "cursor": SideTable("scoring_cursors", ("id", "value", "updated_at"), ("id",), replace=True),
    "canary_state": SideTable("canary_state", ("route", "stage", "status", "updated_at", "reason",  # v10: the run
                                               "run_id", "run_started_at", "stage_started_at", "fingerprint"),
                              ("route",), replace=True),
    "canary_decision": SideTable("canary_decisions", ("id", "route", "at", "action", "from_stage", "to_stage",
                                                      "rule", "reason", "figures", "actor", "run_id"), ("id",)),
    "cache": SideTable("response_cache", ("key", "route", "variant", "model", "created_at", "expires_at", "answer"),
                       ("key",), replace=True),
}


def side_params(kind: str, row: Mapping[str, Any]) -> list[Any]:
    """The row's values for its table's `all_columns`: dicts and lists as JSON text, except with
    `data`, where the named columns are as given and the whole row follows as JSON."""
    spec = SIDE_TABLES[kind]
    if spec.with_data:
        return [*(row.get(key) for key in spec.columns), orjson.dumps(row).decode()]
    return [scalar(row.get(key)) for key in spec.columns]


def side_row(row: Any) -> tuple[str, Mapping[str, Any]] | None:
    """(kind, the row as a mapping) for a row that is not a record; None for a record."""
    if isinstance(row, Record):
        return None
    if isinstance(row, Outcome):
        return "outcome", dataclasses.asdict(row)
    if isinstance(row, Mapping):
        kind = "outcome" if row.get("kind") == "outcome" else row.get("row")
        if kind is None:
            return None
        if kind not in SIDE_TABLES:
            raise ValueError(f"unknown row kind {kind!r}")
        return kind, row
    if type(row).__name__ == "Score":  # proxy.scoring.Score (scoring imports records, not the reverse)
        return "score", {**row.to_dict(), "row": "score"}
    return None


_ROW_KEYS = ("id", *INDEXED_COLUMNS)
_RECORD_COLUMNS = operator.attrgetter(*_ROW_KEYS)
_SERVED = _ROW_KEYS.index("served")
_PLAIN_REPORT_KEYS = ("attempt_reason", "latency_ms", "ttft_ms", "cost_usd", "system_fingerprint", "cache_hit",
                      "bucket", "policy_version")
_RECORD_REPORT = operator.attrgetter(*_PLAIN_REPORT_KEYS, "usage", "guards")


def scalar(value: Any) -> Any:
    """A value as json_extract returns it: scalars as they are, objects and arrays as JSON text."""
    if isinstance(value, (dict, list, tuple)):
        return orjson.dumps(value).decode()
    return value


def _report_values(plain: Sequence[Any], usage: Any, guards: Any) -> list[Any]:
    """REPORT_COLUMNS of one row (same values as the v3 migration's json_extract back-fill)."""
    reason, latency, ttft, cost, fingerprint, cache_hit, bucket, version = (scalar(v) for v in plain)
    prompt = completion = None
    if isinstance(usage, Mapping):
        prompt, completion = scalar(usage.get("prompt_tokens")), scalar(usage.get("completion_tokens"))
    if cache_hit:  # an answer from the output cache took no upstream time and cost nothing: keep it
        latency = ttft = prompt = completion = cost = None  # out of the latency, token and cost figures
    values = [reason, latency, ttft, prompt, completion, cost, fingerprint]
    failed = None
    if guards:
        if isinstance(guards, Mapping):
            guards = list(guards.values())
        elif not isinstance(guards, (list, tuple)):
            guards = [guards]
        for g in guards:
            passed = g.get("passed") if isinstance(g, Mapping) else None
            if passed is None or (passed == 0 and not isinstance(passed, str)):
                if failed is None:
                    failed = []
                if isinstance(g, Mapping):
                    failed.append([scalar(g.get("taxonomy")), scalar(g.get("severity"))])
                else:
                    failed.append([None, None])
    values.append(len(failed) if failed else 0)
    values.append(orjson.dumps(failed).decode() if failed else None)
    values.append(1 if cache_hit else 0)
    values += [bucket, version]
    return values


def row_params(row: Mapping[str, Any] | Record) -> list[Any]:
    """The INSERT parameters of one row: id, the indexed columns, the report columns, the row as JSON.

    A `Record` is encoded directly (orjson serialises dataclasses natively; measured ~2x cheaper
    than building its dict first), so the recorder can hand records over unconverted.
    """
    if isinstance(row, Record):
        if row.request_hash is None and row.request is not None:
            row.request_hash = request_hash(row.request)  # before the columns are taken (seal would be too late)
        values = list(_RECORD_COLUMNS(row))
        *plain, usage, guards = _RECORD_REPORT(row)
        report = _report_values(plain, usage, guards)
    elif isinstance(row, Mapping):
        if not isinstance(row, dict):
            row = dict(row)
        get = row.get
        values = [get(key) for key in _ROW_KEYS]
        report = _report_values([get(key) for key in _PLAIN_REPORT_KEYS], get("usage"), get("guards"))
    else:
        raise TypeError(f"a record row must be a dict or a Record, not {type(row).__name__}")
    rid = values[0]
    if not isinstance(rid, str) or not rid:
        raise ValueError("a record without an id cannot be stored")
    served = values[_SERVED]
    if served is not None:
        values[_SERVED] = int(bool(served))
    values += report
    values.append(encode_row(row).decode())
    return values
