"""How long one canary evaluation takes on a run of N requests (SQLite, a temporary store).

    .venv/bin/python -m bench.canary_eval --requests 200000

Seeds a canary run of N requests over three days at the 5% stage (20,000 sticky users, an outcome per request),
then times `evaluate` (nothing written) twice and prints the second: the run's two queries and the stratified,
cluster-robust estimates (proxy/canary/_figures.py, _strata.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from proxy.canary._controller import evaluate
from proxy.canary._state import start_runs
from proxy.config import parse_policy
from proxy.records import Outcome, Record, SQLiteStore, new_id

POLICY = """\
providers:
  demo: {kind: openai, base_url: "http://127.0.0.1:8081/v1"}
models:
  prod: {provider: demo, model: a}
  candidate: {provider: demo, model: b}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
routes:
  bot:
    canary: {baseline: prod, candidate: candidate, stages: [5, 25, 50, 100], min_samples: 400,
             success_metric: task_success, guardrails: {guard_failure_rate: {max_increase: 0.02},
             latency_p95_ms: {max_ratio: 1.25}}}
"""


async def run(requests: int, seed: int) -> dict[str, float | int | str]:
    rng = random.Random(seed)
    policy = parse_policy(POLICY)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "canary.db")
        await store.open()
        try:
            start = time.time() - 3 * 86400
            await start_runs(store, policy, now=start)
            rows: list = []
            for i in range(requests):
                t = start + 60 + (3 * 86400 - 120) * i / requests
                user = rng.randrange(20_000)
                variant = "candidate" if rng.random() < 0.05 else "prod"
                r = Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                           endpoint="chat.completions", route="bot", variant=variant, provider="demo",
                           model_requested=variant, started_at=t, served=True, latency_ms=rng.lognormvariate(6.8, 0.5),
                           bucket=user % 10_000, user_id=f"u{user}")
                rows += [r, Outcome(id=new_id("out_"), metric="task_success", value=float(rng.random() < 0.8),
                                    level="inference", received_at=t + 1, request_id=r.request_id)]
                if len(rows) >= 50_000:
                    await store.write_records(rows)
                    rows = []
            await store.write_records(rows)
            elapsed = 0.0
            for _ in range(2):  # the second: warm page cache, as every evaluation after the first
                t0 = time.perf_counter()
                decision = await evaluate(store, policy, "bot", write=False)
                elapsed = time.perf_counter() - t0
            assert decision is not None
            return {"requests": requests, "evaluate_s": round(elapsed, 3), "rule": decision.rule,
                    "periods": decision.figures["periods"]}
        finally:
            await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.requests, args.seed))))


if __name__ == "__main__":
    main()
