"""Atomic policy reload: a good file is swapped in at once, a bad one is refused with file, line and
field while the old policy keeps serving, and requests in flight finish on the policy they began with."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from proxy.config import load_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.routing import Splitter
from proxy.server import Settings, create_app

V1 = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  a: {provider: mock, model: model-a}
  b: {provider: mock, model: model-b}
routes:
  bot: {model: a, capture: refs_only}
"""
V2 = V1 + "  bot2: {model: b, capture: refs_only}\n"
BROKEN = V1.replace("capture: refs_only}", "capture: everything}")  # line 7: an unknown capture mode


@contextlib.asynccontextmanager
async def running(tmp_path: Path, latency_ms: float = 0.0, watch_s: float | None = None):
    path = tmp_path / "policy.yaml"
    path.write_text(V1)
    mock = create_mock(MockConfig(default=MockModel(latency_ms=latency_ms)))
    app = create_app(Settings(policy_path=path, policy=load_policy(path), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, watch_policy_s=watch_s))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app, path


def chat(route: str = "bot") -> dict:
    return {"model": route, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_good_file_takes_effect_and_readyz_says_so(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app, path):
        before = app.state.gateway.policy.version
        assert (await client.post("/v1/chat/completions", json=chat("bot2"))).status_code == 404
        path.write_text(V2)
        r = await client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["ok"] and r.json()["previous"] == before
        assert (await client.post("/v1/chat/completions", json=chat("bot2"))).status_code == 200
        ready = (await client.get("/readyz")).json()
    assert ready["policy"]["version"] == r.json()["version"] != before
    assert ready["reload"]["ok"] is True


async def test_a_broken_file_is_refused_with_file_line_and_field_and_the_old_policy_serves(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app, path):
        before = app.state.gateway.policy.version
        adapters = dict(app.state.gateway.providers)
        path.write_text(BROKEN)
        r = await client.post("/admin/reload")
        error = r.json()["error"]
        assert r.status_code == 400 and error["code"] == "policy_invalid"
        assert f"{path}:7" in error["message"] and "routes.bot.capture" in error["message"]
        assert app.state.gateway.policy.version == before
        assert app.state.gateway.providers == adapters  # nothing half-swapped
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        ready = (await client.get("/readyz")).json()
    assert ready["reload"]["ok"] is False and "routes.bot.capture" in ready["reload"]["error"]
    assert ready["policy"]["version"] == before


async def test_requests_in_flight_finish_on_their_policy_with_zero_failures(tmp_path: Path) -> None:
    async with running(tmp_path, latency_ms=150) as (client, app, path):
        v1 = app.state.gateway.policy.version
        inflight = [asyncio.create_task(client.post("/v1/chat/completions", json=chat())) for _ in range(30)]
        await asyncio.sleep(0.05)
        path.write_text(BROKEN)
        assert (await client.post("/admin/reload")).status_code == 400
        path.write_text(V2)
        assert (await client.post("/admin/reload")).status_code == 200
        later = await client.post("/v1/chat/completions", json=chat("bot2"))
        responses = await asyncio.gather(*inflight)
        gw = app.state.gateway
        await gw.recorder.flush()
        rows = await gw.store.query_records()
    assert [r.status_code for r in responses] == [200] * 30 and later.status_code == 200
    started_on = {r["policy_version"] for r in rows if r["route"] == "bot"}
    assert started_on == {v1}  # in flight during both reloads, all on the policy they began with
    assert {r["policy_version"] for r in rows if r["route"] == "bot2"} == {gw.policy.version}


async def test_unchanged_providers_keep_their_pool(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app, path):
        adapter = app.state.gateway.providers["mock"]
        path.write_text(V2)
        assert (await client.post("/admin/reload")).status_code == 200
        assert app.state.gateway.providers["mock"] is adapter
        path.write_text(V2.replace('base_url: "http://mock.test/v1"', 'base_url: "http://mock.test/v1", read_timeout: 9'))
        assert (await client.post("/admin/reload")).status_code == 200
        assert app.state.gateway.providers["mock"] is not adapter


def test_a_weight_change_moves_only_the_users_whose_bucket_changed_hands() -> None:
    before, after = Splitter("bot", {"a": 50, "b": 50}), Splitter("bot", {"a": 60, "b": 40})
    keys = [f"user-{i}" for i in range(20_000)]
    moved = sum(before.assign(k).variant != after.assign(k).variant for k in keys)
    assert abs(moved / len(keys) - 0.10) < 0.01  # 10 points of traffic changed hands, no more
    assert all(after.assign(k).variant == "a" for k in keys if before.assign(k).variant == "a")


async def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_watch_policy_reloads_a_changed_file_and_refuses_a_broken_one(tmp_path: Path) -> None:
    async with running(tmp_path, watch_s=0.05) as (client, app, path):
        reloader = app.state.reloader
        path.write_text(V2)
        await _until(lambda: reloader.reloads == 1)
        assert (await client.post("/v1/chat/completions", json=chat("bot2"))).status_code == 200
        serving = app.state.gateway.policy.version
        path.write_text(BROKEN + "# saved again\n")
        await _until(lambda: reloader.last is not None and not reloader.last["ok"])
        assert app.state.gateway.policy.version == serving and reloader.reloads == 1
        await asyncio.sleep(0.2)  # an unchanged broken file is not retried over and over
        assert reloader.reloads == 1 and reloader.last["error"].count("routes.bot.capture") == 1
        ready = (await client.get("/readyz")).json()
    assert ready["reload"]["ok"] is False
