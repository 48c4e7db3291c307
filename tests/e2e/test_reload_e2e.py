"""SIGHUP reloads the policy of a running `sluicegate serve`; a broken file is refused and logged."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', api_key: '${TEST_PROVIDER_KEY}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  bot: {model: prod, capture: refs_only}
"""


def wait_reload(url: str, before: dict | None, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = httpx.get(url + "/readyz", timeout=5).json()
        if ready["reload"] is not None and ready["reload"] != before:
            return ready
        time.sleep(0.05)
    raise AssertionError("no reload seen in /readyz")


def test_sighup_reloads_and_a_broken_file_is_refused(start_gateway, tmp_path, mock_upstream) -> None:
    gateway = start_gateway(POLICY)
    policy_file = tmp_path / "gw.yaml"
    first = httpx.get(gateway.url + "/readyz", timeout=5).json()["policy"]["version"]
    policy_file.write_text(policy_file.read_text() + "  bot2: {model: prod, capture: refs_only}\n")
    gateway.proc.send_signal(signal.SIGHUP)
    ready = wait_reload(gateway.url, None)
    assert ready["reload"]["ok"] and ready["policy"]["version"] != first
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=10,
                   json={"model": "bot2", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    good = ready["policy"]["version"]
    policy_file.write_text(policy_file.read_text().replace("capture: refs_only}\n  bot2", "capture: nope}\n  bot2"))
    gateway.proc.send_signal(signal.SIGHUP)
    ready = wait_reload(gateway.url, ready["reload"])
    assert ready["reload"]["ok"] is False and "routes.bot.capture" in ready["reload"]["error"]
    assert ready["policy"]["version"] == good and gateway.proc.poll() is None
    deadline = time.monotonic() + 5  # log lines are written in batches, at most 0.1 s late
    while "policy_reload_refused" not in gateway.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "policy_reload_refused" in gateway.logs()
