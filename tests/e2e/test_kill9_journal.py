"""`kill -9` of a real `sluicegate serve`: with `--journal`, every answered request's record is in the
store after a restart, once; without it, the records still in memory are lost (the documented window).

The store is held by an exclusive lock (busy timeout 30 s) while requests are answered, so every
record is certainly still in the gateway's memory when the process is killed — the worst case, made
deterministic. A second test kills at a random moment under concurrent load.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Gateway, records

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  bot: {model: prod}
"""


def start(tmp_path: Path, mock_upstream: str, name: str, journal: bool) -> Gateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{mock}", mock_upstream + "/v1"))
    args = ["--spill-path", str(tmp_path / "spill" / "records.spill.jsonl")]
    if journal:
        args += ["--journal", str(tmp_path / "journal" / "records")]
    return Gateway(policy, f"sqlite:///{tmp_path / 'store.db'}?busy_timeout_ms=30000", tmp_path / f"{name}.log",
                   args=args)


def ask(client: httpx.Client, i: int) -> str:
    response = client.post("/v1/chat/completions", json={"model": "bot", "messages": [
        {"role": "user", "content": f"question {i}"}]})
    assert response.status_code == 200, response.text
    return response.headers["x-sluicegate-request-id"]


def answered_while_store_locked(gateway: Gateway, store: Path, n: int) -> list[str]:
    """`n` answered requests while the store cannot be written, then SIGKILL (the lock still held)."""
    lock = sqlite3.connect(store, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            ids = [ask(client, i) for i in range(n)]
            recorder = client.get("/readyz").json()["recorder"]
        assert recorder["spilled"] == 0 and recorder["written"] == 0, recorder  # all still in memory
        gateway.stop(signal.SIGKILL)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    return ids


def request_ids(store: Path) -> list[str]:
    return [row["request_id"] for row in records(store)]


def test_kill9_with_a_journal_loses_no_answered_request(tmp_path: Path, mock_upstream: str) -> None:
    store = tmp_path / "store.db"
    gateway = start(tmp_path, mock_upstream, "first", journal=True)
    ids = answered_while_store_locked(gateway, store, 40)
    assert request_ids(store) == []

    again = start(tmp_path, mock_upstream, "again", journal=True)
    try:
        deadline = time.monotonic() + 15
        while len(stored := request_ids(store)) < len(ids):
            assert time.monotonic() < deadline, f"{len(stored)} of {len(ids)} records after the restart"
            time.sleep(0.1)
        assert sorted(stored) == sorted(ids)  # every answered request, none twice
        journal = httpx.get(f"{again.url}/readyz").json()["recorder"]["journal"]
        assert journal["recovered"] == len(ids)
    finally:
        assert again.stop() == 0
    assert list((tmp_path / "journal").glob("records.[0-9]*")) == []  # stored: a clean stop leaves no journal


def test_kill9_without_a_journal_loses_the_records_in_memory(tmp_path: Path, mock_upstream: str) -> None:
    """The control: the same kill without `--journal` loses every record that was waiting in memory."""
    store = tmp_path / "store.db"
    gateway = start(tmp_path, mock_upstream, "first", journal=False)
    ids = answered_while_store_locked(gateway, store, 40)
    again = start(tmp_path, mock_upstream, "again", journal=False)
    try:
        time.sleep(1.0)
        assert request_ids(store) == []  # all 40 answered requests have no record
        assert len(ids) == 40
    finally:
        again.stop()


def test_kill9_at_a_random_moment_under_load_with_a_journal(tmp_path: Path, mock_upstream: str) -> None:
    store = tmp_path / "store.db"
    gateway = start(tmp_path, mock_upstream, "first", journal=True)
    answered: list[str] = []
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        with httpx.Client(base_url=gateway.url, timeout=5) as client:
            i = seed * 1_000_000
            while not stop.is_set():
                i += 1
                try:
                    answered.append(ask(client, i))
                except (httpx.HTTPError, AssertionError):
                    return  # the gateway is gone: this request was not answered
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.8, 1.6))
    gateway.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(answered) > 20  # the load ran

    again = start(tmp_path, mock_upstream, "again", journal=True)
    try:
        deadline = time.monotonic() + 15
        while not set(answered) <= set(stored := request_ids(store)):
            assert time.monotonic() < deadline, f"{len(set(answered) - set(stored))} answered requests have no record"
            time.sleep(0.1)
        assert len(stored) == len(set(stored))  # none twice (a request cut mid-way may have a record too)
    finally:
        again.stop()
