"""Outcomes through a real server, then `sluicegate report --json` against what the test itself sent."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import httpx
import orjson
import pytest

from tests.e2e.conftest import records, serve_policy

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}'}
models:
  prod:      {provider: mock, model: gpt-mock-prod}
  candidate: {provider: mock, model: gpt-mock-candidate}
routes:
  support-bot: {split: {prod: 50, candidate: 50}}
metrics:
  task_success:   {type: boolean, level: episode, goal: maximize}
  user_corrected: {type: boolean, level: inference, goal: minimize}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mock_upstream):
    yield from serve_policy(tmp_path_factory.mktemp("outcomes"), POLICY, mock_upstream)


def test_report_counts_equal_what_was_sent(gateway):
    arm_of_episode: dict[str, str] = {}
    requests = Counter()
    corrected: dict[str, list[bool]] = {"prod": [], "candidate": []}
    success: dict[str, list[bool]] = {"prod": [], "candidate": []}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for i in range(80):
            episode = f"ep-{i}"
            for turn in range(1 + i % 2):
                response = http.post("/v1/chat/completions", headers={"x-sluicegate-episode": episode},
                                     json={"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]})
                assert response.status_code == 200
                variant = response.headers["x-sluicegate-variant"]
                arm_of_episode[episode] = variant
                requests[variant] += 1
                if turn == 0 and i % 3 == 0:  # a correction report on some requests, sent twice
                    body = {"request_id": response.headers["x-sluicegate-request-id"], "metric": "user_corrected",
                            "value": i % 2 == 0, "idempotency_key": f"corr-{i}"}
                    assert http.post("/v1/feedback", json=body).status_code == 202
                    assert http.post("/v1/feedback", json=body).status_code == 202  # duplicate: ignored
                    corrected[variant].append(i % 2 == 0)
            ok = i % 4 != 0
            body = {"episode_id": episode, "metric": "task_success", "value": ok, "idempotency_key": f"done-{i}"}
            assert http.post("/v1/feedback", json=body).status_code == 202
            assert http.post("/v1/feedback", json=body).status_code == 202  # duplicate: ignored
            success[arm_of_episode[episode]].append(ok)
    records(gateway.store, sum(requests.values()))
    time.sleep(0.3)  # outcomes ride the same recorder; give its next batch a moment

    policy = gateway.log_path.with_name("policy.yaml")
    out = subprocess.run([sys.executable, "-m", "proxy", "report", "--store", f"sqlite:///{gateway.store}",
                          "--policy", str(policy), "--json"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    route, = orjson.loads(out.stdout)["routes"]
    arms = {arm["variant"]: arm for arm in route["arms"]}
    assert set(arms) == {"prod", "candidate"}
    for variant, arm in arms.items():
        assert arm["requests"] == requests[variant]
        assert arm["episodes"] == sum(1 for v in arm_of_episode.values() if v == variant)
        task = arm["metrics"]["task_success"]
        assert (task["n"], task["successes"]) == (len(success[variant]), sum(success[variant]))
        corr = arm["metrics"]["user_corrected"]
        assert (corr["n"], corr["successes"]) == (len(corrected[variant]), sum(corrected[variant]))
    comparison = next(c for c in route["comparisons"] if c["metric"] == "task_success")
    assert comparison["control"] == "prod" and comparison["candidate"] == "candidate"
    assert comparison["code"] in ("better", "worse", "no_difference", "inconclusive")

    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        api = http.get("/v1/reports/support-bot").json()
    api_arms = {arm["variant"]: arm for arm in api["routes"][0]["arms"]}
    assert {v: a["requests"] for v, a in api_arms.items()} == {v: a["requests"] for v, a in arms.items()}


def test_report_html_and_table_from_the_cli(gateway, tmp_path):
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        assert http.post("/v1/chat/completions", headers={"x-sluicegate-episode": "html-1"},
                         json={"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}).is_success
    records(gateway.store, 1)
    page = tmp_path / "report.html"
    store = f"sqlite:///{gateway.store}"
    html = subprocess.run([sys.executable, "-m", "proxy", "report", "--store", store, "--html", str(page)],
                          capture_output=True, timeout=60)
    assert html.returncode == 0, html.stderr.decode()
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    assert "http://" not in text and "https://" not in text  # opens from disk with no network
    table = subprocess.run([sys.executable, "-m", "proxy", "report", "--store", store], capture_output=True,
                           text=True, timeout=60)
    assert table.returncode == 0 and "support-bot" in table.stdout and "candidate" in table.stdout
