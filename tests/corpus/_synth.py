"""A synthetic store of ~50,000 records for the corpus tests, with the truth about every record.

The target route `support-bot` gets `MAIN` served requests in the window (three capture modes,
three template refs, with and without tools), with failures planted by guard, score and outcome,
exact duplicates (the same request body again) and near duplicates (the same text with other
case, spacing, digits and punctuation). Around them: fallbacks (an unserved attempt 1), shadows,
another route and records older than the window — none of which may reach a corpus.

The truth is computed here from what was planted, by the documented rules, not by the corpus code.
Everything goes through the store's own write path (`write_records`): `Record` objects are sealed
by the store (capture mode applied, request hash computed), scores and outcomes are rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from proxy.records import Outcome, Record, SQLiteStore

T0 = 1_700_000_000.0  # the window starts here (the build's --since)
ROUTE = "support-bot"
MAIN = 45_000
TEMPLATES = ("support/answer@v3", "support/refund@v1", None)
SYSTEM = {"support/answer@v3": "You are the support agent of Acme. Answer briefly.",
          "support/refund@v1": "You handle refunds for Acme. Never promise money."}
TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]
REDACTED_DOMAIN = "redacted-only.example"  # e-mail addresses of redacted records: must never reach a corpus
REFS_MARKER = "refsonlysecretword"  # in every refs_only record's prompt: must never reach a corpus
GUARD_CLASSES = (("invented_tool_param", "major"), ("schema_violation", "major"), ("dangerous_advice", "critical"))


@dataclasses.dataclass
class Truth:
    """What was planted: per record id of the target route's served attempts in the window."""

    served: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # id -> facts
    excluded_ids: set[str] = dataclasses.field(default_factory=set)  # shadows, unserved, other route, too old
    duplicates: int = 0  # planted exact duplicates (replayable, of a replayable original)
    near_duplicates: int = 0  # planted near duplicates
    total_rows: int = 0

    def stratum(self, rid: str) -> str:
        f = self.served[rid]
        return f"{ROUTE}|{f['template'] or '-'}|{'tools' if f['tools'] else 'no_tools'}|{f['cls']}"


def _vocab(rng: random.Random, n: int = 400) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9))))
    return sorted(words)


def _near_variant(text: str, rng: random.Random) -> str:
    """Same letters, other case, spacing, digits and punctuation."""
    words = text.split()
    out = []
    for w in words:
        w = w.upper() if rng.random() < 0.3 else w.capitalize() if rng.random() < 0.3 else w
        if rng.random() < 0.3:
            w += rng.choice(["!", "?", ",", "...", " #4711", " 2024-01-05", ";"])
        out.append(w)
    return "  \n ".join(out) + f" ({rng.randint(1, 99999)})"


def _body(model: str, template: str | None, text: str, tools: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if template is not None:
        messages.append({"role": "system", "content": SYSTEM[template]})
    messages.append({"role": "user", "content": text})
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
    if tools:
        body["tools"] = TOOLS
    return body


def _record(rid: str, request_id: str, t: float, body: dict[str, Any], *, template: str | None, capture: str,
            route: str = ROUTE, variant: str = "prod", attempt: int = 1, reason: str = "primary",
            served: bool = True, episode: str | None = None, guards: list[dict[str, Any]] | None = None) -> Record:
    model = "gpt-4o-2024-08-06" if variant == "prod" else "llama-3.1-8b-instruct"
    answer = f"Thanks for asking about {body['messages'][-1]['content'][:40]}"
    return Record(
        id=rid, request_id=request_id, attempt=attempt, attempt_reason=reason, endpoint="chat.completions",
        route=route, variant=variant, provider="openai" if variant == "prod" else "local", model_requested=model,
        started_at=t, served=served, episode_id=episode, template_ref=template, capture=capture,
        request=body, params={"temperature": 0, **({"tool_names": ["lookup_order"]} if "tools" in body else {})},
        response={"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(t), "model": model,
                  "system_fingerprint": "fp_1",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}},
        model_served=model, system_fingerprint="fp_1", finish_reason="stop",
        usage={"prompt_tokens": 40, "completion_tokens": 12}, cost_usd=0.0004, latency_ms=120.0 + int(rid[1:]) % 50,
        ttft_ms=40.0, upstream_status=200 if served else 502, status=200 if served else 502,
        outcome="ok" if served else "upstream_error", guards=guards or [])


def _score(rid: str, request_id: str, scorer: str, kind: str, label: str, taxonomy: str | None) -> dict[str, Any]:
    return {"row": "score", "id": f"{rid}:{scorer}", "record_id": rid, "request_id": request_id, "scorer": scorer,
            "kind": kind, "label": label, "score": 1.0 if label == "pass" else 0.0, "taxonomy": taxonomy,
            "confidence": 0.9, "weight": 10.0, "cost_usd": 0.0001 if kind == "llm_judge" else None,
            "created_at": T0 + 1}


async def fill(store: SQLiteStore, seed: int = 11, main: int = MAIN) -> Truth:
    rng = random.Random(seed)
    vocab = _vocab(rng)
    truth = Truth()
    rows: list[Any] = []
    originals: list[tuple[dict[str, Any], str | None, str, str]] = []  # (body, template, text, id) of dup sources

    pending: list[asyncio.Future[int]] = []  # the batch being written while the next one is made

    async def flush(force: bool = False) -> None:
        if len(rows) >= 5000 or (force and rows):
            truth.total_rows += sum(isinstance(r, Record) for r in rows)
            if pending:
                await pending.pop()
            pending.append(asyncio.ensure_future(store.write_records(list(rows))))
            rows.clear()
        if force and pending:
            await pending.pop()

    t = T0
    for i in range(main):
        t += rng.uniform(10, 40)
        rid, req = f"m{i:06d}", f"req-m{i:06d}"
        roll = rng.random()
        kind = "dup" if roll < 0.04 and originals else "near" if roll < 0.08 and originals else "unique"
        source = None
        c = rng.random()
        capture = "full" if c < 0.6 else "redacted" if c < 0.9 else "refs_only"
        episode: str | None = f"ep{i // 3}"
        if kind == "unique":
            template = rng.choice(TEMPLATES)
            tools = rng.random() < 0.3
            text = " ".join(rng.choices(vocab, k=8))
            email = capture == "redacted" and rng.random() < 0.5
            if email:
                text += f" reach me at jane.doe{i}@{REDACTED_DOMAIN}"
            if capture == "refs_only":
                text += f" {REFS_MARKER}"
            body = _body("gpt-4o-2024-08-06", template, text, tools)
            if capture != "refs_only" and not email and rng.random() < 0.2:
                originals.append((body, template, text, rid))
        else:
            # a near variant's digits could be masked as a phone number in `redacted`: keep it `full`
            capture = rng.choice(("full", "redacted")) if kind == "dup" else "full"
            episode = None  # no episode outcome may reach a duplicate: it stays `ok`
            src, template, text, source = rng.choice(originals)
            tools = "tools" in src
            if kind == "dup":
                body = src
                truth.duplicates += 1
            else:
                body = _body("gpt-4o-2024-08-06", template, _near_variant(text, rng), tools)
                truth.near_duplicates += 1
        guards: list[dict[str, Any]] = []
        cls = "ok"
        if kind == "unique" and rng.random() < 0.035:
            taxonomy, severity = rng.choices(GUARD_CLASSES, (45, 45, 10))[0]
            guards = [{"guard": "tool_params" if taxonomy == "invented_tool_param" else "json_schema",
                       "passed": False, "taxonomy": taxonomy, "severity": severity,
                       "detail": "unexpected parameter", "pointer": "/choices/0/message"}]
            cls = f"guard:{taxonomy}"
        variant = "prod" if rng.random() < 0.9 else "candidate"
        served_id = rid
        if rng.random() < 0.01:  # attempt 1 failed upstream, attempt 2 (the other variant) served
            rows.append(_record(f"f{i:06d}", req, t, body, template=template, capture=capture, variant=variant,
                                served=False, episode=episode))
            truth.excluded_ids.add(f"f{i:06d}")
            variant = "candidate" if variant == "prod" else "prod"
            rows.append(_record(rid, req, t + 0.5, body, template=template, capture=capture, variant=variant,
                                attempt=2, reason="fallback", episode=episode, guards=guards))
        else:
            rows.append(_record(rid, req, t, body, template=template, capture=capture, variant=variant,
                                episode=episode, guards=guards))
        if rng.random() < 0.02:  # shadow copy: never served, never in a corpus
            sid = f"s{i:06d}"
            rows.append(_record(sid, req, t + 0.2, body, template=template, capture=capture, variant="candidate",
                                attempt=2, reason="shadow", served=False, episode=episode))
            truth.excluded_ids.add(sid)
        # scores: 20% of unique replayable records (the worker never scores refs_only)
        if kind == "unique" and capture != "refs_only" and rng.random() < 0.2:
            judge = rng.choices(("pass", "fail", "judge_error"), (80, 18, 2))[0]
            rows.append(_score(served_id, req, "helpfulness", "llm_judge", judge,
                               "out_of_scope_answer" if judge == "fail" else None))
            rule_fail = rng.random() < 0.04
            rows.append(_score(served_id, req, "no_secrets", "rule", "fail" if rule_fail else "pass",
                               "dangerous_advice" if rule_fail else None))
            if cls == "ok" and rule_fail:
                cls = "score:dangerous_advice"  # rules before judges
            elif cls == "ok" and judge == "fail":
                cls = "score:out_of_scope_answer"
        # outcomes: user_corrected per request (1 = bad), csat (float, never a failure)
        negatives: list[str] = []
        if kind == "unique" and rng.random() < 0.3:
            final = float(rng.random() < 0.08)
            if rng.random() < 0.15:  # reported twice: the later report is the correction, and it wins
                rows.append(Outcome(id=f"uc{i}a", metric="user_corrected", value=1.0 - final, level="inference",
                                    received_at=t + 60, request_id=req))
            rows.append(Outcome(id=f"uc{i}b", metric="user_corrected", value=final, level="inference",
                                received_at=t + 600, request_id=req))
            if final == 1.0:
                negatives.append("user_corrected")
            if rng.random() < 0.3:
                rows.append(Outcome(id=f"cs{i}", metric="csat", value=float(rng.randint(1, 5)), level="inference",
                                    received_at=t + 60, request_id=req))
        truth.served[rid] = {"template": template, "tools": tools, "capture": capture, "kind": kind, "cls": cls,
                             "negatives": negatives, "episode": episode, "source": source,
                             "variant": variant}
        await flush()
    # episode outcomes: task_success for half the episodes, false for a fifth of those
    failed_episodes: set[str] = set()
    for e in range(main // 3 + 1):
        if rng.random() < 0.5:
            ok = rng.random() >= 0.2
            rows.append(Outcome(id=f"ts{e}", metric="task_success", value=1.0 if ok else 0.0, level="episode",
                                received_at=T0 + 10**6, episode_id=f"ep{e}"))
            if not ok:
                failed_episodes.add(f"ep{e}")
        await flush()
    for facts in truth.served.values():
        if facts["episode"] in failed_episodes:
            facts["negatives"].append("task_success")
        if facts["cls"] == "ok" and facts["negatives"]:
            facts["cls"] = f"outcome:{sorted(facts['negatives'])[0]}"
    # around the route: another route, and the route's records from before the window
    for j in range(2000):
        xid = f"x{j:05d}"
        body = _body("gpt-4o-2024-08-06", None, " ".join(rng.sample(vocab, 8)), False)
        rows.append(_record(xid, f"req-{xid}", T0 + j * 10, body, template=None, capture="full", route="sales-bot"))
        truth.excluded_ids.add(xid)
        await flush()
    for j in range(1500):
        oid = f"o{j:05d}"
        body = _body("gpt-4o-2024-08-06", "support/answer@v3", " ".join(rng.sample(vocab, 8)), False)
        rows.append(_record(oid, f"req-{oid}", T0 - 10 - j * 10, body, template="support/answer@v3",
                            capture="full"))
        truth.excluded_ids.add(oid)
        await flush()
    await flush(force=True)
    return truth
