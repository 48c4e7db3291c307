"""A 90/10 split through a real server: 10,000 requests with distinct sticky keys."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
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

    async def variant_for(http: aiohttp.ClientSession, user: str) -> str:
        body = {"model": "support-bot", "input": "x", "user": user}
        async with http.post("/v1/embeddings", json=body) as response:
            assert response.status == 200, await response.text()
            await response.read()
            return response.headers["x-sluicegate-variant"]

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            user = queue.pop()
            first_seen[user] = await variant_for(http, user)
            counts[first_seen[user]] += 1

    # aiohttp, not httpx, as the load generator: httpx's own pool would be the bottleneck here
    async with aiohttp.ClientSession(base_url=gateway.url, connector=aiohttp.TCPConnector(limit=32)) as http:
        await asyncio.gather(*(worker(http) for _ in range(32)))
        assert sum(counts.values()) == 10_000
        assert abs(counts["prod"] / 100 - 90) <= 2, counts
        assert abs(counts["candidate"] / 100 - 10) <= 2, counts
        # the same key lands on the same variant again
        for user in [f"user-{i}" for i in range(0, 10_000, 50)]:
            assert await variant_for(http, user) == first_seen[user]
