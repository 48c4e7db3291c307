"""Time `build_report` over a synthetic record store.

    .venv/bin/python -m bench.reports_bench [--records 1000000] [--path /tmp/reports-bench.db] [--keep]

Builds a SQLite store with the real schema (rows written directly with executemany in one
transaction — the recorder path is not what is measured here): one route, two variants 50/50,
episodes of ~5 requests, 5% of requests with a fallback attempt, 3% with a guard failure, a
redacted-size request/response in `data` (~1 KB a row), inference outcomes for ~30% of requests
and episode outcomes for ~30% of episodes. Then times `build_report` (cold and warm) and prints
the figures. An existing store at --path with the same record count is reused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import time
from pathlib import Path

from proxy.records import open_store
from proxy.records._rows import INDEXED_COLUMNS, REPORT_COLUMNS
from proxy.records._rows import row_params as _row_params

ROUTE = "support-bot"
VARIANTS = ("prod", "cand")
RATES = {"prod": 0.70, "cand": 0.73}
T0 = 1_760_000_000.0

def _record(rng: random.Random, i: int, req: int, attempt: int, reason: str, variant: str,
            served: bool, episode: str, t: float) -> tuple:
    model = f"gpt-{variant}"
    lat = rng.lognormvariate(6.0 if variant == "prod" else 6.1, 0.5)
    guards = []
    if served and rng.random() < 0.03:
        cls = rng.choice(("refusal", "schema_violation", "pii_leak"))
        guards = [{"guard": cls, "passed": False, "taxonomy": cls,
                   "severity": "critical" if cls == "pii_leak" else "major", "detail": "x", "pointer": ""}]
    fp = "fp_a" if t < T0 + 20 * 86400 or variant == "prod" else "fp_b"
    data = {
        "id": f"att_{i:012x}", "request_id": f"req_{req:012x}", "attempt": attempt, "attempt_reason": reason,
        "endpoint": "chat.completions", "route": ROUTE, "variant": variant, "provider": "mock",
        "model_requested": model, "started_at": t, "experiment": ROUTE, "served": served,
        "episode_id": episode, "user_id": f"u{req % 5000}", "capture": "redacted",
        "request": {"messages": [{"role": "system", "content": "You are a support agent. " * 8},
                                 {"role": "user", "content": "Where is my order [REDACTED] please? " * 4}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "It ships tomorrow. " * 10},
                                  "finish_reason": "stop"}]},
        "model_served": model, "system_fingerprint": fp, "finish_reason": "stop",
        "usage": {"prompt_tokens": 120 + req % 50, "completion_tokens": 40 + req % 30, "total_tokens": 0},
        "cost_usd": 0.0002 + (req % 7) * 1e-5, "latency_ms": lat, "ttft_ms": lat / 3,
        "status": 200 if served else 502, "outcome": "ok" if served else "upstream_error", "guards": guards,
    }
    return tuple(_row_params(data))  # the store's own encoding: indexed and report columns, data

def build(path: str, n_records: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    params: list[tuple] = []
    outcomes: list[tuple] = []
    insert = (f"INSERT INTO records (id, {', '.join(INDEXED_COLUMNS)}, {', '.join(REPORT_COLUMNS)}, data) "
              f"VALUES ({', '.join('?' * (len(INDEXED_COLUMNS) + len(REPORT_COLUMNS) + 2))})")
    ins_out = ("INSERT INTO outcomes (id, metric, value, level, received_at, request_id, episode_id, source, data) "
               "VALUES (?,?,?,?,?,?,?,?,?)")
    span = 30 * 86400
    i = req = 0
    ep = 0
    while i < n_records:
        ep += 1
        episode = f"ep_{ep:010x}"
        variant = VARIANTS[ep % 2]
        for _ in range(rng.randint(3, 7)):
            req += 1
            t = T0 + span * i / n_records
            fallback = rng.random() < 0.05 and i + 2 <= n_records  # exactly n_records rows
            i += 1
            params.append(_record(rng, i, req, 1, "primary", variant, not fallback, episode, t))
            if fallback:
                i += 1
                params.append(_record(rng, i, req, 2, "fallback", VARIANTS[1 - ep % 2], True, episode, t + 1))
            if rng.random() < 0.3:
                ok = float(rng.random() < RATES[variant])
                outcomes.append((f"out_{req:012x}", "task_success", ok, "inference", t + 60,
                                 f"req_{req:012x}", None, "app", "{}"))
            if len(params) >= 50_000:
                conn.executemany(insert, params)
                params.clear()
        if rng.random() < 0.3:
            outcomes.append((f"oep_{ep:010x}", "resolved", float(rng.random() < RATES[variant] - 0.1), "episode",
                             T0 + span * i / n_records + 600, None, episode, "app", "{}"))
    conn.executemany(insert, params)
    conn.executemany(ins_out, outcomes)
    conn.execute("COMMIT")
    conn.close()

async def _prepare(path: str, n: int) -> None:
    store = open_store(f"sqlite:///{path}")
    await store.open()  # creates the schema
    try:
        have = await store.count_records()
    finally:
        await store.close()
    if have != n:
        if have:
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
            await _prepare(path, 0)
        t = time.perf_counter()
        build(path, n)
        print(f"built {n:,} records in {time.perf_counter() - t:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)")

async def run(path: str, n: int, repeat: int) -> list[float]:
    from proxy.reports import build_report

    await _prepare(path, n)
    metrics = {"task_success": {"type": "boolean", "level": "inference", "goal": "maximize"},
               "resolved": {"type": "boolean", "level": "episode", "goal": "maximize"}}
    store = open_store(f"sqlite:///{path}")
    await store.open()
    times = []
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            report = await build_report(store, metrics=metrics, weights={ROUTE: {"prod": 50, "cand": 50}})
            times.append(time.perf_counter() - t)
    finally:
        await store.close()
    arms = report["routes"][0]["arms"]
    print(f"records={n:,} requests={sum(a['requests'] for a in arms):,} "
          f"build_report: " + ", ".join(f"{x:.2f} s" for x in times))
    for phase, secs in report.get("timings", {}).items():
        print(f"  {phase:<14} {secs:.3f} s")
    return times

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--path", default="/tmp/sluicegate-reports-bench.db")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the store file afterwards")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.path, args.records, args.repeat))
    finally:
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(args.path + suffix).unlink(missing_ok=True)

if __name__ == "__main__":
    main()
