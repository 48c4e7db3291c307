"""An in-process gateway for the fuzz tests: `create_app` with the mock upstream plugged into the
provider's transport slot (as tests/server/test_inference.py does), driven synchronously through
Starlette's TestClient so hypothesis can run many examples against one running app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from starlette.routing import Route
from starlette.testclient import TestClient

from proxy.config import parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.server import Settings, create_app
from proxy.server._openapi import openapi_json

PROVIDER_KEY = "sk-fuzz-PROVIDER-0123456789abcdef"
MAX_BODY_BYTES = 64 * 1024

# Minimal, refs_only everywhere: one plain route, one with the answer guards and every kind of
# sticky key (so header/body/metadata reading is exercised too), an episode metric for feedback,
# a human scorer so the review API gets past its policy checks.
POLICY = f"""
providers:
  mock: {{kind: openai, base_url: 'http://mock.test/v1', api_key: '{PROVIDER_KEY}'}}
models:
  prod: {{provider: mock, model: gpt-mock-prod}}
  cand: {{provider: mock, model: gpt-mock-cand}}
routes:
  support-bot: {{model: prod, capture: refs_only}}
  guarded:
    split: {{prod: 50, cand: 50}}
    capture: refs_only
    sticky_by: [header:x-sluicegate-episode, metadata:session, body:user]
    guards: [tool_params, json_schema, finish_reason, {{max_chars: 4000}}]
metrics:
  task_success: {{type: boolean, level: episode, goal: maximize}}
  csat: {{type: float, level: inference, goal: maximize}}
scorers:
  review: {{kind: human, rate: 0.0}}
server: {{max_body_bytes: {MAX_BODY_BYTES}, allowed_hosts: [localhost, testserver]}}  # schemathesis' client: testserver
"""
ROUTES = ("support-bot", "guarded")



def fuzz(max_examples: int = 100) -> settings:
    """Deterministic and bounded: CI must not flake, and the whole fuzz suite stays under a minute."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def with_openapi(app: Any) -> Any:
    """Adds `GET /openapi.json` unless the app already serves it (the lead wires it in _app.py)."""
    if not any(getattr(r, "path", None) == "/openapi.json" for r in app.router.routes):
        app.router.routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    return app


def build_gateway(tmp: Path, policy_text: str = POLICY) -> tuple[Any, Any]:
    """(gateway app, mock app); the gateway is not started (its lifespan runs on entering a client)."""
    mock = create_mock()
    transport = httpx.ASGITransport(app=mock)
    app = create_app(Settings(policy=parse_policy(policy_text), store_url=f"sqlite:///{tmp}/fuzz.db",
                              spill_path=tmp / "fuzz.spill.jsonl", transports={"mock": transport},
                              report_metrics_every_s=0))
    return with_openapi(app), mock


@contextlib.contextmanager
def running_gateway(tmp: Path, policy_text: str = POLICY) -> Iterator[TestClient]:
    app, _ = build_gateway(tmp, policy_text)
    # raise_server_exceptions=False: a crash must show as what a client gets (a 500), not as a raise
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as client:
        yield client


def error_problems(response: httpx.Response) -> list[str]:
    """What is wrong with a non-2xx answer as an OpenAI error; [] when it is right."""
    try:
        body = response.json()
    except ValueError:
        return [f"status {response.status_code} body is not JSON: {response.content[:200]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return [f"status {response.status_code} body is not {{'error': {{...}}}}: {str(body)[:200]}"]
    error = body["error"]
    problems = []
    if not isinstance(error.get("message"), str) or not error["message"].strip():
        problems.append(f"error.message missing or empty: {error}")
    if not isinstance(error.get("type"), str) or not error["type"]:
        problems.append(f"error.type missing: {error}")
    for key in ("param", "code"):
        if key not in error:
            problems.append(f"error.{key} absent (OpenAI sends it, null when not applicable): {error}")
        elif error[key] is not None and not isinstance(error[key], str):
            problems.append(f"error.{key} is not a string or null: {error}")
    if PROVIDER_KEY in response.text:
        problems.append("the provider key is in the error body")
    return problems
