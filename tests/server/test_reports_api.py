"""GET /v1/reports and /v1/reports/{route}, in-process; JSON equals build_report's."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from proxy.config import parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.reports import build_report, policy_sections, report_inputs
from proxy.server import Settings, create_app
from proxy.server._reports_api import reports, route_report

POLICY = """
providers:
  mock: {kind: openai, base_url: 'http://mock.test/v1'}
models:
  a: {provider: mock, model: gpt-a}
  b: {provider: mock, model: gpt-b}
routes:
  bot: {split: {a: 50, b: 50}, capture: full}
metrics:
  ok: {type: boolean, level: inference, goal: maximize}
"""

VOLATILE = ("generated_at", "timings")


def strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in VOLATILE}


async def test_reports_api(tmp_path):
    transport = httpx.ASGITransport(app=create_mock())
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": transport}))
    have = {getattr(r, "path", None) for r in app.router.routes}
    if "/v1/reports" not in have:  # the lead mounts these in _app.py
        app.router.routes.insert(0, Route("/v1/reports", reports, methods=["GET"]))
        app.router.routes.insert(0, Route("/v1/reports/{route}", route_report, methods=["GET"]))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            for i in range(6):
                r = await client.post("/v1/chat/completions", json={
                    "model": "bot", "messages": [{"role": "user", "content": f"hi {i}"}], "user": f"u{i}"})
                assert r.status_code == 200
            gateway = app.state.gateway
            await gateway.recorder.flush()
            got = (await client.get("/v1/reports")).json()
            assert sum(a["requests"] for a in got["routes"][0]["arms"]) == 6
            expected = await build_report(gateway.store, **report_inputs(gateway.policy))
            expected.update(await policy_sections(gateway.store, gateway.policy))
            assert strip(got) == strip(expected)
            one = await client.get("/v1/reports/bot", params={"since": "0"})
            assert one.status_code == 200 and [r["route"] for r in one.json()["routes"]] == ["bot"]
            missing = await client.get("/v1/reports/nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["type"] == "invalid_request_error"
            bad = await client.get("/v1/reports", params={"since": "yesterday-ish"})
            assert bad.status_code == 400
