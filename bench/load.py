"""The load generator (its own process; aiohttp client): open loop at a fixed rate, or closed loop.

    python -m bench.load --url http://127.0.0.1:9102/v1/chat/completions --model bench \
        --mode open --rate 300 --duration 15 --warmup 2 [--stream]
    python -m bench.load --url ... --mode closed --concurrency 64 --duration 10
    python -m bench.load --url ... --mode closed --concurrency 64 --requests 100000 --duration 300 --warmup 0

Open loop: the send times are computed up front (i / rate) and each request is fired at its time
whatever happened to the earlier ones, so a slow server shows as queueing. Latency is measured from
the *scheduled* send time (no coordinated omission); `lag` says how late the generator itself was.
Closed loop: `concurrency` workers send back to back; gives maximum throughput. With `--requests N`
it stops once N measured requests have completed (the ones in flight then still finish and count),
`--duration` being the upper bound.

Prints one JSON object on stdout: counts, errors by kind, achieved RPS, latency / time-to-first-byte
percentiles in ms (streams: time to the first SSE event, to the last byte, and the gaps between
content events as seen by the client).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson

SYSTEM = ("You are the support assistant of Northwind Outfitters. Answer briefly and politely, "
          "use the order tools when the user asks about an order, never invent tracking numbers, "
          "and escalate to a human when the user is angry or asks for a refund above 200 USD.")
USER = ("Hi, I ordered a pair of hiking boots last week (order #48213) and the tracking page has not "
        "changed for three days. Can you tell me where the package is and when it will arrive?")


def body(model: str, i: int, stream: bool) -> bytes:
    obj: dict = {"model": model, "messages": [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": USER}],
                 "temperature": 0.2, "max_tokens": 256, "user": f"user-{i % 997}"}
    if stream:
        obj["stream"] = True
        obj["stream_options"] = {"include_usage": True}
    return orjson.dumps(obj)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return round(s[k], 3)


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": round(max(values), 3) if values else None,
            "mean": round(sum(values) / len(values), 3) if values else None}


class Result:
    def __init__(self) -> None:
        self.latency: list[float] = []
        self.ttfb: list[float] = []
        self.gaps: list[float] = []
        self.lag: list[float] = []
        self.errors: dict[str, int] = {}
        self.ok = 0
        self.bytes = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one(session: aiohttp.ClientSession, url: str, payload: bytes, headers: dict, stream: bool,
              t0: float, res: Result | None, timeout: aiohttp.ClientTimeout) -> None:
    """One request; t0 is the scheduled send time (perf_counter). res=None: warm-up, not recorded."""
    try:
        async with session.post(url, data=payload, headers=headers, timeout=timeout) as resp:
            if not stream:
                data = await resp.read()
                t_end = time.perf_counter()
                t_first = t_end
                if res is not None:
                    res.bytes += len(data)
            else:
                t_first = None
                gaps_seen: list[float] = []
                last_event = None
                n = 0
                buf = b""
                async for piece in resp.content.iter_any():
                    now = time.perf_counter()
                    if t_first is None:
                        t_first = now
                    buf += piece
                    # every complete content event arriving now counts; events batched in one read
                    # show as zero gaps
                    while b"\n\n" in buf:
                        event, _, buf = buf.partition(b"\n\n")
                        if b'"content"' in event:
                            if last_event is not None:
                                gaps_seen.append((now - last_event) * 1000)
                            last_event = now
                            n += 1
                    if res is not None:
                        res.bytes += len(piece)
                t_end = time.perf_counter()
                if t_first is None:
                    t_first = t_end
                if res is not None:
                    res.gaps.extend(gaps_seen)
            if res is None:
                return
            if resp.status != 200:
                res.error(f"http_{resp.status}")
                return
            res.ok += 1
            res.latency.append((t_end - t0) * 1000)
            res.ttfb.append((t_first - t0) * 1000)
    except asyncio.TimeoutError:
        if res is not None:
            res.error("timeout")
    except aiohttp.ClientError as exc:
        if res is not None:
            res.error(type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - count everything, never crash the run
        if res is not None:
            res.error(type(exc).__name__)


async def open_loop(a: argparse.Namespace, session: aiohttp.ClientSession, res: Result) -> float:
    loop_start = time.perf_counter() + 0.05
    n_warm = int(a.warmup * a.rate)
    n_total = n_warm + int(a.duration * a.rate)
    schedule = [loop_start + i / a.rate for i in range(n_total)]  # computed up front
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    payloads = [body(a.model, i, a.stream) for i in range(997)]
    tasks = set()
    measure_start = schedule[n_warm] if n_warm < n_total else loop_start
    for i, t in enumerate(schedule):
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        recording = i >= n_warm
        if recording:
            res.lag.append((time.perf_counter() - t) * 1000)
        headers = {"content-type": "application/json", "x-sluicegate-episode": f"ep-{i % 1000}"}
        task = asyncio.create_task(one(session, a.url, payloads[i % 997], headers, a.stream, t,
                                       res if recording else None, timeout))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    send_end = time.perf_counter()
    if tasks:
        await asyncio.wait(tasks, timeout=a.timeout + 1)
    for task in list(tasks):
        task.cancel()
        res.error("unfinished")
    return max(send_end - measure_start, 1e-9)


async def closed_loop(a: argparse.Namespace, session: aiohttp.ClientSession, res: Result) -> float:
    """Workers back to back; measured for `duration` s, or until `requests` completed (duration = upper bound)."""
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    payloads = [body(a.model, i, a.stream) for i in range(997)]
    state = {"recording": False, "stop": False, "done": 0}
    enough = asyncio.Event()

    async def worker(w: int) -> None:
        i = w
        while not state["stop"]:
            headers = {"content-type": "application/json", "x-sluicegate-episode": f"ep-{i % 1000}"}
            recording = state["recording"]
            await one(session, a.url, payloads[i % 997], headers, a.stream, time.perf_counter(),
                      res if recording else None, timeout)
            i += a.concurrency
            if recording and a.requests:
                state["done"] += 1
                if state["done"] >= a.requests:
                    state["stop"] = True
                    enough.set()

    workers = [asyncio.create_task(worker(w)) for w in range(a.concurrency)]
    await asyncio.sleep(a.warmup)
    state["recording"] = True
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(enough.wait(), timeout=a.duration)
    except asyncio.TimeoutError:
        pass
    state["stop"] = True
    elapsed = time.perf_counter() - t0
    done, pending = await asyncio.wait(workers, timeout=a.timeout + 1)
    for task in pending:
        task.cancel()
    return elapsed


async def run(a: argparse.Namespace) -> dict:
    res = Result()
    connector = aiohttp.TCPConnector(limit=a.connections, limit_per_host=a.connections, force_close=False,
                                     enable_cleanup_closed=False, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        if a.mode == "open":
            elapsed = await open_loop(a, session, res)
        else:
            elapsed = await closed_loop(a, session, res)
    sent = res.ok + sum(res.errors.values())
    out = {
        "mode": a.mode, "stream": a.stream, "rate": a.rate if a.mode == "open" else None,
        "concurrency": a.concurrency if a.mode == "closed" else None,
        "requests_target": a.requests or None,
        "duration_s": round(elapsed, 3), "requests": sent, "ok": res.ok,
        "errors": sum(res.errors.values()), "error_kinds": res.errors,
        "rps": round(res.ok / elapsed, 1),
        "latency_ms": summary(res.latency), "ttfb_ms": summary(res.ttfb),
        "generator_lag_ms": summary(res.lag) if res.lag else None,
    }
    if a.stream:
        gaps = res.gaps
        out["gap_ms"] = summary(gaps)
        out["gap_ms"]["p10"] = pct(gaps, 10)
        out["gaps_batched_frac"] = round(sum(1 for g in gaps if g < 1.0) / len(gaps), 4) if gaps else None
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.load")
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="bench")
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second")
    p.add_argument("--concurrency", type=int, default=64, help="closed loop: workers")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--requests", type=int, default=0,
                   help="closed loop: stop once this many measured requests completed "
                        "(--duration stays the upper bound)")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request total timeout, seconds")
    p.add_argument("--connections", type=int, default=1024, help="client connection pool size")
    a = p.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(run(a))
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(a))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
