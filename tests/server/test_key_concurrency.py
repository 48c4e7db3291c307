"""What one caller key may take: requests in flight (429 `concurrency_limit_exceeded` past its cap,
slots given back when a request or stream ends, however it ends), and what a 404 shows it.

Streams run through a real `sluicegate serve` and a slow upstream on 127.0.0.1 (an in-process ASGI
transport cannot hold a stream open); the rest runs in process on the mock upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from proxy.config import parse_policy
from proxy.keys import hash_key
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.server import Settings, create_app
from tests._slow_upstream import SlowUpstream
from tests.e2e.conftest import Gateway

CAPPED_KEY, OTHER_KEY = "sk-capped-0123456789", "sk-other-abcdef0123"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}

STREAM_POLICY = f"""\
providers:
  slow: {{kind: openai, base_url: "{{upstream}}"}}
models:
  long:  {{provider: slow, model: drip-600}}
  short: {{provider: slow, model: drip-3}}
routes:
  long:  {{model: long, capture: full}}
  short: {{model: short, capture: full}}
auth:
  keys:
    capped: {{hash: "{hash_key(CAPPED_KEY)}", max_concurrent: 2}}
    other:  {{hash: "{hash_key(OTHER_KEY)}"}}
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    upstream = SlowUpstream().start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(STREAM_POLICY.replace("{upstream}", upstream.base_url))
    gw = Gateway(policy, tmp_path / "store.db", tmp_path / "gw.log")
    yield gw
    gw.stop()
    upstream.stop()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class Streams:
    """Streams opened through the gateway, each on its own connection; closing one hangs up."""

    def __init__(self, gateway: Gateway) -> None:
        self.url = f"{gateway.url}/v1/chat/completions"
        self.http = httpx.AsyncClient(timeout=20)
        self.open: list[httpx.Response] = []
        self.readers: dict[int, AsyncIterator[bytes]] = {}  # kept: a dropped reader closes its response

    async def start(self, key: str, route: str = "long") -> httpx.Response:
        request = self.http.build_request("POST", self.url, headers=auth(key),
                                          json={"model": route, "stream": True, "user": uuid.uuid4().hex, **CHAT})
        response = await self.http.send(request, stream=True)
        if response.status_code == 200:
            self.open.append(response)
            reader = self.readers[id(response)] = response.aiter_raw()
            first = await anext(reader)  # the stream is under way: its slot is held
            assert first.startswith(b"data: ")
        else:
            await response.aread()
        return response

    async def admitted(self, key: str, route: str, timeout: float = 5.0) -> httpx.Response:
        """A stream for `key`, retried while its key is at its cap (a slot being given back)."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.start(key, route)
            if response.status_code != 429 or time.monotonic() > deadline:
                return response
            await asyncio.sleep(0.05)

    async def read_to_end(self, response: httpx.Response) -> bytes:
        return b"".join([chunk async for chunk in self.readers[id(response)]])

    async def aclose(self) -> None:
        for response in self.open:
            await response.aclose()
        await self.http.aclose()


def refused_for_concurrency(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "concurrency_limit_exceeded" and limit in error["message"]
    assert response.headers["retry-after"] == "1"


async def test_a_key_at_its_cap_gets_429s_others_do_not_and_slots_come_back(gateway: Gateway) -> None:
    streams = Streams(gateway)
    try:
        first, second = await streams.start(CAPPED_KEY), await streams.start(CAPPED_KEY)
        assert first.status_code == second.status_code == 200
        third = await streams.start(CAPPED_KEY)
        refused_for_concurrency(third, "auth.keys.capped.max_concurrent: 2")
        plain = await streams.http.post(streams.url, headers=auth(CAPPED_KEY), json={"model": "short", **CHAT})
        refused_for_concurrency(plain, "auth.keys.capped.max_concurrent: 2")  # any request, not only streams

        others = [await streams.start(OTHER_KEY) for _ in range(3)]  # another key is unaffected
        assert [r.status_code for r in others] == [200, 200, 200]

        await first.aclose()  # a client that hangs up mid-stream gives its slot back
        short = await streams.admitted(CAPPED_KEY, "short")
        assert short.status_code == 200
        refused_for_concurrency(await streams.start(CAPPED_KEY), "max_concurrent: 2")  # second + short
        assert (await streams.read_to_end(short)).rstrip().endswith(b"data: [DONE]")  # a stream that ends gives it back
        again = await streams.admitted(CAPPED_KEY, "long")
        assert again.status_code == 200
        refused_for_concurrency(await streams.start(CAPPED_KEY), "max_concurrent: 2")  # second + again
    finally:
        await streams.aclose()
    gateway.stop()
    with sqlite3.connect(f"file:{gateway.store}?mode=ro", uri=True) as db:
        records = [json.loads(r[0]) for r in db.execute("SELECT data FROM records")]
    assert len(records) == 7  # the 200s; a refused request never reached an upstream
    assert sum(r["caller"] == "capped" for r in records) == 4
    left = [r for r in records if r["outcome"] == "cancelled"]  # the streams whose clients hung up
    assert len(left) == 6 and all(r["served"] and r["response_bytes"] > 0 for r in left)
    assert all("client closed the connection mid-stream" in r["error"] for r in left)


# --------------------------------------------------------------------------- in process


def policy_text(server: str = "", keys: bool = True, key_extra: str = "") -> str:
    text = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
  boom: {provider: mock, model: boom}
routes:
  bot: {model: prod}
  private: {model: prod}
  broken: {model: boom}
"""
    if keys:
        text += f"""\
auth:
  keys:
    app: {{hash: "{hash_key(CAPPED_KEY)}", routes: [bot, broken]{key_extra}}}
    other: {{hash: "{hash_key(OTHER_KEY)}"}}
"""
    return text + (f"server: {{{server}}}\n" if server else "")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, text: str) -> AsyncIterator[httpx.AsyncClient]:
    mock = create_mock(MockConfig(default=MockModel(latency_ms=300), models={"boom": MockModel(fault="http_500")}))
    app = create_app(Settings(policy=parse_policy(text), store_url=f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client


async def together(client: httpx.AsyncClient, n: int, key: str | None = CAPPED_KEY,
                   route: str = "bot") -> list[httpx.Response]:
    headers = auth(key) if key else {}
    return await asyncio.gather(*(client.post("/v1/chat/completions", headers=headers,
                                              json={"model": route, **CHAT}) for _ in range(n)))


async def test_the_servers_default_cap_applies_to_keys_without_their_own(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text(server="max_concurrent_per_key: 2")) as client:
        answers = await together(client, 3)
        other = await together(client, 2, OTHER_KEY)
    assert sorted(r.status_code for r in answers) == [200, 200, 429]
    refused_for_concurrency(next(r for r in answers if r.status_code == 429), "server.max_concurrent_per_key: 2")
    assert [r.status_code for r in other] == [200, 200]


async def test_a_keys_own_cap_wins_over_the_servers(tmp_path: Path) -> None:
    text = policy_text(server="max_concurrent_per_key: 1", key_extra=", max_concurrent: 3")
    async with running(tmp_path, text) as client:
        answers = await together(client, 4)
    assert sorted(r.status_code for r in answers) == [200, 200, 200, 429]


async def test_the_slot_comes_back_after_errors_and_refusals(tmp_path: Path) -> None:
    text = policy_text(key_extra=", max_concurrent: 1, rate_limit: {requests_per_minute: 3}")
    async with running(tmp_path, text) as client:
        failed = await together(client, 1, route="broken")  # an upstream fault
        missing = await together(client, 1, route="nope")  # refused before the slot was taken
        ok = await together(client, 1)
        limited = [await together(client, 1) for _ in range(3)]  # rate-limited, after the slot was taken
    assert failed[0].status_code == 502 and missing[0].status_code == 404 and ok[0].status_code == 200
    codes = [r[0].json()["error"]["code"] if r[0].status_code != 200 else 200 for r in limited]
    assert codes == [200, "rate_limit_exceeded", "rate_limit_exceeded"]  # never concurrency_limit_exceeded


async def test_an_open_gateway_has_no_per_key_cap(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text(server="max_concurrent_per_key: 1", keys=False)) as client:
        answers = await together(client, 3, key=None)
    assert [r.status_code for r in answers] == [200, 200, 200]


async def test_the_404_lists_only_the_routes_the_key_may_use(tmp_path: Path) -> None:
    async with running(tmp_path, policy_text()) as client:
        limited = await client.post("/v1/chat/completions", headers=auth(CAPPED_KEY), json={"model": "nope", **CHAT})
        everything = await client.post("/v1/chat/completions", headers=auth(OTHER_KEY), json={"model": "nope", **CHAT})
        models = await client.get("/v1/models", headers=auth(CAPPED_KEY))
    assert limited.status_code == everything.status_code == 404
    message = limited.json()["error"]["message"]
    allowed = sorted(m["id"] for m in models.json()["data"])  # the key's routes, as /v1/models lists them
    assert allowed == ["bot", "broken"]
    assert message.endswith(f"the routes you may use are: {', '.join(allowed)} (GET /v1/models lists them)")
    assert "private" not in message
    assert "bot, broken, private" in everything.json()["error"]["message"]
