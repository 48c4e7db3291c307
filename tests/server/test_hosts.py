"""`server.allowed_hosts` (issue 17, finding 6): DNS rebinding. A page on evil.example made to
resolve to 127.0.0.1 is same-origin with a local gateway; its `Host: evil.example` gives it away.
An open gateway answers to loopback names only (the upstream, a second server, must receive
nothing); one with keys to any name unless told; the list follows a reload; `sluicegate serve`
on 127.0.0.1, and on 0.0.0.0 with --allow-unauthenticated, still answers at 127.0.0.1:port."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from proxy.config._models import Server
from proxy.server._hosts import HostAllowList, parse_host
from tests.server._sites import CALLER, OPEN_POLICY, running_site

CHAT = {"model": "faq", "messages": [{"role": "user", "content": "hi"}]}
REBINDING = ["evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io", "localhost:99999",
             "evil.example:80@localhost", "local host", "[::1", "[zz::1]:80", ""]


async def _post(site, host: str | None, path: str = "/v1/chat/completions") -> httpx.Response:
    headers = {"host": host} if host is not None else {}
    return await site.client.post(path, json=CHAT, headers=headers)


async def test_an_open_gateway_refuses_a_foreign_host_before_anything(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=OPEN_POLICY, seeded=False) as site:
        before = await site.counts()
        for host in REBINDING:
            response = await _post(site, host)
            assert response.status_code == 421, (host, response.text[:200])
            error = response.json()["error"]
            assert error["code"] == "host_not_allowed" and error["type"] == "invalid_request_error", host
            assert "server.allowed_hosts" in error["message"] and "DNS rebinding" in error["message"], host
            for path in ("/v1/models", "/readyz", "/metrics", "/v1/reports", "/ui", "/review", "/openapi.json"):
                assert (await site.client.get(path, headers={"host": host})).status_code == 421, (host, path)
        assert await site.counts() == before and site.upstream.requests == 0
        # /healthz only says "ok": probes send the pod's address as Host
        assert (await site.client.get("/healthz", headers={"host": "evil.example"})).status_code == 200
        for host in ("localhost", "localhost:8080", "LOCALHOST:1", "localhost.", "127.0.0.1", "127.0.0.1:65535",
                     "[::1]", "[::1]:8080"):
            response = await _post(site, host)
            assert response.status_code == 200, (host, response.text[:200])
        assert site.upstream.requests == 8


async def test_a_request_without_host_is_refused_when_hosts_are_limited(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=OPEN_POLICY, seeded=False) as site:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.0", "method": "GET", "scheme": "http",
                 "path": "/v1/models", "raw_path": b"/v1/models", "query_string": b"", "root_path": "",
                 "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080), "state": {}}
        await site.app(scope, receive, send)
        assert sent[0]["status"] == 421


async def test_with_keys_any_host_is_answered_unless_listed(tmp_path: Path) -> None:
    async with running_site(tmp_path, seeded=False) as site:  # the dashboard's policy: it has caller keys
        response = await site.client.post("/v1/chat/completions", json=CHAT,
                                          headers={**CALLER, "host": "gw.internal:8080"})
        assert response.status_code == 200
        refused_key = await site.client.post("/v1/chat/completions", json=CHAT, headers={"host": "evil.example"})
        assert refused_key.status_code == 401  # the key, not the host, decides here


LISTED = OPEN_POLICY + """server:
  allowed_hosts: [gw.example.com, "*.corp.example", "api.example:8443", "[::1]"]
"""


async def test_listed_hosts_ports_and_subdomains(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=LISTED, seeded=False) as site:
        for host, status in (("gw.example.com", 200), ("GW.example.com:9000", 200), ("a.corp.example", 200),
                             ("a.b.corp.example:1", 200), ("api.example:8443", 200), ("[::1]:1", 200),
                             ("corp.example", 421), ("evilcorp.example", 421), ("api.example", 421),
                             ("api.example:443", 421), ("localhost", 421), ("127.0.0.1", 421),
                             ("gw.example.com.evil.example", 421)):
            assert (await _post(site, host)).status_code == status, host


async def test_a_reload_changes_the_hosts(tmp_path: Path) -> None:
    async with running_site(tmp_path, policy_text=OPEN_POLICY, seeded=False) as site:
        assert (await _post(site, "gw.test")).status_code == 421
        site.policy_path.write_text(OPEN_POLICY.replace("{mock}", "http://mock.test/v1")
                                    + "server: {allowed_hosts: [gw.test]}\n")
        assert (await site.client.post("/admin/reload")).status_code == 200
        assert (await _post(site, "gw.test")).status_code == 200
        assert (await _post(site, "localhost")).status_code == 421  # a reload through it now needs gw.test too


def test_policy_patterns_are_checked() -> None:
    assert Server(allowed_hosts=["GW.Example.com", "*.corp.example", "[::1]:80", "*", "10.0.0.5"]).allowed_hosts == [
        "gw.example.com", "*.corp.example", "[::1]:80", "*", "10.0.0.5"]
    for bad in ("http://gw.example.com", "gw.example.com/path", "a.*.example", "*example.com", "[::1", "[xyz]",
                "user@gw", "gw..example", "gw:port", "gw:99999", "*:8080"):
        with pytest.raises(ValidationError, match="allowed_hosts|host name pattern|IPv6"):
            Server(allowed_hosts=[bad])
    assert Server(public_origins=["https://GW.example.com/", "http://[::1]:8080"]).public_origins == [
        "https://gw.example.com:443", "http://[::1]:8080"]
    for bad in ("gw.example.com", "ftp://gw", "https://gw/path", "https://u:p@gw", "https://gw:99999"):
        with pytest.raises(ValidationError, match="not an origin"):
            Server(public_origins=[bad])


def test_host_parsing() -> None:
    assert parse_host("Example.COM.:8080") == ("example.com", 8080)
    assert parse_host("[::1]:80") == ("[::1]", 80)
    assert parse_host("[::1]") == ("[::1]", None)
    for bad in (None, "", ":80", "a b", "a/b", "a@b", "[::1]x", "a:-1", "a:1:2", "[::1]:99999"):
        assert parse_host(bad) is None, bad
    loopback = HostAllowList.from_patterns(["localhost", "127.0.0.1", "[::1]"])
    assert loopback.admits("localhost:1") and not loopback.admits("localhostx") and not loopback.admits(None)


# --------------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.parametrize("bind", [[], ["--host", "0.0.0.0", "--allow-unauthenticated"]])
def test_sluicegate_serve_answers_at_127_0_0_1_and_refuses_a_rebound_name(tmp_path: Path, bind: list[str]) -> None:
    from tests.e2e.conftest import Gateway

    mock_port = _free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(OPEN_POLICY.replace("{mock}", f"http://127.0.0.1:{mock_port}/v1"))
    gateway = Gateway(policy, tmp_path / "store.db", tmp_path / "serve.log",
                      args=[*bind, "--mock-upstream", f"127.0.0.1:{mock_port}"])
    try:
        assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
        rebound = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                             headers={"host": f"evil.example:{gateway.port}"})
        assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
        named = httpx.get(f"{gateway.url}/v1/models", headers={"host": f"localhost:{gateway.port}"}, timeout=10)
        assert named.status_code == 200
    finally:
        gateway.stop()
