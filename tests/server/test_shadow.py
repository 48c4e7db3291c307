"""Shadow traffic: a copy to the shadow model in the background — the primary never waits for it,
its record links to the primary, failures and saturation are counted, reports ignore it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.reports import build_report
from proxy.server import Settings, create_app

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
  shadowed: {provider: mock, model: gpt-shadow}
routes:
  bot: {model: prod, capture: full, shadow: {model: shadowed, rate: 1.0}, guards: [max_chars: 5]}
"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path, shadow: MockModel):
    mock = create_mock(MockConfig(models={"gpt-prod": MockModel(), "gpt-shadow": shadow}))
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway


async def ask(client: httpx.AsyncClient) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    return r


async def wait_for(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_slow_shadow_never_delays_the_primary_and_its_record_links_to_it(tmp_path: Path) -> None:
    async with running(tmp_path, MockModel(latency_ms=1500)) as (client, gw):
        r = await ask(client)
        # the primary is back while its shadow is still waiting on the slow model
        assert gw.shadows.stats()["in_flight"] == 1 and gw.shadows.stats()["answered"] == 0
        await wait_for(lambda: gw.shadows.stats()["answered"] == 1)
        await gw.recorder.flush()
        rows = {r["attempt_reason"]: r for r in await gw.store.query_records()}
        report = await build_report(gw.store)
    primary, shadow = rows["primary"], rows["shadow"]
    assert primary["request_id"] == shadow["request_id"] == r.headers["x-sluicegate-request-id"]
    assert (shadow["attempt"], shadow["served"], shadow["variant"]) == (0, False, "shadowed")
    assert shadow["request"]["model"] == "gpt-shadow" and shadow["model_served"]
    assert primary["latency_ms"] < 1000 <= shadow["latency_ms"]
    assert shadow["guards"] and shadow["guards"][0]["guard"] == "max_chars"  # the route's guards ran on it
    assert sum(a["requests"] for a in report["routes"][0]["arms"]) == 1  # reports count primaries only


async def test_a_failing_shadow_is_recorded_and_counted_and_the_primary_is_fine(tmp_path: Path) -> None:
    async with running(tmp_path, MockModel(fault="http_500")) as (client, gw):
        await ask(client)
        await wait_for(lambda: gw.shadows.stats()["failed"] == 1)
        await gw.recorder.flush()
        shadow, = [r for r in await gw.store.query_records() if r["attempt_reason"] == "shadow"]
    assert shadow["upstream_status"] == 500 and shadow["outcome"] == "upstream_error"


async def test_saturation_drops_and_counts(tmp_path: Path) -> None:
    async with running(tmp_path, MockModel(latency_ms=1000)) as (client, gw):
        gw.shadows.max_in_flight = 2
        for _ in range(5):
            await ask(client)
        stats = gw.shadows.stats()
    assert stats["sent"] == 2 and stats["dropped_saturated"] == 3


async def test_the_report_api_pairs_shadows_with_their_primaries(tmp_path: Path) -> None:
    async with running(tmp_path, MockModel()) as (client, gw):
        for _ in range(6):
            await ask(client)
        await wait_for(lambda: gw.shadows.stats()["answered"] == 6)
        await gw.recorder.flush()
        report = (await client.get("/v1/reports/bot")).json()
    pair, = report["shadows"]
    assert (pair["primary"], pair["shadow"], pair["shadowed"], pair["shadow_errors"]) == ("prod", "shadowed", 6, 0)
    # max_chars: 5 fails every mock answer, primary and shadow alike: all pairs concordant
    assert pair["guards"]["pairs"] == 6 and pair["guards"]["neither_pass"] == 6 and pair["guards"]["p_value"] == 1.0
