"""The human review queue over HTTP: the page, next / label / relabel, entries by hand and by the
worker, every validation error, and escaping of stored text in the page."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import orjson
import pytest

from proxy.config import PolicyError, parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.records import Record
from proxy.records._model import new_id
from proxy.scoring import Score, score_row
from proxy.scoring._worker import review_row
from proxy.server import Settings, create_app

PROVIDER_KEY = "sk-review-PROVIDER-0123456789abcdef"

POLICY = f"""
providers:
  mock: {{kind: openai, base_url: 'http://mock.test/v1', api_key: '{PROVIDER_KEY}'}}
models:
  prod: {{provider: mock, model: gpt-mock-prod}}
routes:
  support-bot: {{model: prod, capture: full}}
  private-bot: {{model: prod, capture: redacted}}
taxonomy:
  rude_tone: {{severity: minor, description: the answer is rude}}
scorers:
  review: {{kind: human, rate: 0.0}}
  triage: {{kind: human, rate: 0.0, labels: [good, bad, unsure]}}
  tone: {{kind: rule, regex: 'rude', taxonomy: rude_tone}}
"""


@contextlib.asynccontextmanager
async def running(tmp_path, policy_text: str = POLICY) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    transport = httpx.ASGITransport(app=create_mock())
    app = create_app(Settings(policy=parse_policy(policy_text), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": transport}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway


async def ask(client: httpx.AsyncClient, text: str, route: str = "support-bot") -> tuple[str, str]:
    """Serve one request; (request id, the answer's text as the client got it)."""
    response = await client.post("/v1/chat/completions",
                                 json={"model": route, "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response.headers["x-sluicegate-request-id"], response.json()["choices"][0]["message"]["content"]


async def enqueue(client: httpx.AsyncClient, scorer: str = "review", **ids: str) -> dict:
    response = await client.post("/v1/review", json={**ids, "scorer": scorer})
    assert response.status_code == 201, response.text
    return response.json()


async def human_rows(gw) -> list[tuple]:
    await gw.recorder.flush()
    return await gw.store.fetch("SELECT id, scorer, kind, label, taxonomy, weight, data FROM scores "
                                "WHERE kind = 'human' ORDER BY id")


def stored_record(text: str, answer: str | None, route: str = "support-bot", capture: str = "full",
                  **fields) -> Record:
    """A served record as the request path would hand it over (capture full)."""
    request_id = new_id("req_")
    return Record(id=new_id("rec_"), request_id=request_id, attempt=1, attempt_reason="primary",
                  endpoint="chat.completions", route=route, variant="prod", provider="mock",
                  model_requested="gpt-mock-prod", started_at=time.time(), served=True, capture=capture,
                  request={"model": "gpt-mock-prod", "messages": [{"role": "user", "content": text}]},
                  response={"id": "chatcmpl-1", "object": "chat.completion", "choices": [
                      {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]},
                  status=200, **fields)


def initial_state(page: str) -> dict:
    match = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the page carries its first item as JSON"
    return orjson.loads(match.group(1))


# --------------------------------------------------------------------------- the page


async def test_page_renders_self_contained_with_shortcut_help(tmp_path):
    async with running(tmp_path) as (client, _):
        empty = await client.get("/review")
        request_id, _ = await ask(client, "where is my order?")
        await enqueue(client, request_id=request_id)
        page = await client.get("/review")
    for response in (empty, page):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        body = response.text
        assert "http://" not in body and "https://" not in body  # no external asset, no external link
        assert not re.search(r'<(script|link|img|iframe)[^>]*\b(src|href)=', body)  # nothing loaded from anywhere
        assert "Keyboard shortcuts" in body
        for key in ("1-9", "p / f", "t", "n", "Enter", "s"):
            assert f"<kbd>{html.escape(key)}</kbd>" in body
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert "Queue empty" in body and "localStorage" in body
    empty_state = initial_state(empty.text)
    assert re.fullmatch(r"[0-9a-f]{64}", empty_state.pop("csrf"))  # the label POST's x-sluicegate-csrf
    assert empty_state == {"item": None, "pending": 0, "scorer": None, "route": None}
    first = initial_state(page.text)
    assert first["pending"] == 1 and first["item"]["request_id"] == request_id
    assert PROVIDER_KEY not in page.text


async def test_page_escapes_stored_text(tmp_path):
    nasty = '</script><script>alert("x")</script><img src=x onerror=alert(1)> & \u2028'
    async with running(tmp_path) as (client, gw):
        record = stored_record(f"question {nasty}", f"answer {nasty}")
        gw.recorder.submit(record)
        gw.recorder.submit(review_row("review", record, "critical"))
        await gw.recorder.flush()
        page = await client.get("/review")
    body = page.text
    # the page's own two script elements and nothing from the record
    assert body.count("<script") == 2 and body.count("</script>") == 2 and "<img" not in body
    assert "\\u003c/script\\u003e" in body
    item = initial_state(body)["item"]
    assert item["record"]["answer"]["text"] == f"answer {nasty}"  # escaped in transit, the same text after
    assert item["record"]["messages"][0]["text"] == f"question {nasty}"
    assert "innerHTML" not in body and "insertAdjacentHTML" not in body and "document.write" not in body


async def test_page_with_an_unknown_filter_is_a_clear_400(tmp_path):
    async with running(tmp_path) as (client, _):
        response = await client.get("/review", params={"scorer": "reveiw"})
    assert response.status_code == 400
    assert "did you mean 'review'" in response.json()["error"]["message"]


# --------------------------------------------------------------------------- next / label


async def test_next_returns_the_oldest_entry_with_the_record_as_captured(tmp_path):
    async with running(tmp_path) as (client, gw):
        first_id, first_answer = await ask(client, "where is my order 1?")
        second_id, _ = await ask(client, "where is my order 2?")
        await enqueue(client, request_id=first_id)
        await enqueue(client, request_id=second_id)
        record_id, = (await gw.store.fetch("SELECT id FROM records WHERE request_id = ?", (first_id,)))[0]
        gw.recorder.submit(score_row(Score(record_id=record_id, request_id=first_id, scorer="tone", kind="rule",
                                           label="fail", score=0.0, taxonomy="rude_tone", reason="matched 'rude'")))
        await gw.recorder.flush()
        response = await client.get("/v1/review/next")
    assert response.status_code == 200 and response.headers["x-sluicegate-review-pending"] == "2"
    item = response.json()
    assert item["object"] == "review.item" and item["id"] == f"{record_id}:review"
    assert (item["request_id"], item["route"], item["scorer"], item["reason"]) == (first_id, "support-bot", "review",
                                                                                   "manual")
    assert item["pending"] == 2 and item["labels"] == ["pass", "fail"]
    classes = {c["name"]: c for c in item["taxonomy"]}
    assert classes["rude_tone"] == {"name": "rude_tone", "severity": "minor", "description": "the answer is rude"}
    assert "unknown_tool" in classes  # the guards' built-in classes are offered too
    record = item["record"]
    assert record["messages"] == [{"role": "user", "text": "where is my order 1?"}]
    assert record["answer"]["text"] == first_answer and record["answer"]["finish_reason"] == "stop"
    assert record["capture"] == "full" and record["text_captured"] is True and record["guards"] == []
    assert item["scores"] == [{"scorer": "tone", "kind": "rule", "label": "fail", "score": 0.0,
                               "taxonomy": "rude_tone", "confidence": None, "reason": "matched 'rude'",
                               "error": None, "reviewer": None, "created_at": item["scores"][0]["created_at"]}]
    assert PROVIDER_KEY not in response.text


async def test_label_is_stored_and_next_moves_on_until_the_queue_is_empty(tmp_path):
    async with running(tmp_path) as (client, gw):
        ids = [(await ask(client, f"question {i}"))[0] for i in range(2)]
        for request_id in ids:
            await enqueue(client, request_id=request_id)
        first = (await client.get("/v1/review/next")).json()
        saved = await client.post(f"/v1/review/{quote(first['id'])}",
                                  json={"label": "fail", "taxonomy": "rude_tone", "note": "too curt",
                                        "reviewer": "ana"})
        assert saved.status_code == 200, saved.text
        assert saved.json() | {"created_at": 0} == {
            "object": "review.label", "id": first["id"], "record_id": first["record_id"], "request_id": ids[0],
            "scorer": "review", "label": "fail", "taxonomy": "rude_tone", "note": "too curt", "reviewer": "ana",
            "created_at": 0, "status": "stored", "replaced": None}
        rows = await human_rows(gw)
        second = await client.get("/v1/review/next")
        assert second.status_code == 200 and second.json()["request_id"] == ids[1]
        assert second.json()["pending"] == 1
        await client.post(f"/v1/review/{second.json()['id']}", json={"label": "pass", "reviewer": "ana"})
        empty = await client.get("/v1/review/next")
    (row_id, scorer, kind, label, taxonomy, weight, data), = rows
    assert (row_id, scorer, kind, label, taxonomy, weight) == (first["id"], "review", "human", "fail", "rude_tone", 1.0)
    data = orjson.loads(data)
    assert data["reason"] == "too curt" and data["reviewer"] == "ana" and data["review_reason"] == "manual"
    assert empty.status_code == 204 and empty.content == b""
    assert empty.headers["x-sluicegate-review-pending"] == "0"


async def test_relabel_replaces_the_label(tmp_path):
    async with running(tmp_path) as (client, gw):
        request_id, _ = await ask(client, "hello")
        entry = await enqueue(client, request_id=request_id)
        await client.post(f"/v1/review/{entry['id']}", json={"label": "fail", "reviewer": "ana"})
        again = await client.post(f"/v1/review/{entry['id']}", json={"label": "pass", "reviewer": "bo", "note": "ok"})
        rows = await human_rows(gw)
    assert again.status_code == 200
    assert again.json()["replaced"]["label"] == "fail" and again.json()["replaced"]["reviewer"] == "ana"
    (row_id, _, _, label, _, _, data), = rows
    assert row_id == entry["id"] and label == "pass" and orjson.loads(data)["reviewer"] == "bo"


async def test_custom_labels_filters_and_skip(tmp_path):
    async with running(tmp_path) as (client, gw):
        a, _ = await ask(client, "a")
        b, _ = await ask(client, "b", route="private-bot")
        await enqueue(client, "triage", request_id=a)
        await enqueue(client, "review", request_id=b)
        await enqueue(client, "triage", request_id=b)
        triage = (await client.get("/v1/review/next", params={"scorer": "triage"})).json()
        private = (await client.get("/v1/review/next", params={"route": "private-bot"})).json()
        skipped = (await client.get("/v1/review/next", params={"after": triage["id"]})).json()
        last = await client.get("/v1/review/next", params={"after": f"{skipped['record_id']}:triage"})
        bad = await client.post(f"/v1/review/{triage['id']}", json={"label": "pass", "reviewer": "ana"})
        good = await client.post(f"/v1/review/{triage['id']}", json={"label": "unsure", "reviewer": "ana"})
    assert triage["labels"] == ["good", "bad", "unsure"] and triage["request_id"] == a and triage["pending"] == 2
    assert private["request_id"] == b and private["scorer"] == "review" and private["pending"] == 2
    assert skipped["request_id"] == b and skipped["scorer"] == "review" and skipped["pending"] == 3
    assert last.status_code == 204 and last.headers["x-sluicegate-review-pending"] == "3"  # past the end: wrap
    assert bad.status_code == 400 and "good, bad, unsure" in bad.json()["error"]["message"]
    assert good.status_code == 200 and good.json()["label"] == "unsure"


async def test_redacted_capture_is_what_the_reviewer_sees(tmp_path):
    async with running(tmp_path) as (client, _):
        request_id, _ = await ask(client, "mail me at jane.doe@example.com", route="private-bot")
        await enqueue(client, request_id=request_id)
        item = (await client.get("/v1/review/next")).json()
    assert item["record"]["capture"] == "redacted"
    assert "jane.doe@example.com" not in orjson.dumps(item).decode()
    assert item["record"]["messages"][0]["text"].startswith("mail me at ")


async def test_entries_from_the_worker_and_tool_calls_guards_and_refs_only(tmp_path):
    async with running(tmp_path) as (client, gw):
        calls = stored_record("book it", None, guards=[{"guard": "tool_params", "passed": False,
                                                        "taxonomy": "invented_tool_param", "severity": "critical",
                                                        "detail": "unknown parameter 'x'", "pointer": "/x"}])
        calls.response["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "book", "arguments": '{"x": 1}'}}]}
        hidden = stored_record("secret text", "secret answer", capture="refs_only")
        for record, reason in ((calls, "critical"), (hidden, "rate")):
            gw.recorder.submit(record)
            gw.recorder.submit(review_row("review", record, reason))
            await gw.recorder.flush()
        first = (await client.get("/v1/review/next")).json()
        second = (await client.get("/v1/review/next", params={"after": first["id"]})).json()
    assert first["reason"] == "critical"
    assert first["record"]["answer"]["tool_calls"] == [{"id": "call_1", "name": "book", "arguments": '{"x": 1}'}]
    assert first["record"]["guards"][0]["taxonomy"] == "invented_tool_param"
    assert second["reason"] == "rate" and second["record"]["text_captured"] is False
    assert second["record"]["messages"] == [] and second["record"]["answer"]["text"] is None
    assert "secret text" not in orjson.dumps(second).decode()


async def test_the_worker_puts_entries_in_by_rate(tmp_path):
    policy = POLICY.replace("support-bot: {model: prod, capture: full}",
                            "support-bot: {model: prod, capture: full, sampling: {default: 1.0}, scorers: [always]}")
    policy += "  always: {kind: human, rate: 1.0}\n"
    async with running(tmp_path, policy) as (client, gw):
        request_id, answer = await ask(client, "anything")
        async with asyncio.timeout(10):
            while gw.scoring.stats()["to_review"] < 1:
                await asyncio.sleep(0.02)
        await gw.recorder.flush()
        item = (await client.get("/v1/review/next", params={"scorer": "always"})).json()
    assert (item["request_id"], item["reason"], item["scorer"]) == (request_id, "rate", "always")
    assert item["record"]["answer"]["text"] == answer


# --------------------------------------------------------------------------- entries by hand


async def test_entry_by_hand_by_request_or_record_id_once(tmp_path):
    async with running(tmp_path) as (client, gw):
        request_id, _ = await ask(client, "hello")
        by_request = await client.post("/v1/review", json={"request_id": request_id, "scorer": "review",
                                                            "note": "customer complained"})
        record_id = by_request.json()["record_id"]
        again = await client.post("/v1/review", json={"record_id": record_id, "scorer": "review"})
        other = await client.post("/v1/review", json={"record_id": record_id, "scorer": "triage"})
        rows = await gw.store.fetch("SELECT id, record_id, request_id, route, variant, scorer, reason FROM reviews "
                                    "ORDER BY scorer")
    assert by_request.status_code == 201
    body = by_request.json()
    assert body["object"] == "review.entry" and body["status"] == "queued" and body["reason"] == "manual"
    assert body["id"] == f"{record_id}:review" and body["request_id"] == request_id
    assert body["note"] == "customer complained"
    assert again.status_code == 200 and again.json()["status"] == "already_queued" and again.json()["pending"] is True
    assert other.status_code == 201
    assert rows == [(f"{record_id}:review", record_id, request_id, "support-bot", "prod", "review", "manual"),
                    (f"{record_id}:triage", record_id, request_id, "support-bot", "prod", "triage", "manual")]


async def test_scorer_may_be_left_out_when_the_policy_has_one_human_scorer(tmp_path):
    policy = POLICY.replace("  triage: {kind: human, rate: 0.0, labels: [good, bad, unsure]}\n", "")
    async with running(tmp_path, policy) as (client, _):
        request_id, _ = await ask(client, "hello")
        response = await client.post("/v1/review", json={"request_id": request_id})
    assert response.status_code == 201 and response.json()["scorer"] == "review"


# --------------------------------------------------------------------------- validation


LABEL_ERRORS = [
    ("unknown-id", {"label": "pass", "reviewer": "ana"}, 404, "id", "no review entry 'unknown-id'"),
    (None, {"label": "great", "reviewer": "ana"}, 400, "label", "send one of: pass, fail"),
    (None, {"reviewer": "ana"}, 400, "label", "missing required field 'label'; one of: pass, fail"),
    (None, {"label": "fail", "taxonomy": "rude_tones", "reviewer": "ana"}, 400, "taxonomy",
     "unknown taxonomy class 'rude_tones'; did you mean 'rude_tone'?"),
    (None, {"label": "pass"}, 400, "reviewer", "missing required field 'reviewer'"),
    (None, {"label": "pass", "reviewer": "   "}, 400, "reviewer", "missing required field 'reviewer'"),
    (None, {"label": "pass", "reviewer": 7}, 400, "reviewer", "must be a string"),
    (None, {"label": "pass", "reviewer": "ana", "score": 1}, 400, "score", "unknown field 'score'; allowed fields"),
    (None, {"label": "pass", "reviewer": "ana", "note": "x" * 10_001}, 400, "note", "the limit is 10000"),
]


@pytest.mark.parametrize("entry,body,status,param,fragment", LABEL_ERRORS)
async def test_bad_label_is_a_clear_4xx_and_stores_nothing(tmp_path, entry, body, status, param, fragment):
    async with running(tmp_path) as (client, gw):
        request_id, _ = await ask(client, "hello")
        queued = await enqueue(client, request_id=request_id)
        response = await client.post(f"/v1/review/{entry or queued['id']}", json=body)
        assert await human_rows(gw) == []
        still = await client.get("/v1/review/next")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert still.status_code == 200  # the entry is still pending


async def test_label_body_must_be_a_json_object(tmp_path):
    async with running(tmp_path) as (client, _):
        request_id, _ = await ask(client, "hello")
        queued = await enqueue(client, request_id=request_id)
        response = await client.post(f"/v1/review/{queued['id']}", content=b"not json",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


ADD_ERRORS = [
    ({"request_id": "req_missing", "scorer": "review"}, 404, "request_id", "no request with request_id 'req_missing'"),
    ({"record_id": "rec_missing", "scorer": "review"}, 404, "record_id", "no record with record_id 'rec_missing'"),
    ({"request_id": "{served}", "scorer": "tone"}, 400, "scorer", "'tone' is a rule scorer, not a human one"),
    ({"request_id": "{served}", "scorer": "reveiw"}, 400, "scorer", "did you mean 'review'?"),
    ({"request_id": "{served}"}, 400, "scorer", "missing required field 'scorer'; a human scorer of the policy: "
                                                "review, triage"),
    ({"scorer": "review"}, 400, "record_id", "send exactly one of 'record_id'"),
    ({"request_id": "{served}", "record_id": "x", "scorer": "review"}, 400, "record_id", "exactly one"),
    ({"request_id": "{served}", "scorer": "review", "why": "x"}, 400, "why", "unknown field 'why'"),
]


@pytest.mark.parametrize("body,status,param,fragment", ADD_ERRORS)
async def test_bad_entry_by_hand_is_a_clear_4xx(tmp_path, body, status, param, fragment):
    async with running(tmp_path) as (client, gw):
        request_id, _ = await ask(client, "hello")
        body = {k: (request_id if v == "{served}" else v) for k, v in body.items()}
        response = await client.post("/v1/review", json=body)
        rows = await gw.store.fetch("SELECT id FROM reviews")
    assert response.status_code == status and rows == []
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


async def test_no_human_scorer_in_the_policy_says_how_to_add_one(tmp_path):
    policy = re.sub(r"  (review|triage): \{kind: human.*\n", "", POLICY)
    async with running(tmp_path, policy) as (client, _):
        request_id, _ = await ask(client, "hello")
        response = await client.post("/v1/review", json={"request_id": request_id, "scorer": "tone"})
    assert response.status_code == 400
    assert "no human scorer" in response.json()["error"]["message"]
    assert "kind: human" in response.json()["error"]["message"]


NEXT_ERRORS = [
    ({"scorer": "tone"}, "scorer", "'tone' is a rule scorer"),
    ({"scorer": "nobody"}, "scorer", "unknown human scorer 'nobody'"),
    ({"route": "suport-bot"}, "route", "did you mean 'support-bot'?"),
    ({"after": "nope:review"}, "after", "'after' names no review entry"),
    ({"limit": "3"}, "limit", "unknown query parameter 'limit'; allowed: scorer, route, after"),
]


@pytest.mark.parametrize("params,param,fragment", NEXT_ERRORS)
async def test_bad_next_query_is_a_clear_400(tmp_path, params, param, fragment):
    async with running(tmp_path) as (client, _):
        response = await client.get("/v1/review/next", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


# --------------------------------------------------------------------------- the policy


@pytest.mark.parametrize("labels,fragment", [
    ("[]", "at least 1"), ("[pass, pass]", "unique"), ("['', fail]", "non-empty"),
])
def test_human_scorer_labels_are_checked(labels, fragment):
    with pytest.raises(PolicyError) as info:
        parse_policy(POLICY.replace("labels: [good, bad, unsure]", f"labels: {labels}"))
    assert fragment in str(info.value)
