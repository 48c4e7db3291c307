"""Scenarios, and running one against a started system (load generator in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field

from bench.systems import System, cpu_seconds, pin, rss_mb, shell


@dataclass
class Scenario:
    name: str
    title: str
    mode: str                      # open | closed
    duration: float
    warmup: float
    rate: float = 0.0              # open loop
    concurrency: int = 0           # closed loop
    stream: bool = False
    mock: dict = field(default_factory=dict)   # latency_ms, chunks, chunk_delay_ms
    requests: int = 0              # closed loop: stop once this many requests completed (duration = upper bound)
    systems: tuple[str, ...] = ()  # run only against these systems (empty: all)
    est_rps: float = 0.0           # for the time estimate of a `requests`-bounded scenario

    def applies_to(self, system: str) -> bool:
        return not self.systems or system in self.systems

    def expected_s(self) -> float:
        """Rough wall time of the load itself (for the estimate printed at the start)."""
        if self.requests and self.est_rps:
            return self.warmup + min(self.duration, self.requests / self.est_rps)
        return self.warmup + self.duration

    def load_args(self, url: str, model: str) -> list[str]:
        args = ["--url", url, "--model", model, "--mode", self.mode, "--duration", str(self.duration),
                "--warmup", str(self.warmup)]
        if self.mode == "open":
            args += ["--rate", str(self.rate)]
        else:
            args += ["--concurrency", str(self.concurrency)]
            if self.requests:
                args += ["--requests", str(self.requests)]
        if self.stream:
            args.append("--stream")
        return args


SOAK_REQUESTS = 100_000


def full_scenarios(soak_requests: int = SOAK_REQUESTS) -> list[Scenario]:
    slow = {"latency_ms": 50, "chunks": 50, "chunk_delay_ms": 10}
    fast = {"latency_ms": 0, "chunks": 50, "chunk_delay_ms": 10}
    return [
        Scenario("open-100", "non-streaming, open loop 100 RPS, 50 ms upstream", "open", 10, 2, rate=100, mock=slow),
        Scenario("open-300", "non-streaming, open loop 300 RPS, 50 ms upstream", "open", 10, 2, rate=300, mock=slow),
        Scenario("open-600", "non-streaming, open loop 600 RPS, 50 ms upstream", "open", 10, 2, rate=600, mock=slow),
        Scenario("max-c64", "max throughput, closed loop c=64, 0 ms upstream", "closed", 10, 1, concurrency=64,
                 mock=fast),
        Scenario("stream", "streaming 50 chunks 10 ms apart (50 ms to first), open loop 20 RPS", "open", 8, 1,
                 rate=20, stream=True, mock=slow),
        # last, so the RSS after it is the RSS after everything the system served
        Scenario("soak-100k", f"soak: closed loop c=64, 0 ms upstream, until {soak_requests:,} requests completed",
                 "closed", 300, 0, concurrency=64, mock=fast, requests=soak_requests,
                 systems=("sluicegate-full",), est_rps=900),
    ]


def quick_scenarios() -> list[Scenario]:
    return [
        Scenario("open-50", "non-streaming, open loop 50 RPS, 5 ms upstream", "open", 0.6, 0.2, rate=50,
                 mock={"latency_ms": 5, "chunks": 5, "chunk_delay_ms": 5}),
        Scenario("max-c8", "max throughput, closed loop c=8, 0 ms upstream", "closed", 0.6, 0.2, concurrency=8,
                 mock={"latency_ms": 0, "chunks": 5, "chunk_delay_ms": 5}),
        Scenario("stream", "streaming 5 chunks 5 ms apart, open loop 10 RPS", "open", 0.6, 0.2, rate=10,
                 stream=True, mock={"latency_ms": 5, "chunks": 5, "chunk_delay_ms": 5}),
    ]


def mock_call(mock_port: int, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{mock_port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)


def configure_mock(mock_port: int, settings: dict) -> dict:
    query = "&".join(f"{k}={v}" for k, v in settings.items())
    return mock_call(mock_port, f"/_bench/config?{query}", "PUT")


SETTLE_LIMIT_S = 10.0


def settle(pid: int | None, limit: float = SETTLE_LIMIT_S) -> tuple[float, bool]:
    """Wait until the system under test is idle (< 5% of a core) so scenarios do not overlap."""
    if pid is None:
        return 0.0, True
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = cpu_seconds(pid)
        time.sleep(0.3)
        if cpu_seconds(pid) - before < 0.015:
            return round(time.monotonic() - start, 2), True
    return round(time.monotonic() - start, 2), False


def run_scenario(sc: Scenario, system: System, mock_port: int, load_core: int | None, log) -> dict:
    configure_mock(mock_port, sc.mock)
    settled, idle = settle(system.pid)
    restarted = False
    if not idle:  # still chewing on the previous scenario's backlog: start it afresh, and say so
        log(f"  {system.name} still busy {settled} s after the previous scenario: restarting it before {sc.name}")
        system.stop()
        system.start()
        restarted = True
    pid = system.pid
    cmd = pin(load_core) + [sys.executable, "-m", "bench.load"] + sc.load_args(system.url, system.model)
    before_mock = mock_call(mock_port, "/_bench/stats")["requests"]
    cpu0 = cpu_seconds(pid) if pid else None
    rec0 = system.readyz().get("recorder", {}) if hasattr(system, "readyz") else {}
    t_load = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=sc.warmup + sc.duration + 120)
    load_wall = time.monotonic() - t_load
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    upstream_requests = mock_call(mock_port, "/_bench/stats")["requests"] - before_mock
    result["upstream_requests"] = upstream_requests
    result["load_wall_s"] = round(load_wall, 2)
    result["settle_s"] = settled
    result["restarted_before"] = restarted
    if pid:
        cpu = cpu_seconds(pid) - cpu0
        result["sut_cpu_s"] = round(cpu, 3)
        result["sut_cpu_ms_per_request"] = round(cpu * 1000 / upstream_requests, 3) if upstream_requests else None
        result["rss_mb"] = rss_mb(pid)
        alive = system.proc is not None and system.proc.poll() is None
        result["sut_alive"] = alive
    if hasattr(system, "readyz"):
        time.sleep(0.3)  # let the recorder flush its last batch
        rec1 = system.readyz().get("recorder", {})
        if rec1:
            written = rec1.get("written", 0) - rec0.get("written", 0)
            result["recorder"] = {
                "written": written,
                "written_per_s": round(written / (sc.warmup + result["duration_s"]), 1),
                **{k: rec1.get(k) for k in ("submitted", "buffered", "spilled", "dropped", "store_healthy")},
            }
    result["command"] = shell(cmd)
    result["scenario"] = asdict(sc)
    log(f"  {sc.name:9s} {system.name:19s} ok={result['ok']:<6} err={result['errors']:<5} "
        f"rps={result['rps']:<8} p50={result['latency_ms']['p50']} p99={result['latency_ms']['p99']} "
        f"ttfb50={result['ttfb_ms']['p50']} rss={result.get('rss_mb', '-')}")
    return result
