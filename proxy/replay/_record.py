"""`sluicegate replay --record ID`: re-send one logged request and show both answers side by side.

For a failure seen in production: the stored request body goes out again exactly — its own model and
params, to the provider it went to (non-streaming) — or, with `--variant`, to another model of the
policy (its model and pinned params over the recorded ones, as a corpus replay does). `ID` is an
attempt id (`att_…`: that attempt) or a request id (`req_…`: its served attempt, else its latest).

What the record kept decides what can be replayed: a `refs_only` record holds no text, so there is
nothing to send; a `redacted` one is re-sent with its masks (`[EMAIL]`, …) in place of what they hid.
The recorded answer is shown with the guard results recorded with it; the new answer with the
route's guards as the policy has them now.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from collections.abc import Mapping
from typing import Any

import httpx

from proxy.replay._body import exact_body, replay_body
from proxy.replay._checks import Checks, excerpt
from proxy.replay._model import RECORDED, Side
from proxy.replay._pace import Pacer
from proxy.replay._run import Adapters, ReplayUsageError, answer_side
from proxy.replay._send import Sender
from proxy.scoring import answer_text

__all__ = ["RecordReplay", "load_record", "render_side_by_side", "replay_record"]

_MAX_LINES = 200  # per column: a very long answer is cut (the JSON output has it whole)


@dataclasses.dataclass(slots=True)
class RecordReplay:
    record_id: str
    request_id: str
    route: str
    variant: str  # the variant that answered originally
    recorded: Side
    replayed: Side
    target: str  # "the recorded model" or the --variant name
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "request_id": self.request_id, "route": self.route,
                "variant": self.variant, "target": self.target, "recorded": self.recorded.to_dict() | {"response": self.recorded.response},
                "replayed": self.replayed.to_dict(), "notes": self.notes}


async def load_record(store: Any, record_id: str) -> dict[str, Any]:
    """The stored row of attempt `record_id`, or of request `record_id`'s served (else latest) attempt."""
    import orjson

    rows = await store.fetch("SELECT data FROM records WHERE id = ?", [record_id])
    if not rows:
        rows = await store.fetch("SELECT data FROM records WHERE request_id = ? "
                                 "ORDER BY served DESC, attempt DESC LIMIT 1", [record_id])
    if not rows:
        raise ReplayUsageError(f"no record with id or request id {record_id!r} in {store.url} (the id is the "
                               "x-sluicegate-request-id header, or a record's `id` in `sluicegate export`)")
    row = orjson.loads(rows[0][0])
    if not isinstance(row, dict):
        raise ReplayUsageError(f"record {record_id!r} is not readable")
    return row


def _recorded(row: Mapping[str, Any]) -> Side:
    response = row.get("response") if isinstance(row.get("response"), dict) else None
    failed = [g for g in row.get("guards") or () if isinstance(g, dict) and not g.get("passed", False)]
    return Side(source=RECORDED, model=row.get("model_requested"), status=row.get("status"),
                error=row.get("error"), error_class=None if row.get("status") == 200 else row.get("outcome"),
                guards=failed, latency_ms=row.get("latency_ms"), cost_usd=row.get("cost_usd"), usage=row.get("usage"),
                model_served=row.get("model_served"), system_fingerprint=row.get("system_fingerprint"),
                finish_reason=row.get("finish_reason"), cache_hit=bool(row.get("cache_hit")),
                excerpt=excerpt(response), response=response)


async def replay_record(policy: Any, row: Mapping[str, Any], *, variant: str | None = None,
                        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
                        max_retries: int = 2) -> RecordReplay:
    """Re-send the record's request (see the module doc) and check the new answer."""
    rid = str(row.get("id"))
    request = row.get("request")
    if row.get("capture") == "refs_only" or not isinstance(request, dict) or not request.get("model"):
        raise ReplayUsageError(f"record {rid} was captured refs_only: it holds no request body (only hashes and "
                               "references), so it cannot be replayed; routes with `capture: full` or `redacted` "
                               "keep what a replay needs")
    notes: list[str] = []
    if row.get("capture") == "redacted":
        notes.append("the record was captured redacted: the request was re-sent with its masks ([EMAIL], "
                     "[SECRET], …) in place of the original text")
    if row.get("stream"):
        notes.append("the original was streamed; the replay is non-streaming (compared on the assembled answer)")
    endpoint = str(row.get("endpoint") or "chat.completions")
    params = row.get("params") if isinstance(row.get("params"), dict) else {}
    if variant is not None:
        model = policy.models.get(variant)
        if model is None:
            raise ReplayUsageError(f"--variant {variant}: not a model of {policy.source}; its models: "
                                   f"{', '.join(sorted(policy.models)) or 'none'}")
        body = replay_body(request, params, model, policy.providers[model.provider])
        target, source, provider = variant, variant, model.provider
    else:
        provider = str(row.get("provider") or "")
        if provider not in policy.providers:
            raise ReplayUsageError(f"record {rid} was sent to provider '{provider}', which {policy.source} does not "
                                   "define; pass --variant MODEL to send it to a model of the policy")
        body = exact_body(request, params)
        target, source = "the recorded model", str(row.get("variant") or "recorded model")
        model = _AsRecorded(str(body.get("model")), policy, row)
    adapters = Adapters(policy, transports)
    try:
        sender = Sender(Pacer(), max_retries=max_retries)
        reply = await sender.send(adapters.get(provider), endpoint, body)
    finally:
        await adapters.close()
    replayed = answer_side(source, model, reply)
    route = str(row.get("route") or "")
    if route in policy.routes:
        await Checks(policy).check(replayed, route=route, endpoint=endpoint, request=body, record_id=rid,
                                   request_id=str(row.get("request_id")),
                                   retrieval_ids=tuple(row.get("retrieval_ids") or ()))
    else:
        notes.append(f"route '{route}' is not in the policy any more: the new answer was not guarded")
    return RecordReplay(record_id=rid, request_id=str(row.get("request_id")), route=route,
                        variant=str(row.get("variant") or ""), recorded=_recorded(row),
                        replayed=replayed, target=target, notes=notes)


class _AsRecorded:
    """The recorded model as a price lookup needs it: the policy's variant when it still pins the same
    model (its price), else the bare name (the shipped price table, or unknown)."""

    def __init__(self, name: str, policy: Any, row: Mapping[str, Any]) -> None:
        variant = policy.models.get(str(row.get("variant") or ""))
        same = variant is not None and variant.model == name
        self.model = name
        self.price = variant.price if same else None


# --- side by side ---------------------------------------------------------------------------------


def _side_lines(title: str, side: Side, guards_label: str, width: int) -> list[str]:
    wrap = textwrap.TextWrapper(width=width, replace_whitespace=False, drop_whitespace=True)
    lines = [title, "-" * min(width, len(title))]
    served = f"{side.model_served or '?'}/{side.system_fingerprint or '-'}"
    lines += wrap.wrap(f"model {side.model} (served {served}); status {side.status}; "
                       f"latency {side.latency_ms if side.latency_ms is not None else '?'} ms; "
                       f"finish {side.finish_reason}")
    lines.append("")
    if side.error:
        lines += wrap.wrap(f"no answer: {side.error}")
    else:
        text = answer_text(side.response) or "(empty answer)"
        body: list[str] = []
        for paragraph in text.splitlines() or [""]:
            body += wrap.wrap(paragraph) or [""]
        if len(body) > _MAX_LINES:
            body = body[:_MAX_LINES] + [f"… ({len(body) - _MAX_LINES} more lines; --json has it all)"]
        lines += body
    lines += ["", guards_label]
    if not side.guards:
        lines.append("  pass" if side.answered or side.response is not None else "  (not run)")
    for g in side.guards:
        lines += wrap.wrap(f"  FAIL {g.get('guard')}: {g.get('taxonomy')} ({g.get('severity')}) {g.get('detail')}")
    for s in side.scores:
        lines += wrap.wrap(f"  scorer {s.scorer}: {s.label}")
    return lines


def render_side_by_side(result: RecordReplay, width: int | None = None) -> str:
    """Both answers in two text columns, each with its guard results."""
    total = width or shutil.get_terminal_size((160, 40)).columns
    column = max(30, (total - 3) // 2)
    left = _side_lines(f"recorded ({result.variant}, record {result.record_id})", result.recorded,
                       "guards (as recorded):", column)
    right = _side_lines(f"replayed to {result.target}", result.replayed, "guards (the route's guards now):", column)
    rows = max(len(left), len(right))
    left += [""] * (rows - len(left))
    right += [""] * (rows - len(right))
    out = [f"replay of request {result.request_id} (route {result.route})", ""]
    out += [f"{a:<{column}} | {b}".rstrip() for a, b in zip(left, right)]
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out)
