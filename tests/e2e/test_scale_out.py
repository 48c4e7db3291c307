"""The scale-out topology with real processes (no Docker engine here): PostgreSQL- and Redis-backed
`sluicegate serve` ×2 and `sluicegate worker` ×2. Traffic to both replicas; then the records, scores,
outcomes and report must be complete and the same from either replica, the work shared with nothing
scored twice, and one canary controller (PostgreSQL advisory lock) among the replicas."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import time
import zlib
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests._services import POSTGRES_URL, postgres_url, redis_stream, redis_url  # noqa: F401 (fixtures)
from tests.e2e.conftest import SLUICEGATE, Gateway, Proc, free_port

pytestmark = pytest.mark.e2e

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}'}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  cand: {provider: mock, model: gpt-mock-candidate}
metrics:
  resolved: {type: boolean, level: inference, goal: maximize}
scorers:
  short: {kind: rule, max_chars: 20, taxonomy: verbose}
routes:
  bot:
    split: {prod: 50, cand: 50}
    capture: full
    scorers: [short]
    sampling: {default: 1.0}
  ramp:
    canary: {baseline: prod, candidate: cand, stages: [10, 50, 100], min_samples: 1000,
             success_metric: resolved, evaluate_every_s: 1}
    capture: refs_only
"""
N = 120


def pg_dsn_schema(url: str) -> tuple[str, str]:
    base, _, query = url.partition("?schema=")
    return base, query


async def pg(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    base, schema = pg_dsn_schema(url)
    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def wait_for(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_replicas_and_two_workers_on_postgres_and_redis(tmp_path: Path, mock_upstream: str, postgres_url: str,
                                                            redis_url: str, redis_stream: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{mock}", mock_upstream + "/v1"))
    queue = ["--queue", redis_url, "--queue-stream", redis_stream]
    migrated = subprocess.run([*SLUICEGATE, "migrate", "--store", postgres_url], capture_output=True, text=True,
                              timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    replicas = [Gateway(policy, postgres_url, tmp_path / f"gw{i}.log", args=["--scoring", "external", *queue])
                for i in range(2)]
    metrics_port = free_port()
    workers = [Proc([*SLUICEGATE, "worker", "--policy", str(policy), "--store", postgres_url, *queue,
                     "--consumer", f"w{i}", "--batch", "1", *(["--metrics-port", str(metrics_port)] if i == 0 else [])],
                    tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        wait_for(lambda: all("worker.started" in w.log_path.read_text() for w in workers))
        sent: dict[str, str] = {}
        with httpx.Client(timeout=10) as client:
            for i in range(N):
                gw = replicas[i % 2]
                r = client.post(f"{gw.url}/v1/chat/completions", headers={"x-sluicegate-user": f"u{i}"},
                                json={"model": "bot", "messages": [{"role": "user", "content": f"question {i}"}]})
                assert r.status_code == 200, r.text
                sent[r.headers["x-sluicegate-request-id"]] = r.headers["x-sluicegate-variant"]
            for i, rid in enumerate(sent):  # feedback to the other replica than the one that served
                r = client.post(f"{replicas[(i + 1) % 2].url}/v1/feedback",
                                json={"request_id": rid, "metric": "resolved", "value": i % 3 != 0})
                assert r.status_code == 202 and r.json()["verified"], r.text

        def count(table: str) -> int:
            return asyncio.run(pg(postgres_url, f"SELECT count(*) FROM {table}"))[0][0]

        wait_for(lambda: count("records") == N and count("outcomes") == N and count("scores") == N)
        stored = {r["request_id"]: r["variant"]
                  for r in asyncio.run(pg(postgres_url, "SELECT request_id, variant FROM records"))}
        assert stored == sent  # every request, recorded once, with the variant the client was told
        scored = asyncio.run(pg(postgres_url, "SELECT count(DISTINCT record_id), count(*) FROM scores"))[0]
        assert tuple(scored) == (N, N)

        reports = [httpx.get(f"{gw.url}/v1/reports/bot", timeout=30).json() for gw in replicas]
        for report in reports:
            report.pop("generated_at"), report.pop("timings")
        assert reports[0] == reports[1]  # the same store: the same report from either replica
        arms = {a["variant"]: a for a in reports[0]["routes"][0]["arms"]}
        assert sum(a["requests"] for a in arms.values()) == N
        assert sum(a["metrics"]["resolved"]["n"] for a in arms.values()) == N
        assert {v: arms[v]["requests"] for v in arms} == {v: list(sent.values()).count(v) for v in arms}
        assert sum(reports[0]["scores"]["routes"]["bot"][v]["short"]["n"] for v in arms) == N

        # the worker's own metrics: what it scored (gateways with --scoring external score nothing)
        worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        scored_here = float(next(line.split()[-1] for line in worker_metrics.splitlines()
                                 if line.startswith('sluicegate_scored_total{scorer="short"}')))
        assert 0 < scored_here <= N

        # one controller: the advisory lock is held by exactly one session
        key = zlib.crc32(f"{pg_dsn_schema(postgres_url)[1]}:canary-controller".encode())
        wait_for(lambda: asyncio.run(pg(POSTGRES_URL, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                                      "AND objid = $1::bigint::oid AND granted",
                                        key & 0xFFFFFFFF))[0][0] == 1, timeout=10)
    finally:
        for worker in workers:
            worker.stop()
        for gw in replicas:
            gw.stop()
    scored = [ast.literal_eval(w.log_path.read_text().rsplit("scored: ", 1)[1].splitlines()[0])["scored"]
              for w in workers]  # each worker's summary, printed when SIGTERM stopped it
    assert sum(scored) == N and min(scored) > 0  # shared out, nothing scored twice, nothing lost
