"""A store that fails does not fail or slow requests, and loses nothing."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.e2e.conftest import records

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  support-bot: {model: prod}
"""


def test_locked_store_spills_then_recovers_every_record(start_gateway):
    gateway = start_gateway(POLICY)
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        assert len(records(gateway.store, 1)) == 1

        lock = sqlite3.connect(gateway.store, timeout=5, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # a real fault: every writer now gets 'database is locked'
        try:
            latencies = []
            for _ in range(150):
                started = time.perf_counter()
                response = http.post("/v1/chat/completions", json=body)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
            deadline = time.monotonic() + 15
            while (ready := http.get("/readyz").json())["recorder"]["spilled"] == 0:
                assert time.monotonic() < deadline, ready
                time.sleep(0.1)
            assert ready["status"] == "degraded"
            assert ready["store"]["writable"] is False
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # no request waited on the locked database (its busy timeout is 2 s)
        assert max(latencies) < 1.5

        deadline = time.monotonic() + 20
        while len(rows := records(gateway.store)) < 151:
            assert time.monotonic() < deadline, f"only {len(rows)} of 151 records after recovery"
            time.sleep(0.2)
        assert len({r["id"] for r in rows}) == 151  # all there, none twice
        stats = http.get("/readyz").json()
        assert stats["status"] == "ready"
        assert stats["recorder"]["dropped"] == 0
        assert stats["recorder"]["replayed"] >= stats["recorder"]["spilled"] > 0


def test_sigterm_flushes_buffered_records(start_gateway):
    gateway = start_gateway(POLICY, name="drain")
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for _ in range(40):
            assert http.post("/v1/chat/completions", json=body).status_code == 200
    assert gateway.stop() == 0
    assert len(records(gateway.store)) == 40
