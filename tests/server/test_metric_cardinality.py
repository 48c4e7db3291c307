"""`/metrics` stays bounded whatever callers send (issue 17, finding 9).

The series are counted here from the exposition text (prometheus_client's parser), not from the
registry the code under test keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, create_app as create_mock
from proxy.server import Settings, create_app
from proxy.server._metrics import CODE_LABEL_LIMIT

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
routes:
  bot: {model: prod, capture: refs_only}
metrics:
  ok: {type: boolean, level: inference, goal: maximize}
passthrough: {provider: mock, capture: refs_only}
"""
NAMES = 2000


def series(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def value(all_: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, got, v in all_ if n == name and got == labels)


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=create_mock(MockConfig()))},
                              report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield client, app


async def test_two_thousand_passthrough_models_add_no_series(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app):
        async def ask(model: str) -> httpx.Response:
            r = await client.post("/v1/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            return r

        await ask("bot")
        await ask("caller-model-0")
        first = (await client.get("/metrics")).text
        last_id = ""
        for i in range(1, NAMES):
            last_id = (await ask(f"caller-model-{i}")).headers["x-sluicegate-request-id"]
        body = (await client.get("/metrics")).content
        await app.state.gateway.recorder.flush()
        record = (await app.state.gateway.store.query_records(request_id=last_id))[0]
    after = series(body.decode())
    assert len(after) == len(series(first))  # 1,999 more model names, not one more series
    assert len(body) < 32 * 1024, len(body)  # was 4.1 MB with 2,000 names
    assert not any(v.startswith("caller-model-") for _, labels, _ in after for v in labels.values())
    assert value(after, "sluicegate_requests_total", route="passthrough", variant="passthrough",
                 status="200") == NAMES
    assert value(after, "sluicegate_requests_total", route="bot", variant="prod", status="200") == 1
    assert value(after, "sluicegate_metric_labels_folded_total", label="route") == 0  # passthrough is no fold
    # the model stays in the record
    assert record["model_requested"] == f"caller-model-{NAMES - 1}" and record["variant"] == "passthrough"


def record(**fields: Any) -> SimpleNamespace:
    base = dict(cache_hit=False, route="bot", variant="prod", provider="mock", latency_ms=10.0, upstream_status=200,
                outcome="ok", guards=[], attempt_reason="first", served=True, ttft_ms=None)
    return SimpleNamespace(**{**base, **fields})


async def test_label_values_outside_the_policy_fold_into_other_and_are_counted(tmp_path: Path) -> None:
    """The gateway's own Metrics fed values no policy names (a future label fed from requests, a bug)."""
    async with running(tmp_path) as (client, app):
        metrics = app.state.metrics
        for i in range(500):
            metrics.request(f"route-{i}", "prod", 200, 0.01)  # a route the policy does not name
            metrics.request("bot", f"variant-{i}", 200, 0.01)
            metrics.attempt(record(provider=f"provider-{i}", outcome=f"outcome-{i}",
                                   guards=[{"passed": False, "taxonomy": f"class-{i}", "severity": f"sev-{i}"}]))
        for status in range(100, 600):
            metrics.request("bot", "prod", status, 0.01)
        metrics.request("bot", "prod", 200, 0.01)
        got = series((await client.get("/metrics")).text)
    assert value(got, "sluicegate_requests_total", route="other", variant="prod", status="200") == 500
    assert value(got, "sluicegate_requests_total", route="bot", variant="other", status="200") == 500
    assert value(got, "sluicegate_requests_total", route="bot", variant="prod", status="200") == 2
    # counted per metric updated: a request updates two (count, duration), an erring attempt two (latency, errors)
    assert value(got, "sluicegate_metric_labels_folded_total", label="route") == 500 * 2
    assert value(got, "sluicegate_metric_labels_folded_total", label="variant") == 500 * 2
    assert value(got, "sluicegate_metric_labels_folded_total", label="provider") == 500 * 2
    # labels our code fills keep their first values only (500 statuses → the first 64 and `other`)
    for label in ("status", "outcome", "taxonomy", "severity"):
        distinct = {labels[label] for _, labels, _ in got if label in labels}
        assert len(distinct) <= CODE_LABEL_LIMIT + 1 and "other" in distinct, (label, len(distinct))
    names = {labels.get("route") for _, labels, _ in got} | {labels.get("variant") for _, labels, _ in got}
    assert not any(n and (n.startswith("route-") or n.startswith("variant-")) for n in names)
    assert {labels["provider"] for _, labels, _ in got if "provider" in labels} == {"other"}
    assert len(got) < 1000, len(got)  # 500 × 5 unknown values went in


async def test_report_gauges_keep_only_the_policy_routes(tmp_path: Path) -> None:
    async with running(tmp_path) as (client, app):
        app.state.metrics.report = {("bot", "prod", "ok"): (0.5, 10),
                                    **{(f"caller-model-{i}", "passthrough", "ok"): (1.0, 3) for i in range(NAMES)}}
        got = series((await client.get("/metrics")).text)
    assert value(got, "sluicegate_success_rate", route="bot", variant="prod", metric="ok") == 0.5
    assert [labels for name, labels, _ in got if name in ("sluicegate_success_rate", "sluicegate_outcomes")] == \
        [{"route": "bot", "variant": "prod", "metric": "ok"}] * 2
