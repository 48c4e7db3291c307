"""Auth and limits: caller keys (401/403), admin keys, rate limits (429 with Retry-After, shared through
Redis), the caller's key never forwarded, request limits (messages, tools, headers, body time) and the
per-provider cap on concurrent upstream requests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.cli import main
from proxy.config import parse_policy
from proxy.keys import hash_key
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.server import Settings, create_app
from tests._services import redis_url  # noqa: F401 (fixture)

APP_KEY, OTHER_KEY, ADMIN_KEY = "sk-app-0123456789", "sk-other-abcdef", "sk-admin-42424242"


def policy_text(caller: str = "app", limit: str = "{requests_per_minute: 3}", extra: str = "",
                provider_extra: str = "") -> str:
    return f"""\
providers:
  mock: {{kind: openai, base_url: "http://mock.test/v1"{provider_extra}}}
models:
  prod: {{provider: mock, model: gpt-prod}}
  cand: {{provider: mock, model: gpt-cand}}
routes:
  bot:
    model: prod
    capture: full
    when: [{{match: {{caller: [other]}}, model: cand}}]
  private: {{model: prod, capture: refs_only}}
auth:
  keys:
    {caller}: {{hash: "{hash_key(APP_KEY)}", routes: [bot], rate_limit: {limit}}}
    other: {{hash: "{hash_key(OTHER_KEY)}"}}
  admin_keys: ["{hash_key(ADMIN_KEY)}"]
{extra}"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path, text: str, mock: Any = None):
    mock = mock or create_mock(MockConfig(default=MockModel()))
    app = create_app(Settings(policy=parse_policy(text), store_url=f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app, mock


def chat(route: str = "bot", key: str | None = APP_KEY, **body: Any) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return {"json": {"model": route, "messages": [{"role": "user", "content": "hi"}], **body}, "headers": headers}


def error(r: httpx.Response) -> dict[str, Any]:
    assert set(r.json()) == {"error"} and {"message", "type", "param", "code"} <= set(r.json()["error"])
    return r.json()["error"]


async def test_callers_need_a_known_key_and_it_is_never_echoed(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as (client, app, mock):
        missing = await client.post("/v1/chat/completions", **chat(key=None))
        wrong = await client.post("/v1/chat/completions", **chat(key="sk-guess-000"))
        ok = await client.post("/v1/chat/completions", **chat())
    assert missing.status_code == wrong.status_code == 401
    assert error(missing)["code"] == error(wrong)["code"] == "invalid_api_key"
    assert "sk-guess-000" not in wrong.text and "Authorization: Bearer" in error(missing)["message"]
    assert ok.status_code == 200
    sent = mock.state.mock.requests[-1]["headers"]  # what the upstream received
    assert APP_KEY not in str(sent)  # the caller's key is never forwarded


async def test_a_key_may_use_only_its_routes_and_its_name_is_recorded(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as (client, app, _):
        denied = await client.post("/v1/chat/completions", **chat("private"))
        other = await client.post("/v1/chat/completions", **chat(key=OTHER_KEY))
        await app.state.gateway.recorder.flush()
        records = await app.state.gateway.store.query_records()
    assert denied.status_code == 403 and error(denied)["code"] == "route_not_allowed"
    assert other.headers["x-sluicegate-variant"] == "cand"  # `match: {caller: [other]}`
    assert [r["caller"] for r in records] == ["other"]
    assert all(APP_KEY not in str(r) and OTHER_KEY not in str(r) for r in records)


async def test_admin_endpoints_need_an_admin_key(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as (client, app, _):
        as_caller = await client.get("/v1/reports", headers={"authorization": f"Bearer {APP_KEY}"})
        anonymous = await client.post("/admin/reload")
        as_admin = await client.get("/v1/reports", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        health = await client.get("/healthz")
    assert as_caller.status_code == 403 and error(as_caller)["code"] == "admin_key_required"
    assert anonymous.status_code == 401
    assert as_admin.status_code == 200 and health.status_code == 200


async def test_an_open_gateway_needs_no_key(tmp_path: Path) -> None:
    text = policy_text().split("auth:")[0].replace("    when: [{match: {caller: [other]}, model: cand}]\n", "")
    async with running(tmp_path, text) as (client, app, _):
        assert (await client.post("/v1/chat/completions", **chat(key=None))).status_code == 200
        assert (await client.get("/v1/reports")).status_code == 200


async def test_requests_per_minute_then_429_with_retry_after(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as (client, app, _):
        answers = [await client.post("/v1/chat/completions", **chat()) for _ in range(4)]
        other = await client.post("/v1/chat/completions", **chat(key=OTHER_KEY))  # its own limit (none)
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers.get("x-ratelimit-remaining-requests") for r in answers[:3]] == ["2", "1", "0"]
    refused = answers[3]
    assert error(refused)["code"] == "rate_limit_exceeded" and "3 requests per minute" in error(refused)["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert other.status_code == 200


async def test_tokens_per_minute_count_the_answers_tokens(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text(limit="{tokens_per_minute: 10}")) as (client, app, _):
        first = await client.post("/v1/chat/completions", **chat())  # the mock's answer uses > 10 tokens
        second = await client.post("/v1/chat/completions", **chat())
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 10
    assert second.status_code == 429 and "10 tokens per minute" in error(second)["message"]


async def test_replicas_share_the_limit_through_redis(tmp_path: Path, redis_url: str) -> None:
    caller = f"app_{uuid.uuid4().hex[:8]}"  # its own counters in Redis
    text = policy_text(caller=caller, limit="{requests_per_minute: 4}", extra=f"  rate_limit_store: {redis_url}\n")
    async with running(tmp_path, text) as (a, app_a, _), running(tmp_path, text) as (b, app_b, _):
        assert [(await c.post("/v1/chat/completions", **chat())).status_code for c in (a, a, b, b)] == [200] * 4
        for app in (app_a, app_b):  # what the background task does every second
            await app.state.gateway.limiter.sync()
        for app in (app_a, app_b):
            await app.state.gateway.limiter.sync()
        late = [(await c.post("/v1/chat/completions", **chat())).status_code for c in (a, b)]
    assert late == [429, 429]  # each replica saw the other's two requests


async def test_too_many_messages_or_tools_is_a_400_naming_the_param(tmp_path: Path) -> None:
    text = policy_text(extra="server: {max_messages: 3, max_tools: 1}\n")
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    async with running(tmp_path, text) as (client, app, _):
        messages = await client.post("/v1/chat/completions",
                                     **chat(messages=[{"role": "user", "content": "x"}] * 4))
        tools = await client.post("/v1/chat/completions", **chat(tools=[tool, tool]))
    assert messages.status_code == 400 and error(messages)["param"] == "messages"
    assert error(messages)["code"] == "too_many_messages"
    assert tools.status_code == 400 and error(tools)["param"] == "tools"


async def test_oversized_headers_get_a_431(tmp_path: Path) -> None:
    text = policy_text(extra="server: {max_header_bytes: 2048}\n")
    async with running(tmp_path, text) as (client, app, _):
        r = await client.post("/v1/chat/completions", json=chat()["json"],
                              headers={**chat()["headers"], "x-junk": "y" * 4000})
    assert r.status_code == 431 and error(r)["code"] == "headers_too_large"


async def test_a_body_that_never_finishes_arriving_gets_a_408(tmp_path: Path) -> None:
    text = policy_text(extra="server: {body_timeout: 0.2}\n")
    async with running(tmp_path, text) as (client, app, _):
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append({})
                return {"type": "http.request", "body": b'{"model": "bot"', "more_body": True}
            await asyncio.sleep(5)  # a slow client: the rest never comes
            return {"type": "http.disconnect"}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "server": ("gw", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"content-type", b"application/json"),
                             (b"authorization", f"Bearer {APP_KEY}".encode())], "app": app}
        await asyncio.wait_for(app(scope, receive, send), timeout=3)
    assert messages[0]["status"] == 408


async def test_a_provider_cap_queues_then_503s_naming_the_provider(tmp_path: Path) -> None:
    text = policy_text(provider_extra=", max_concurrent: 1, queue_timeout: 0.1")
    mock = create_mock(MockConfig(default=MockModel(latency_ms=400)))
    async with running(tmp_path, text, mock) as (client, app, _):
        first, second = await asyncio.gather(client.post("/v1/chat/completions", **chat(key=OTHER_KEY)),
                                             client.post("/v1/chat/completions", **chat(key=OTHER_KEY)))
        after = await client.post("/v1/chat/completions", **chat(key=OTHER_KEY))  # the slot came back
    codes = sorted([first.status_code, second.status_code])
    assert codes == [200, 503] and after.status_code == 200
    busy = first if first.status_code == 503 else second
    assert error(busy)["code"] == "upstream_busy" and "'mock'" in error(busy)["message"]
    assert busy.headers["retry-after"] == "1"


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "open.yaml"
    policy.write_text(policy_text().split("auth:")[0].replace(
        "    when: [{match: {caller: [other]}, model: cand}]\n", ""))
    assert main(["serve", "--policy", str(policy), "--host", "0.0.0.0", "--store", "none://"]) == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err


async def test_feedback_and_models_need_a_caller_key_and_models_lists_the_callers_routes(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as (client, app, _):
        anonymous = await client.post("/v1/feedback", json={"request_id": "req_x", "metric": "m", "value": 1})
        batch = await client.post("/v1/feedback/batch", json=[{"request_id": "req_x", "metric": "m", "value": 1}])
        models = await client.get("/v1/models", headers={"authorization": f"Bearer {APP_KEY}"})
        everything = await client.get("/v1/models", headers={"authorization": f"Bearer {OTHER_KEY}"})
    assert anonymous.status_code == batch.status_code == 401
    assert [m["id"] for m in models.json()["data"]] == ["bot"]
    assert sorted(m["id"] for m in everything.json()["data"]) == ["bot", "private"]


async def test_the_dashboard_asks_a_browser_for_the_admin_key_and_takes_it_as_a_basic_password(tmp_path: Path) -> None:
    import base64

    basic = "Basic " + base64.b64encode(f"anyone:{ADMIN_KEY}".encode()).decode()
    async with running(tmp_path, policy_text()) as (client, app, _):
        prompt = await client.get("/ui")
        page = await client.get("/ui", headers={"authorization": basic})
        api = await client.get("/ui/api/overview")
        wrong = await client.get("/ui", headers={"authorization": "Basic " + base64.b64encode(b"x:nope").decode()})
    assert prompt.status_code == 401 and prompt.headers["www-authenticate"].startswith("Basic realm=")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert api.status_code == 401 and "www-authenticate" not in api.headers  # JSON: no browser prompt
    assert wrong.status_code == 403
