"""A canary's stage lives in the store: two gateway processes on one store route the same share,
and after `sluicegate canary promote` both route the new share; every decision is in the log."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from tests.e2e.conftest import PROVIDER_KEY, SLUICEGATE

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  cand: {provider: mock, model: gpt-mock-candidate}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
routes:
  bot:
    canary: {baseline: prod, candidate: cand, stages: [10, 50, 100], min_samples: 50, success_metric: task_success}
    capture: refs_only
"""


def share(url: str, n: int = 400) -> float:
    with httpx.Client(base_url=url, timeout=10) as client:
        got = [client.post("/v1/chat/completions", headers={"x-sluicegate-user": f"user-{i}"},
                           json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]})
               .headers["x-sluicegate-variant"] for i in range(n)]
    return got.count("cand") / n


def test_two_processes_share_the_stage_and_follow_a_promotion(start_gateway, tmp_path) -> None:
    store = tmp_path / "shared.db"
    a = start_gateway(POLICY, name="a", store=store)
    b = start_gateway(POLICY, name="b", store=store)
    assert abs(share(a.url) - 0.10) < 0.05 and abs(share(b.url) - 0.10) < 0.05  # the first stage
    cli = [*SLUICEGATE, "canary", "promote", "bot", "--policy", str(tmp_path / "a.yaml"),
           "--store", f"sqlite:///{store}", "--reason", "looks good"]
    env = {**os.environ, "TEST_PROVIDER_KEY": PROVIDER_KEY}
    done = subprocess.run(cli, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert "10% -> 50%" in done.stdout
    time.sleep(2.5)  # each process re-reads the stages every 2 s
    share_a, share_b = share(a.url), share(b.url)
    assert abs(share_a - 0.50) < 0.07 and abs(share_b - 0.50) < 0.07
    assert share_a == share_b  # same users, same store, same hash: the same variants
    status = subprocess.run([*SLUICEGATE, "canary", "status", "bot", "--policy", str(tmp_path / "a.yaml"),
                             "--store", f"sqlite:///{store}"], capture_output=True, text=True, timeout=30, env=env)
    assert "cand at 50%" in status.stdout and "promote" in status.stdout and "looks good" in status.stdout
