"""A 90/10 split through a real server: 10,000 requests with distinct sticky keys."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  candidate: {provider: mock, model: gpt-mock-candidate}
routes:
  support-bot: {split: {prod: 90, candidate: 10}}
"""


async def test_ten_thousand_distinct_keys_split_90_10_within_two_points(start_gateway):
    gateway = start_gateway(POLICY)
    counts: Counter[str] = Counter()
    first_seen: dict[str, str] = {}
    queue = [f"user-{i}" for i in range(10_000)]

    async def worker(http: httpx.AsyncClient) -> None:
        while queue:
            user = queue.pop()
            response = await http.post("/v1/embeddings", json={"model": "support-bot", "input": "x", "user": user})
            assert response.status_code == 200
            counts[response.headers["x-sluicegate-variant"]] += 1
            first_seen[user] = response.headers["x-sluicegate-variant"]

    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(32)))
        assert sum(counts.values()) == 10_000
        assert abs(counts["prod"] / 100 - 90) <= 2, counts
        assert abs(counts["candidate"] / 100 - 10) <= 2, counts
        # the same key lands on the same variant again
        for user in [f"user-{i}" for i in range(0, 10_000, 50)]:
            response = await http.post("/v1/embeddings", json={"model": "support-bot", "input": "x", "user": user})
            assert response.headers["x-sluicegate-variant"] == first_seen[user]
