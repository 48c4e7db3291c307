"""Conditional routing: `when:` entries pick the model or split by tag, header or metadata; first
match wins; everything else gets the route's own split."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from proxy.config import PolicyError, parse_policy
from proxy.mock_upstream import create_app as create_mock
from proxy.server import Settings, create_app

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
  cand: {provider: mock, model: gpt-cand}
routes:
  bot:
    split: {prod: 50, cand: 50}
    capture: refs_only
    when:
      - {match: {tag: sensitive}, model: prod}
      - {match: {header: {x-tier: gold}}, model: cand}
      - {match: {metadata: {plan: beta}}, split: {prod: 0, cand: 100}}
"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path, policy: str = POLICY):
    app = create_app(Settings(policy=parse_policy(policy), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": httpx.ASGITransport(app=create_mock())}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client


async def variant(client: httpx.AsyncClient, i: int, headers: dict | None = None, metadata: dict | None = None) -> str:
    body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "user": f"u{i}"}
    if metadata:
        body["metadata"] = metadata
    r = await client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.headers["x-sluicegate-variant"]


async def test_first_match_wins_and_the_rest_get_the_split(tmp_path: Path) -> None:
    async with running(tmp_path) as client:
        sensitive = {await variant(client, i, {"x-sluicegate-tags": "sensitive"}) for i in range(30)}
        # both conditions hold: the first entry (sensitive -> prod) wins over the second
        both = {await variant(client, i, {"x-sluicegate-tags": "sensitive", "x-tier": "gold"}) for i in range(30)}
        gold = {await variant(client, i, {"x-tier": "gold"}) for i in range(30)}
        beta = {await variant(client, i, metadata={"plan": "beta"}) for i in range(30)}
        rest = {await variant(client, i) for i in range(60)}
    assert sensitive == {"prod"} and both == {"prod"} and gold == {"cand"} and beta == {"cand"}
    assert rest == {"prod", "cand"}


def test_a_when_entry_needs_a_condition_and_one_target() -> None:
    with pytest.raises(PolicyError, match="match needs at least one"):
        parse_policy(POLICY.replace("{match: {tag: sensitive}, model: prod}", "{match: {}, model: prod}"))
    with pytest.raises(PolicyError, match="exactly one of model, split"):
        parse_policy(POLICY.replace("{match: {tag: sensitive}, model: prod}",
                                    "{match: {tag: sensitive}, model: prod, split: {prod: 100}}"))


async def test_a_caller_key_routes_by_its_hash_and_the_key_never_reaches_the_policy(tmp_path: Path) -> None:
    from proxy.keys import hash_key

    policy = POLICY.replace("    when:\n", f"    when:\n      - {{match: {{key: ['{hash_key('sk-partner-123')}']}}, "
                                           "model: cand}\n")
    async with running(tmp_path, policy) as client:
        partner = {await variant(client, i, {"authorization": "Bearer sk-partner-123"}) for i in range(30)}
        other = {await variant(client, i, {"authorization": "Bearer sk-someone-else",
                                           "x-sluicegate-tags": "sensitive"}) for i in range(30)}
    assert partner == {"cand"} and other == {"prod"}


def test_a_key_given_in_clear_is_refused_without_echoing_it() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(POLICY.replace("{match: {tag: sensitive}, model: prod}",
                                    "{match: {key: [sk-live-secret-value]}, model: prod}"))
    assert "sluicegate keys hash" in str(err.value) and "sk-live-secret-value" not in str(err.value)
