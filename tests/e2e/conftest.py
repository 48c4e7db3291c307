"""Real processes on 127.0.0.1: `sluicegate mock-upstream` and `sluicegate serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PROVIDER_KEY = "sk-test-PROVIDERSECRET-0123456789abcdef"
CALLER_KEY = "sk-caller-CALLERSECRET-9876543210fedcba"
SLUICEGATE = [sys.executable, "-m", "proxy"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, cwd=Path(__file__).parents[2])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text()


class Gateway(Proc):
    def __init__(self, policy: Path, store: Path | str, log: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        """`store`: an SQLite file, or a store URL."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        url = store if isinstance(store, str) else f"sqlite:///{store}"
        super().__init__([*SLUICEGATE, "serve", "--policy", str(policy), "--port", str(self.port),
                          "--store", url, "--log-format", "json", *(args or [])], log,
                         {"TEST_PROVIDER_KEY": PROVIDER_KEY, **(env or {})})
        wait_http(f"{self.url}/readyz", self.proc, log)


def serve_policy(tmp: Path, policy_text: str, mock_upstream: str) -> Iterator[Gateway]:
    """A gateway on a policy text (`{mock}` = the mock's base URL), stopped afterwards."""
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text.replace("{mock}", mock_upstream + "/v1"))
    gateway = Gateway(policy, tmp / "store.db", tmp / "gw.log")
    yield gateway
    gateway.stop()


def records(store: Path, expected: int | None = None, timeout: float = 10.0) -> list[dict]:
    """The records in the store, waiting until at least `expected` are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict] = []
        if store.exists():
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
                try:
                    rows = [json.loads(r[0]) for r in db.execute("SELECT data FROM records ORDER BY started_at, id")]
                except sqlite3.OperationalError:
                    rows = []
        if expected is None or len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def attempts(gateway: Gateway, request_id: str, n: int, timeout: float = 10.0) -> list[dict]:
    """The records of one request's attempts, in order, waiting until `n` are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in records(gateway.store) if r["request_id"] == request_id]
        if len(rows) >= n or time.monotonic() > deadline:
            return sorted(rows, key=lambda r: r["attempt"])
        time.sleep(0.05)


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("mock") / "mock.log"
    proc = Proc([*SLUICEGATE, "mock-upstream", "--port", str(port)], log)
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc.proc, log)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture
def start_gateway(tmp_path: Path, mock_upstream: str):
    """Start `sluicegate serve` on a policy text; `{mock}` in the text is the mock's base URL."""
    started: list[Gateway] = []

    def start(policy_text: str, name: str = "gw", env: dict[str, str] | None = None,
              store: Path | None = None) -> Gateway:
        policy = tmp_path / f"{name}.yaml"
        policy.write_text(policy_text.replace("{mock}", mock_upstream + "/v1"))
        gateway = Gateway(policy, store or tmp_path / f"{name}.db", tmp_path / f"{name}.log", env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
