"""The soak run: Sluicegate everything-on under a steady load for 10 minutes, sampled every 10 s.

    python -m bench.soak [--minutes 10] [--rate 150] [--stream-rate 10] [--warmup-s 60]

Starts the bench mock upstream (20 ms latency) and `sluicegate serve` with the everything-on policy
(bench/systems.py: split, sticky, fallbacks, guards, capture redacted, 10% sampling to a rule scorer,
recording to SQLite), then two open-loop load generators — non-streaming at `--rate` and streaming at
`--stream-rate` requests/s — for the whole run. Every 10 s: the gateway's RSS, open file descriptors,
asyncio tasks (from /readyz) and recorder counts. The figures that matter are after the warm-up: RSS
should stay flat within a few MB, descriptors and tasks should not grow, no record dropped.

Writes bench/results/soak.json and bench/results/soak.md. Not part of CI (it takes the machine for
the whole run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.systems import ROOT, SluicegateFull, pin, rss_mb, wait_http

RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def readyz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return json.load(r)


def slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return round(60 * sum((t - mx) * (v - my) for t, v in points) / den, 3) if den else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=150.0, help="non-streaming requests per second")
    p.add_argument("--stream-rate", type=float, default=10.0, help="streaming requests per second")
    p.add_argument("--warmup-s", type=float, default=60.0, help="seconds before the flatness figures start")
    p.add_argument("--every-s", type=float, default=10.0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for `sluicegate serve` (repeat), e.g. --serve-arg=--report-metrics-every=0")
    a = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-soak-"))
    mock_port = free_port()
    mock = subprocess.Popen(pin(0) + [sys.executable, "-m", "bench.upstream", "--port", str(mock_port),
                                      "--latency-ms", "20", "--chunks", "20", "--chunk-delay-ms", "10"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{mock_port}/health", 10, mock)
    system = SluicegateFull(workdir, mock_port, free_port(), 1)
    system.extra_args = list(a.serve_arg)
    system.start()
    seconds = a.minutes * 60
    loads = [subprocess.Popen(pin(0) + [sys.executable, "-m", "bench.load", "--url", system.url, "--model", "bench",
                                        "--mode", "open", "--rate", str(rate), "--duration", str(seconds),
                                        "--warmup", "0", *(["--stream"] if stream else [])],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
             for rate, stream in ((a.rate, False), (a.stream_rate, True))]
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(a.every_s)
            ready = readyz(system.port)
            sample = {"t": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(system.pid), 2),
                      "fds": fds(system.pid), "tasks": ready.get("process", {}).get("asyncio_tasks"),
                      "recorder": {k: ready["recorder"][k] for k in ("written", "buffered", "spilled", "dropped")}}
            samples.append(sample)
            print(json.dumps(sample), file=sys.stderr, flush=True)
        results = [json.loads(load.communicate(timeout=120)[0]) for load in loads]
        time.sleep(2)
        final = readyz(system.port)
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
        system.stop()
        mock.kill()
    after = [s for s in samples if s["t"] >= a.warmup_s]
    rss = [s["rss_mb"] for s in after]
    sent = sum(r.get("requests", 0) for r in results)
    summary = {
        "minutes": a.minutes, "rate": a.rate, "stream_rate": a.stream_rate, "warmup_s": a.warmup_s,
        "requests_ok": [r.get("ok") for r in results],
        "errors": [{"count": r.get("errors"), "kinds": r.get("error_kinds")} for r in results],
        "latency_ms_p50_p99": [(r.get("latency_ms") or {}).get("p50") for r in results] + [
            (r.get("latency_ms") or {}).get("p99") for r in results],
        "rss_mb_after_warmup": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None,
                                "min": min(rss, default=None), "max": max(rss, default=None),
                                "slope_mb_per_min": slope_mb_per_min([(s["t"], s["rss_mb"]) for s in after])},
        "fds": {"first": after[0]["fds"] if after else None, "last": after[-1]["fds"] if after else None,
                "max": max((s["fds"] for s in after), default=None)},
        "tasks": {"first": after[0]["tasks"] if after else None, "last": after[-1]["tasks"] if after else None,
                  "max": max((s["tasks"] or 0 for s in after), default=None)},
        "recorder_final": final["recorder"], "requests_sent": sent,
        "samples": samples,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    r = summary["rss_mb_after_warmup"]
    lines = [
        f"# Soak: Sluicegate everything-on, {a.minutes:g} min at {a.rate:g} + {a.stream_rate:g} (stream) req/s",
        "",
        f"- requests ok: {summary['requests_ok']} (non-stream, stream); errors: {summary['errors']}",
        f"- latency p50 / p99 ms (non-stream, stream): {summary['latency_ms_p50_p99']}",
        f"- RSS after {a.warmup_s:g} s warm-up: first {r['first']} MB, last {r['last']} MB, range "
        f"{r['min']}–{r['max']} MB, slope {r['slope_mb_per_min']} MB/min",
        f"- open file descriptors: {summary['fds']}; asyncio tasks: {summary['tasks']}",
        f"- recorder at the end: {summary['recorder_final']}",
        "",
        "| t (s) | RSS MB | fds | tasks | written | buffered | spilled | dropped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {s['t']} | {s['rss_mb']} | {s['fds']} | {s['tasks']} | {s['recorder']['written']} | "
          f"{s['recorder']['buffered']} | {s['recorder']['spilled']} | {s['recorder']['dropped']} |" for s in samples),
    ]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
