"""Fallbacks on every upstream fault, the error contract, and records of each case."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import CALLER_KEY, PROVIDER_KEY, attempts, free_port, records, serve_policy
from tests.e2e.policy import FAULTS, e2e_policy

pytestmark = pytest.mark.e2e

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_upstream):
    yield from serve_policy(tmp_path_factory.mktemp("faults"), e2e_policy(free_port()), mock_upstream)


def post(gateway, body, path="/v1/chat/completions", **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {CALLER_KEY}", **kwargs.pop("headers", {})}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=20, **kwargs)


EXPECTED_OUTCOME = {"http_500": "upstream_error", "http_503": "upstream_error", "http_429": "upstream_error",
                    "timeout": "timeout", "reset": "malformed", "malformed_json": "malformed", "dead": "connect_error"}


@pytest.mark.parametrize("fault", [*FAULTS, "dead"])
def test_fallback_on_each_fault_kind_records_both_attempts(gateway, fault):
    response = post(gateway, {"model": f"fb-{fault}", **CHAT})
    assert response.status_code == 200, response.text
    assert response.headers["x-sluicegate-variant"] == "prod"
    assert "gpt-mock-prod" in response.json()["model"]
    failed, served = attempts(gateway, response.headers["x-sluicegate-request-id"], 2)
    assert (failed["attempt"], failed["attempt_reason"], failed["served"]) == (1, "primary", False)
    assert failed["outcome"] == EXPECTED_OUTCOME[fault]
    assert failed["error"] and failed["provider"] in (f"mock_{fault}", "dead")
    assert (served["attempt"], served["attempt_reason"], served["served"]) == (2, "fallback", True)
    assert served["variant"] == "prod" and served["outcome"] == "ok"


@pytest.mark.parametrize("route,status,code,names", [
    ("nofb-http_500", 502, "upstream_error", "mock_http_500"),
    ("nofb-http_503", 502, "upstream_error", "mock_http_503"),
    ("nofb-dead", 502, "upstream_unreachable", "dead"),
    ("nofb-timeout", 504, "upstream_timeout", "mock_timeout"),
    ("nofb-malformed_json", 502, "upstream_bad_response", "mock_malformed_json"),
    ("nofb-reset", 502, "upstream_bad_response", "mock_reset"),
])
def test_upstream_faults_without_fallback_are_5xx_naming_the_provider(gateway, route, status, code, names):
    response = post(gateway, {"model": route, **CHAT})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert f"'{names}'" in error["message"]
    assert PROVIDER_KEY not in response.text
    record, = attempts(gateway, response.headers["x-sluicegate-request-id"], 1)
    assert record["status"] == status and not record["served"]


def test_upstream_429_without_fallback_passes_through_with_retry_after(gateway):
    response = post(gateway, {"model": "nofb-http_429", **CHAT})
    assert response.status_code == 429
    assert "retry-after" in response.headers
    assert response.json()["error"]["type"]


def test_upstream_4xx_passes_through_unchanged(gateway, mock_upstream):
    response = post(gateway, {"model": "rejects", **CHAT})
    direct = httpx.post(f"{mock_upstream}/v1/chat/completions", json={"model": "gpt-mock-400", **CHAT},
                        headers={"x-mock-fault": "http_400"})
    assert response.status_code == direct.status_code == 400
    assert response.json() == direct.json()


@pytest.mark.parametrize("content,status,param,fragment", [
    (b"{not json", 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "JSON object"),
    (b"", 400, None, "empty"),
    (orjson.dumps(CHAT), 400, "model", "missing required field 'model'"),
    (orjson.dumps({"model": "support-bot"}), 400, "messages", "missing required field 'messages'"),
    (orjson.dumps({"model": 7, **CHAT}), 400, "model", "must be of type str"),
    (orjson.dumps({"model": "support-bot", "messages": []}), 400, "messages", "must not be empty"),
    (orjson.dumps({"model": "no-such-route", **CHAT}), 404, "model", "no route named 'no-such-route'"),
])
def test_bad_requests_get_openai_shaped_4xx(gateway, content, status, param, fragment):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_body_over_the_limit_is_413(gateway):
    big = {"model": "support-bot", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]}
    response = post(gateway, big)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_unknown_path_and_method_are_openai_shaped(gateway):
    assert httpx.get(f"{gateway.url}/v1/nothing").json()["error"]["code"] == "not_found"
    assert httpx.get(f"{gateway.url}/v1/chat/completions").status_code == 405


def test_stream_cut_mid_way_is_recorded_and_the_client_sees_an_error(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CALLER_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="cut-stream", stream=True, **CHAT)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in raw.parse():
            received.append(chunk)
    assert received, "chunks sent before the cut reach the client"
    record, = attempts(gateway, raw.headers["x-sluicegate-request-id"], 1)
    assert record["outcome"] == "stream_cut"
    assert "mock_" not in record["error"] and record["error"]


async def test_client_disconnect_mid_stream_closes_upstream_and_is_recorded(gateway):
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", f"{gateway.url}/v1/chat/completions",
                               json={"model": "slow-stream", "stream": True, **CHAT}) as response:
            request_id = response.headers["x-sluicegate-request-id"]
            async for _ in response.aiter_bytes():
                break  # first event, then hang up
    record, = await asyncio.to_thread(attempts, gateway, request_id, 1)
    assert record["outcome"] == "cancelled" and "client closed" in record["error"]
    assert record["latency_ms"] < 1000  # the 1.25 s upstream stream was not waited for


def test_no_secret_reaches_store_logs_or_export(gateway):
    post(gateway, {"model": "support-bot", **CHAT})
    post(gateway, {"model": "nofb-http_500", **CHAT})
    post(gateway, {"model": "nofb-dead", **CHAT})
    records(gateway.store, 3)
    time.sleep(0.3)
    export = subprocess.run([sys.executable, "-m", "proxy", "export", "--store", f"sqlite:///{gateway.store}"],
                            capture_output=True, timeout=30)
    assert export.returncode == 0 and export.stdout.count(b"\n") >= 3
    haystacks = {"store": gateway.store.read_bytes(), "export": export.stdout + export.stderr,
                 "logs": gateway.logs().encode()}
    wal = gateway.store.with_name(gateway.store.name + "-wal")
    if wal.exists():
        haystacks["wal"] = wal.read_bytes()
    for where, data in haystacks.items():
        for secret in (PROVIDER_KEY, CALLER_KEY, PROVIDER_KEY[8:30], CALLER_KEY[10:30]):
            assert secret.encode() not in data, f"secret found in {where}"


def test_export_prints_documented_fields_newest_last(gateway):
    post(gateway, {"model": "support-bot", **CHAT})
    records(gateway.store, 1)
    time.sleep(0.2)
    out = subprocess.run([sys.executable, "-m", "proxy", "export", "--store", f"sqlite:///{gateway.store}",
                          "--route", "support-bot", "--since", "1h"], capture_output=True, timeout=30)
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["route"] == "support-bot" for r in rows)
    assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)
    for field in ("id", "request_id", "correlation_id", "episode_id", "started_at", "first_byte_at", "ended_at",
                  "route", "experiment", "variant", "attempt", "attempt_reason", "provider", "model_requested",
                  "model_served", "system_fingerprint", "request", "params", "response", "finish_reason",
                  "tool_calls", "usage", "cost_usd", "latency_ms", "ttft_ms", "upstream_status", "guards",
                  "cache_hit", "request_hash", "template_ref", "retrieval_ids"):
        assert field in rows[-1], field
