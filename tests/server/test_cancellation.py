"""Abandoned requests: a client that disconnects cancels its upstream call, on every endpoint.

Through a real `sluicegate serve` (uvicorn) and a slow upstream on 127.0.0.1 (tests/_slow_upstream.py),
clients send a request and hang up after ~0.2 s. The upstream is the independent witness: each request
it received must see its connection closed within CLOSE_BOUND_S of its client leaving (else it would
hold it 60 s), and a request given up on before it was sent must never reach it. After the gateway
has shut down, the store must hold a `cancelled`, not-served record for every abandoned request.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests._slow_upstream import SlowUpstream
from tests.e2e.conftest import Gateway

CLOSE_BOUND_S = 5.0  # the upstream would otherwise hold each connection HOLD_S (60 s)
HANG_UP_S = 0.2

POLICY = """\
providers:
  slow:   {kind: openai, base_url: "{upstream}"}
  capped: {kind: openai, base_url: "{upstream}", max_concurrent: 1, queue_timeout: 60}
  flaky:  {kind: openai, base_url: "{upstream}", retry: {max_retries: 1}}
models:
  hold:        {provider: slow, model: hold}
  hold-stream: {provider: slow, model: hold-stream}
  capped-hold: {provider: capped, model: hold}
  capped-fast: {provider: capped, model: fast}
  busy:        {provider: flaky, model: busy}
routes:
  hold:      {model: hold, capture: full}
  buffered:  {model: hold-stream, capture: full, guards: [{max_chars: 4000}], stream_guard: buffer}
  line:      {model: capped-hold}
  line-fast: {model: capped-fast}
  retried:   {model: busy}
"""

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
ENDPOINTS = {
    "chat.completions": ("/v1/chat/completions", CHAT),
    "completions": ("/v1/completions", {"prompt": "hi"}),
    "embeddings": ("/v1/embeddings", {"input": "hi"}),
}


@pytest.fixture
def upstream() -> Iterator[SlowUpstream]:
    server = SlowUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, upstream: SlowUpstream) -> Iterator[Gateway]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{upstream}", upstream.base_url))
    gw = Gateway(policy, tmp_path / "store.db", tmp_path / "gw.log")
    yield gw
    gw.stop()


async def abandon(gateway: Gateway, path: str, body: dict[str, Any], upstream: SlowUpstream | None = None,
                  after: float = HANG_UP_S) -> float:
    """Send one request and hang up `after` s later (after the upstream received it, when given);
    returns when the client hung up (monotonic). An answer that comes first fails the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    data = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(data)}\r\n\r\n".encode() + data)
    await writer.drain()
    if upstream is not None:
        await until(lambda: any(r["marker"] == body["user"] for r in upstream.arrived()), 10)
    try:
        early = await asyncio.wait_for(reader.read(300), after)
    except TimeoutError:
        early = b""
    writer.close()
    left = time.monotonic()
    assert not early, f"answered before the client left: {early!r}"
    return left


async def until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def stored(gateway: Gateway) -> list[dict[str, Any]]:
    """Every record in the store (read after the gateway stopped: what the recorder kept)."""
    with sqlite3.connect(f"file:{gateway.store}?mode=ro", uri=True) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY started_at, id")]


def assert_closed_in_time(upstream: SlowUpstream, left: dict[str, float]) -> None:
    for marker, gone in left.items():
        assert marker in upstream.closed, f"the upstream call of {marker} was never closed"
        assert upstream.closed[marker] - gone < CLOSE_BOUND_S, f"{marker}'s upstream call outlived its client"


def assert_cancelled(record: dict[str, Any], waiting: str) -> None:
    assert record["outcome"] == "cancelled" and record["served"] is False, record
    assert record["status"] == 499 and record["error"] == f"the client closed the connection {waiting}"
    assert HANG_UP_S * 0.5 <= record["latency_ms"] / 1000 < CLOSE_BOUND_S + HANG_UP_S  # what was spent


async def test_a_client_that_leaves_cancels_its_upstream_call_on_every_endpoint(gateway: Gateway,
                                                                              upstream: SlowUpstream) -> None:
    sent = {f"{endpoint}-{i}": endpoint for endpoint in ENDPOINTS for i in range(8)}
    left = await asyncio.gather(*(abandon(gateway, ENDPOINTS[endpoint][0],
                                          {"model": "hold", "user": marker, **ENDPOINTS[endpoint][1]}, upstream)
                                  for marker, endpoint in sent.items()))
    await leave_mid_body(gateway)
    await until(lambda: set(sent) <= set(upstream.closed), CLOSE_BOUND_S + 5)
    assert_closed_in_time(upstream, dict(zip(sent, left)))
    assert len(upstream.arrived()) == len(sent)  # one upstream call each, none retried
    gateway.stop()
    records = stored(gateway)
    assert len(records) == len(sent)  # none lost, none extra
    assert sorted(r["request"]["user"] for r in records) == sorted(sent)
    for record in records:
        assert record["endpoint"] == sent[record["request"]["user"]]
        assert_cancelled(record, "while waiting for the upstream")
    log = gateway.log_path.read_text()
    assert "Traceback" not in log and "internal_error" not in log  # a client leaving is not our fault
    assert log.count('"status":499') == len(sent) + 1


async def leave_mid_body(gateway: Gateway) -> None:
    """A client that hangs up half-way through its body (nothing routed yet: logged, no record)."""
    _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 b"content-length: 100\r\n\r\n{\"model\": ")
    await writer.drain()
    await asyncio.sleep(HANG_UP_S)
    writer.close()
    await asyncio.sleep(0.3)


async def test_a_buffered_stream_is_cancelled_with_what_had_arrived(gateway: Gateway, upstream: SlowUpstream) -> None:
    markers = [f"buffered-{i}" for i in range(6)]
    left = await asyncio.gather(*(abandon(gateway, "/v1/chat/completions",
                                          {"model": "buffered", "stream": True, "user": m, **CHAT}, upstream)
                                  for m in markers))
    await until(lambda: set(markers) <= set(upstream.closed), CLOSE_BOUND_S + 5)
    assert_closed_in_time(upstream, dict(zip(markers, left)))
    gateway.stop()
    records = stored(gateway)
    assert len(records) == len(markers)
    for record in records:
        assert_cancelled(record, "while waiting for the upstream")
        assert record["upstream_status"] == 200 and record["response_bytes"] > 0  # the one chunk it had sent
        assert record["response"]["choices"][0]["message"]["content"] == "partial"


async def test_requests_waiting_in_a_providers_line_are_cancelled_and_never_sent(gateway: Gateway,
                                                                                 upstream: SlowUpstream) -> None:
    head = asyncio.create_task(abandon(gateway, "/v1/chat/completions",
                                       {"model": "line", "user": "line-0", **CHAT}, upstream, after=1.5))
    await until(lambda: upstream.arrived(), 10)  # line-0 holds the provider's one slot until the others left
    markers = [f"line-{i}" for i in range(1, 9)]
    await asyncio.gather(*(abandon(gateway, "/v1/chat/completions", {"model": "line", "user": m, **CHAT})
                           for m in markers))
    left = await head
    await until(lambda: "line-0" in upstream.closed, CLOSE_BOUND_S + 5)
    assert_closed_in_time(upstream, {"line-0": left})
    async with httpx.AsyncClient(timeout=10) as http:  # the slots came back: the line is empty again
        after = await http.post(f"{gateway.url}/v1/chat/completions", json={"model": "line-fast", **CHAT})
    assert after.status_code == 200
    await asyncio.sleep(0.3)
    assert [r["marker"] for r in upstream.arrived("hold")] == ["line-0"]  # the ones in line were never sent
    gateway.stop()
    records = {r["request"]["user"] if r["request"] else None: r for r in stored(gateway) if r["route"] == "line"}
    assert len(records) == 1 + len(markers)
    assert_cancelled(records["line-0"], "while waiting for the upstream")
    for marker in markers:
        assert_cancelled(records[marker], "while waiting in line for provider 'capped' (its max_concurrent)")
        assert records[marker]["upstream_status"] is None


async def test_a_request_waiting_to_retry_is_cancelled_and_not_retried(gateway: Gateway,
                                                                       upstream: SlowUpstream) -> None:
    markers = [f"retry-{i}" for i in range(4)]
    await asyncio.gather(*(abandon(gateway, "/v1/chat/completions", {"model": "retried", "user": m, **CHAT},
                                   upstream) for m in markers))
    await asyncio.sleep(0.5)
    assert sorted(r["marker"] for r in upstream.arrived()) == markers  # one call each: the retries never went
    gateway.stop()
    records = stored(gateway)
    assert len(records) == 2 * len(markers)
    first = [r for r in records if r["attempt"] == 1]
    retries = [r for r in records if r["attempt"] == 2]
    assert all(r["outcome"] == "upstream_error" and r["upstream_status"] == 503 for r in first)
    assert len(retries) == len(markers) and {r["request_id"] for r in retries} == {r["request_id"] for r in first}
    for record in retries:
        assert record["attempt_reason"] == "retry"
        assert_cancelled(record, "while waiting to retry")
