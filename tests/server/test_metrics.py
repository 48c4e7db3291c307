"""`/metrics` after a known workload: every family with the values the workload must give."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.server import Settings, create_app
from proxy.server._metrics import report_figures

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
  flaky: {provider: mock, model: gpt-flaky}
  toolish: {provider: mock, model: gpt-tool}
routes:
  bot: {model: prod, capture: full, cache: {ttl: 60}}
  shaky: {model: flaky, fallbacks: [prod], capture: refs_only}
  tools: {model: toolish, guards: [tool_params], capture: refs_only}
  ramp:
    canary: {baseline: prod, candidate: toolish, stages: [5, 50, 100], min_samples: 10, success_metric: ok}
    capture: refs_only
metrics:
  ok: {type: boolean, level: inference, goal: maximize}
"""
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}]


@contextlib.asynccontextmanager
async def running(tmp_path: Path):
    mock = create_mock(MockConfig(models={"gpt-prod": MockModel(), "gpt-flaky": MockModel(fault="http_503"),
                                          "gpt-tool": MockModel(tool_call_fault="invented_param")}))
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_: dict[Any, float], name: str, **labels: str) -> float:
    return all_.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(route: str, **extra: Any) -> dict[str, Any]:
    return {"model": route, "messages": [{"role": "user", "content": "weather in Paris?"}], **extra}


async def test_metrics_after_a_known_workload(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app):
        for _ in range(3):  # one miss, then two cache hits
            assert (await client.post("/v1/chat/completions", json=chat("bot"))).status_code == 200
        streamed = {**chat("bot", stream=True), "messages": [{"role": "user", "content": "and tomorrow?"}]}
        assert (await client.post("/v1/chat/completions", json=streamed)).status_code == 200  # a miss
        for _ in range(2):  # 503 on flaky, answered by the fallback
            assert (await client.post("/v1/chat/completions", json=chat("shaky"))).status_code == 200
        for _ in range(4):  # invented tool parameters: flagged
            assert (await client.post("/v1/chat/completions", json=chat("tools", tools=TOOLS))).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat("nope"))).status_code == 404
        await app.state.gateway.recorder.flush()
        text = (await client.get("/metrics")).text
    m = samples(text)
    assert value(m, "sluicegate_requests_total", route="bot", variant="prod", status="200") == 4
    assert value(m, "sluicegate_requests_total", route="shaky", variant="prod", status="200") == 2
    assert value(m, "sluicegate_requests_total", route="tools", variant="toolish", status="200") == 4
    assert value(m, "sluicegate_requests_total", route="-", variant="-", status="404") == 1
    assert value(m, "sluicegate_request_duration_seconds_count", route="tools", variant="toolish") == 4
    assert value(m, "sluicegate_time_to_first_token_seconds_count", route="bot", variant="prod") == 1
    assert value(m, "sluicegate_upstream_errors_total", provider="mock", outcome="upstream_error") == 2
    assert value(m, "sluicegate_fallbacks_total", route="shaky") == 2
    assert value(m, "sluicegate_guard_failures_total", route="tools", variant="toolish",
                 taxonomy="invented_tool_param", severity="major") == 4
    # upstream calls: bot 1 + stream 1 (the two hits never went upstream) + shaky 2×2 + tools 4
    assert value(m, "sluicegate_upstream_duration_seconds_count", provider="mock") == 10
    assert value(m, "sluicegate_cache_requests_total", result="hit") == 2
    assert value(m, "sluicegate_cache_requests_total", result="miss") == 2  # the first plain and the stream
    assert value(m, "sluicegate_recorder_written_total") == 14  # 12 attempts + 2 cache entries
    assert value(m, "sluicegate_recorder_dropped_total") == 0
    assert value(m, "sluicegate_canary_stage_percent", route="ramp") == 5.0
    # no request id, user or episode ever becomes a label
    assert not any(k in dict(labels) for (_, labels) in m for k in ("request_id", "user", "episode"))


async def test_the_report_gauges_carry_the_success_rate_per_variant(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app):
        ids = []
        for _ in range(4):
            r = await client.post("/v1/chat/completions", json=chat("tools", tools=TOOLS))
            ids.append(r.headers["x-sluicegate-request-id"])
        for i, rid in enumerate(ids):
            await client.post("/v1/feedback", json={"request_id": rid, "metric": "ok", "value": i < 3})
        await app.state.gateway.recorder.flush()
        from proxy.reports import build_report, report_inputs

        gateway = app.state.gateway
        app.state.metrics.report = report_figures(await build_report(gateway.store, **report_inputs(gateway.policy)))
        m = samples((await client.get("/metrics")).text)
    assert value(m, "sluicegate_success_rate", route="tools", variant="toolish", metric="ok") == 0.75
    assert value(m, "sluicegate_outcomes", route="tools", variant="toolish", metric="ok") == 4


async def test_scoring_figures_appear_once_answers_are_scored(tmp_path: Path) -> None:
    policy = POLICY.replace("  tools: {model: toolish, guards: [tool_params], capture: refs_only}",
                            "  tools: {model: toolish, guards: [tool_params], capture: full, scorers: [short],\n"
                            "          sampling: {default: 1.0}}") + \
        "scorers:\n  short: {kind: rule, max_chars: 5, taxonomy: verbose}\n"
    mock = create_mock(MockConfig(models={"gpt-tool": MockModel()}))
    app = create_app(Settings(policy=parse_policy(policy), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=mock)}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            for _ in range(3):
                await client.post("/v1/chat/completions", json=chat("tools"))
            scoring = app.state.gateway.scoring
            for _ in range(100):
                if scoring.stats()["scored"] == 3:
                    break
                await asyncio.sleep(0.02)
            m = samples((await client.get("/metrics")).text)
    assert value(m, "sluicegate_scored_total", scorer="short") == 3
    assert value(m, "sluicegate_scoring_queue_depth") == 0 and value(m, "sluicegate_scoring_dropped_total") == 0


def test_multiprocess_mode_aggregates_counters_across_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, two processes' request counts add up in one /metrics output."""
    import os
    import subprocess
    import sys

    script = (
        "from proxy.server._metrics import Metrics\n"
        "m = Metrics()\n"
        "m.request('bot', 'prod', 200, 0.1)\n"
        "m.request('bot', 'prod', 200, 0.2)\n"
        "import sys; sys.stdout.write(m.render().decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert value(samples(first.stdout), "sluicegate_requests_total", route="bot", variant="prod", status="200") == 2
    assert value(samples(second.stdout), "sluicegate_requests_total", route="bot", variant="prod", status="200") == 4


def test_queue_gauges_read_zero_when_the_redis_group_has_caught_up() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from proxy.server._metrics import _WorkerCollector

    stats = {"scored": 4, "by_scorer": {"short": 4}, "refused": 0,
             "queue": {"backend": "redis", "length": 4, "lag": 0, "pending": 0, "dropped": 1}}
    registry = CollectorRegistry()
    registry.register(_WorkerCollector(lambda: stats))
    m = samples(generate_latest(registry).decode())
    assert value(m, "sluicegate_scoring_queue_depth") == 0 and value(m, "sluicegate_scoring_queue_lag") == 0
    assert value(m, "sluicegate_scored_total", scorer="short") == 4
    assert value(m, "sluicegate_scoring_dropped_total") == 1
