"""Retrying the same upstream: which faults, how long (Retry-After honoured), within the deadline."""

from __future__ import annotations

import contextlib
from email.utils import format_datetime
from datetime import datetime, timezone

import httpx
import pytest

from proxy.config import parse_policy
from proxy.errors import UpstreamBadResponse, UpstreamHTTPError, UpstreamTimeout, UpstreamUnreachable
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.providers._retry import retry_delay, safe_to_retry
from proxy.server import Settings, create_app


def http_error(status: int, headers: dict[str, str] | None = None) -> UpstreamHTTPError:
    return UpstreamHTTPError("x", provider="p", upstream_status=status, headers=headers)


@pytest.mark.parametrize(("exc", "safe"), [
    (UpstreamUnreachable("x", provider="p"), True),
    (http_error(429), True), (http_error(500), True), (http_error(503), True),
    (http_error(400), False), (http_error(404), False),
    (UpstreamTimeout("x", provider="p"), False),  # the upstream may have acted on it
    (UpstreamBadResponse("x", provider="p"), False),
])
def test_only_faults_where_the_upstream_did_not_act_are_retried(exc, safe: bool) -> None:
    assert safe_to_retry(exc) is safe


def test_the_upstream_wait_is_honoured_ms_first_then_seconds_then_a_date() -> None:
    now = 1_800_000_000.0
    assert retry_delay(http_error(429, {"retry-after-ms": "250", "retry-after": "9"}), 0,
                       base_s=0.1, max_s=1, now=lambda: now) == 0.25
    assert retry_delay(http_error(429, {"retry-after": "3"}), 0, base_s=0.1, max_s=1) == 3.0
    date = format_datetime(datetime.fromtimestamp(now + 7, timezone.utc), usegmt=True)
    assert retry_delay(http_error(503, {"retry-after": date}), 0, base_s=0.1, max_s=1,
                       now=lambda: now) == pytest.approx(7.0)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    exc = http_error(503)
    top = [retry_delay(exc, n, base_s=0.1, max_s=1.0, rng=lambda: 1.0) for n in range(6)]
    assert top == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert retry_delay(exc, 3, base_s=0.1, max_s=1.0, rng=lambda: 0.0) == 0.0


POLICY = """\
providers:
  mock: {{kind: openai, base_url: "http://mock.test/v1", retry: {{max_retries: {retries}, base_delay_ms: 10}}}}
models:
  flaky: {{provider: mock, model: flaky}}
routes:
  bot: {{model: flaky{timeout}}}
"""


@contextlib.asynccontextmanager
async def gateway(tmp_path, mock_model: MockModel, retries: int = 2, timeout: str = ""):
    mock = create_mock(MockConfig(models={"flaky": mock_model}))
    policy = parse_policy(POLICY.format(retries=retries, timeout=timeout))
    app = create_app(Settings(policy=policy, store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway


async def records(gw) -> list[dict]:
    await gw.recorder.flush()
    return sorted(await gw.store.query_records(), key=lambda r: r["attempt"])


async def test_a_503_is_retried_on_the_same_upstream_and_each_attempt_recorded(tmp_path) -> None:
    async with gateway(tmp_path, MockModel(fault="http_503", fault_count=2)) as (client, gw):
        r = await client.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "x"}]})
        rows = await records(gw)
    assert r.status_code == 200
    assert [(x["attempt"], x["attempt_reason"], x["upstream_status"], x["served"]) for x in rows] == [
        (1, "primary", 503, False), (2, "retry", 503, False), (3, "retry", 200, True)]


async def test_retry_after_is_honoured(tmp_path) -> None:
    async with gateway(tmp_path, MockModel(fault="http_429", fault_count=1, retry_after=0.3)) as (client, gw):
        r = await client.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "x"}]})
        first, second = await records(gw)
    assert r.status_code == 200 and second["attempt_reason"] == "retry"
    assert second["started_at"] - first["ended_at"] >= 0.29  # waited what the upstream asked (tolerant bound)


async def test_no_retry_when_the_wait_would_pass_the_routes_deadline(tmp_path) -> None:
    model = MockModel(fault="http_429", fault_count=1, retry_after=5)
    async with gateway(tmp_path, model, timeout=", timeout: 1") as (client, gw):
        r = await client.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "x"}]})
        rows = await records(gw)
    assert r.status_code == 429 and len(rows) == 1


async def test_no_retries_configured_means_one_attempt(tmp_path) -> None:
    async with gateway(tmp_path, MockModel(fault="http_503", fault_count=1), retries=0) as (client, gw):
        r = await client.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "x"}]})
        rows = await records(gw)
    assert r.status_code == 502 and len(rows) == 1  # an upstream 5xx is a 502 naming the upstream


async def test_no_retry_after_the_first_streamed_byte(tmp_path) -> None:
    async with gateway(tmp_path, MockModel(fault="error_event_mid_stream", chunks=6)) as (client, gw):
        r = await client.post("/v1/chat/completions", json={
            "model": "bot", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        rows = await records(gw)
    assert r.status_code == 200 and '"error"' in r.text  # the client got the start of the answer, then the error
    assert len(rows) == 1 and rows[0]["outcome"] == "stream_cut"  # and nothing was retried
