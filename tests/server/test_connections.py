"""Slow, idle and surplus client connections against a real `sluicegate serve` (issue 17, finding 8).

Each test talks raw TCP to the gateway process and checks what the server did with its own
descriptors (/proc/PID/fd), not only what the client saw: a connection the server still holds is an
open descriptor there.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")

POLICY = """\
providers:
  mock: {{kind: openai, base_url: "http://127.0.0.1:{mock_port}/v1"}}
models:
  prod: {{provider: mock, model: gpt-mock}}
routes:
  bot: {{model: prod, capture: refs_only}}
server: {{header_timeout: {header}, idle_timeout: {idle}, max_connections: {cap}}}
"""
SLACK = 2.0  # seconds on top of a deadline: a loaded 2-core machine fires timers late


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log: Path

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def settled_fds(self) -> int:
        """The descriptor count once it stops moving (a readiness probe's connection may be closing)."""
        last = self.fds()
        for _ in range(20):
            time.sleep(0.1)
            if (now := self.fds()) == last:
                return now
            last = now
        return last

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def logs(self) -> str:
        return self.log.read_text()


def serve(tmp: Path, *, header: float, idle: float, cap: int) -> Iterator[Served]:
    mock_port, port = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.format(mock_port=mock_port, header=header, idle=idle, cap=cap))
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--policy", str(policy), "--port", str(port),
             "--store", f"sqlite:///{tmp}/store.db", "--log-format", "json", "--mock-upstream",
             f"127.0.0.1:{mock_port}"], stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    served = Served(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"serve exited:\n{served.logs()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"serve not ready:\n{served.logs()[-3000:]}"
            time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serve(tmp_path_factory.mktemp("conn"), header=1.0, idle=1.0, cap=4096)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bool, bytes, float]:
    """(closed by the server within `within` s, what it sent, seconds until the close)."""
    start = time.monotonic()
    data = b""
    while (left := within - (time.monotonic() - start)) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return True, data, time.monotonic() - start
        if not chunk:
            return True, data, time.monotonic() - start
        data += chunk
    return False, data, time.monotonic() - start


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, leaving the connection open."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def wait_fds(served: Served, at_most: int, within: float) -> int:
    deadline = time.monotonic() + within
    while (n := served.fds()) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def chat_request(body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body))


CHAT = json.dumps({"model": "bot", "messages": [{"role": "user", "content": "hello " * 200}]}).encode()


def test_connections_that_never_send_a_byte_are_closed_and_their_descriptors_released(gateway: Served) -> None:
    before = gateway.settled_fds()
    start = time.monotonic()
    socks = [gateway.connect() for _ in range(50)]
    try:
        time.sleep(0.3)
        assert gateway.fds() >= before + 45  # the server holds them: one descriptor each
        first = read_until_closed(socks[0], 1.0 + SLACK)
        assert first[0] and time.monotonic() - start >= 0.8  # at the idle deadline, not at once
        rest = [read_until_closed(sock, 1.0 + SLACK - (time.monotonic() - start)) for sock in socks[1:]]
    finally:
        for sock in socks:
            sock.close()
    assert all(closed for closed, _, _ in [first, *rest]), "an idle connection outlived server.idle_timeout"
    assert all(data == b"" for _, data, _ in [first, *rest])  # closed silently: no request, no answer
    assert wait_fds(gateway, before + 2, 5.0) <= before + 2


def test_a_client_dripping_its_headers_is_closed_with_a_408(gateway: Served) -> None:
    sock = gateway.connect()
    head = chat_request(CHAT)
    start = time.monotonic()
    try:
        for byte in head:  # one byte every 0.5 s: each byte is activity, so only a header deadline helps
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            ready, _, _ = select.select([sock], [], [], 0.5)
            if ready:
                break
            assert time.monotonic() - start < 1.0 + SLACK, "still open past server.header_timeout"
        closed, data, _ = read_until_closed(sock, SLACK)
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    assert closed and elapsed < 1.0 + 2 * SLACK
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_a_keep_alive_connection_is_closed_when_idle_after_a_response(gateway: Served) -> None:
    sock = gateway.connect()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        closed, data, seconds = read_until_closed(sock, 1.0 + SLACK)
    finally:
        sock.close()
    assert closed and data == b"" and seconds >= 0.5


def test_dripping_the_next_request_after_a_response_does_not_keep_the_connection(gateway: Served) -> None:
    """uvicorn's keep-alive timer is cancelled by any byte and armed again only after a response."""
    sock = gateway.connect()
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert read_response(sock)[0] == 200
        start = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-padding: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if select.select([sock], [], [], 0.5)[0]:
                closed, _, _ = read_until_closed(sock, SLACK)
                break
        elapsed = time.monotonic() - start
    finally:
        sock.close()
    assert closed and elapsed < 1.0 + 2 * SLACK


def test_a_slow_but_steady_upload_is_not_cut_by_the_header_deadline(gateway: Served) -> None:
    """Headers at once, then the body over ~3 s (3× header_timeout): the body has its own deadline."""
    sock = gateway.connect()
    try:
        sock.sendall(chat_request(CHAT))
        pieces = [CHAT[i:i + len(CHAT) // 6 + 1] for i in range(0, len(CHAT), len(CHAT) // 6 + 1)]
        for piece in pieces:
            time.sleep(0.5)
            sock.sendall(piece)
        sock.settimeout(30)
        status, _, body = read_response(sock)
    finally:
        sock.close()
    assert status == 200, body
    assert json.loads(body)["object"] == "chat.completion"


def test_connections_past_the_cap_get_a_503_and_are_closed_and_service_recovers(
        tmp_path: Path) -> None:
    cap = 8
    for served in serve(tmp_path, header=30.0, idle=30.0, cap=cap):
        before = served.settled_fds()
        held = [served.connect() for _ in range(cap)]
        time.sleep(0.3)
        assert served.fds() >= before + cap
        extra = [served.connect() for _ in range(5)]
        outcomes = [read_until_closed(sock, SLACK) for sock in extra]
        for sock in extra:
            sock.close()
        for closed, data, _ in outcomes:
            assert closed, "a connection past server.max_connections was kept"
            if data:  # the 503 (a reset would also be a refusal, but the drain should prevent it)
                assert data.startswith(b"HTTP/1.1 503")
                assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
        assert any(data for _, data, _ in outcomes), "no refused client read the 503"
        # an HTTP client that sends its request at once reads the 503 too (not a reset)
        refused = httpx.post(f"http://127.0.0.1:{served.port}/v1/chat/completions", content=CHAT,
                             headers={"content-type": "application/json"}, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_connections"
        assert wait_fds(served, before + cap + 2, 3.0) <= before + cap + 2  # the refused ones are let go
        # the held ones were still served: a request on one of them works
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        assert read_response(held[0])[0] == 200
        for sock in held:
            sock.close()
        assert wait_fds(served, before + 2, 5.0) <= before + 2
        r = httpx.post(f"http://127.0.0.1:{served.port}/v1/chat/completions", content=CHAT,
                       headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(0.3)  # the deferred log flush
        lines = [json.loads(line) for line in served.logs().splitlines()
                 if line.startswith("{") and "connections.over_cap" in line]
        assert len(lines) == 1, lines  # one line for the burst, not one per refusal
        assert lines[0]["max_connections"] == cap and lines[0]["level"] == "warning"


def test_a_reloaded_policy_applies_its_limits_to_new_connections(tmp_path: Path) -> None:
    for served in serve(tmp_path, header=30.0, idle=30.0, cap=4096):
        before = served.connect()  # opened under idle_timeout 30
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy.read_text().replace("idle_timeout: 30.0", "idle_timeout: 1.0"))
        served.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "policy_reloaded" not in served.logs():
            assert time.monotonic() < deadline, served.logs()[-2000:]
            time.sleep(0.05)
        after = served.connect()
        try:
            closed, _, seconds = read_until_closed(after, 1.0 + SLACK)
            assert closed and seconds >= 0.5
            assert not read_until_closed(before, 0.5)[0]  # the connection opened before keeps its 30 s
        finally:
            before.close()
            after.close()


@pytest.mark.parametrize("field", ["header_timeout: 0", "idle_timeout: -1", "max_connections: 0"])
def test_connection_limits_must_be_positive(field: str) -> None:
    from proxy.config import parse_policy

    policy = "providers:\n  mock: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}\nserver: {%s}\n" % field
    with pytest.raises(Exception, match=f"server.{field.split(':')[0]}"):
        parse_policy(policy)
