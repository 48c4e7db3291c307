"""Secret hygiene: a full scenario with recognizable fake keys — provider key, caller keys, admin key,
a wrong key tried by a caller, a key a user pasted into a prompt — then every log line, record (the
SQLite file and its WAL), export, report (JSON, text and HTML), metrics, readiness, review page and
error body is scanned: no key, and no long piece of one, anywhere."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from proxy.keys import hash_key
from tests.e2e.conftest import PROVIDER_KEY, SLUICEGATE, Gateway, records

pytestmark = pytest.mark.e2e

CALLER = "sk-caller-HYGIENE-CALLER-0f1e2d3c4b5a"
ADMIN = "sk-admin-HYGIENE-ADMIN-9a8b7c6d5e4f"
WRONG = "sk-wrong-HYGIENE-WRONG-1122334455667788"
PASTED = "sk-proj-HYGIENEPASTED0123456789abcdefghijklmnop"  # a user pastes a key into a prompt

POLICY = f"""
providers:
  mock: {{kind: openai, base_url: '{{mock}}', api_key: '${{TEST_PROVIDER_KEY}}'}}
  dead: {{kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: '${{TEST_PROVIDER_KEY}}', connect_timeout: 0.5}}
models:
  prod: {{provider: mock, model: gpt-mock-prod}}
  cand: {{provider: mock, model: gpt-mock-candidate}}
  gone: {{provider: dead, model: gpt-gone}}
metrics:
  resolved: {{type: boolean, level: inference, goal: maximize}}
scorers:
  no_keys: {{kind: rule, regex: 'sk-[A-Za-z0-9-]{{20,}}', taxonomy: dangerous_advice}}
taxonomy:
  dangerous_advice: {{severity: critical}}
routes:
  bot:
    split: {{prod: 50, cand: 50}}
    capture: redacted
    guards: [tool_params]
    scorers: [no_keys]
    sampling: {{default: 1.0}}
  broken: {{model: gone, capture: redacted}}
auth:
  keys:
    app: {{hash: "{hash_key(CALLER)}", routes: [bot, broken], rate_limit: {{requests_per_minute: 1000}}}}
  admin_keys: ["{hash_key(ADMIN)}"]
"""
SECRETS = (PROVIDER_KEY, CALLER, ADMIN, WRONG, PASTED)


def pieces(secret: str) -> list[str]:
    """The secret and every 16-character piece of it (a truncated key is still a leak)."""
    return [secret, *(secret[i:i + 16] for i in range(0, len(secret) - 16, 4))]


def test_no_key_anywhere_after_a_full_scenario(tmp_path: Path, mock_upstream: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{mock}", mock_upstream + "/v1"))
    store = tmp_path / "store.db"
    gw = Gateway(policy, store, tmp_path / "gw.log")
    bodies: dict[str, bytes] = {}
    try:
        caller = {"authorization": f"Bearer {CALLER}"}
        admin = {"authorization": f"Bearer {ADMIN}"}
        chat = {"model": "bot", "messages": [{"role": "user", "content": f"my key is {PASTED}, is it safe?"}]}
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            ids = []
            for i in range(6):
                r = c.post("/v1/chat/completions", json={**chat, "user": f"u{i}"}, headers=caller)
                assert r.status_code == 200
                ids.append(r.headers["x-sluicegate-request-id"])
                bodies[f"answer{i}"] = r.content
            with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}, headers=caller) as s:
                bodies["stream"] = b"".join(s.iter_bytes())
            for name, headers, body in (
                ("wrong_key", {"authorization": f"Bearer {WRONG}"}, chat),
                ("no_key", {}, chat),
                ("upstream_down", caller, {**chat, "model": "broken"}),
                ("bad_json", caller, None),
                ("admin_as_caller", {"authorization": f"Bearer {WRONG}"}, None),
            ):
                if body is None and name == "bad_json":
                    r = c.post("/v1/chat/completions", content=b"{not json", headers=caller)
                elif name == "admin_as_caller":
                    r = c.get("/v1/reports", headers=headers)
                else:
                    r = c.post("/v1/chat/completions", json=body, headers=headers)
                assert r.status_code >= 400 and "error" in r.json()
                bodies[name] = r.content
            for rid in ids:
                assert c.post("/v1/feedback", json={"request_id": rid, "metric": "resolved", "value": True},
                              headers=caller).status_code == 202
            records(store, 8)
            time.sleep(1.0)  # the scoring task scores the sampled answers
            for path in ("/v1/reports", "/v1/reports/bot", "/v1/review/next", "/review"):
                r = c.get(path, headers=admin)
                assert r.status_code in (200, 204), (path, r.status_code)
                bodies[path] = r.content
            for path in ("/metrics", "/readyz", "/v1/models"):
                bodies[path] = c.get(path, headers=caller).content
    finally:
        gw.stop()
    cli = [*SLUICEGATE]
    for name, args in (("export", ["export", "--store", f"sqlite:///{store}"]),
                       ("report_text", ["report", "--store", f"sqlite:///{store}", "--policy", str(policy)]),
                       ("report_json", ["report", "--store", f"sqlite:///{store}", "--policy", str(policy), "--json"]),
                       ("report_html", ["report", "--store", f"sqlite:///{store}", "--policy", str(policy),
                                        "--html", str(tmp_path / "report.html")])):
        done = subprocess.run([*cli, *args], capture_output=True, timeout=60,
                              env={"TEST_PROVIDER_KEY": PROVIDER_KEY, "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        bodies[name] = done.stdout + done.stderr
    bodies["report.html"] = (tmp_path / "report.html").read_bytes()
    bodies["logs"] = gw.log_path.read_bytes()
    for suffix in ("", "-wal", ".spill.jsonl"):
        path = Path(f"{store}{suffix}")
        if path.exists():
            bodies[f"store{suffix}"] = path.read_bytes()
    assert b"[SECRET]" in bodies["store"] or b"[SECRET]" in bodies.get("store-wal", b"")  # the pasted key, masked
    # the mock echoes the prompt, so the caller's own answers hold the key the caller pasted: that is the
    # model's answer to its author, not a leak; everywhere else (store, logs, reports…) it must be masked
    leaks = [(where, secret[:12]) for where, data in bodies.items() for secret in SECRETS
             if not (secret == PASTED and where.startswith(("answer", "stream")))
             for piece in pieces(secret) if piece.encode() in data]
    assert not leaks, f"secrets found: {sorted(set(leaks))}"
    assert len(bodies) >= 25  # every output above was scanned
