"""python -m bench [--quick] [--only SCENARIO,...] [--systems SYSTEM,...] [--out bench/results]

Starts the mock upstream (core 0), then each system under test in turn (core 1) and runs every
scenario against it with the load generator (core 0, own process); writes latest.md + latest.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import report as rep
from bench.scenarios import full_scenarios, quick_scenarios, run_scenario
from bench.systems import SYSTEMS, LITELLM_VERSION, Sluicegate, pin, shell, wait_http

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: floor + Sluicegate minimal, a few seconds")
    p.add_argument("--only", help="comma-separated scenario names (full: open-100,open-300,open-600,max-c64,stream)")
    p.add_argument("--systems", help="comma-separated: floor,sluicegate-minimal,sluicegate-full,litellm "
                                     "(the floor is always run)")
    p.add_argument("--out", help="output directory (default bench/results, bench/results/quick with --quick)")
    p.add_argument("--profile", action="store_true",
                   help="after the scenarios, py-spy the Sluicegate systems under closed-loop load (flame graph + top frames)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--retry-wait", type=float, default=None,
                   help="seconds to wait before retrying a Sluicegate that failed to start (default 60; 0 in --quick)")
    a = p.parse_args(argv)

    started = time.time()
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / ("quick" if a.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    scenarios = quick_scenarios() if a.quick else full_scenarios()
    if a.only:
        wanted = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = set(wanted) - {s.name for s in scenarios}
        if unknown:
            p.error(f"unknown scenario(s) {sorted(unknown)}; known: {[s.name for s in scenarios]}")
        scenarios = [s for s in scenarios if s.name in wanted]
    names = ["floor", "sluicegate-minimal"] if a.quick else ["floor", "sluicegate-minimal", "sluicegate-full", "litellm"]
    if a.systems:
        wanted = [s.strip() for s in a.systems.split(",") if s.strip()]
        unknown = set(wanted) - set(SYSTEMS)
        if unknown:
            p.error(f"unknown system(s) {sorted(unknown)}; known: {list(SYSTEMS)}")
        names = ["floor"] + [n for n in wanted if n != "floor"]
    retry_wait = a.retry_wait if a.retry_wait is not None else (0 if a.quick else 60)

    import os

    cores = len(os.sched_getaffinity(0))
    if a.no_pin or cores < 2:
        load_core = sut_core = None
        pinning = "not pinned" + (" (fewer than 2 cores available)" if cores < 2 else " (--no-pin)")
    else:
        load_core, sut_core = 0, 1
        pinning = ("load generator + mock upstream on core 0, system under test on core 1 (`taskset -c`); "
                   "the harness itself is unpinned and idle while a scenario runs")
    notes = [
        "Open loop: send times are fixed up front (i / rate) and latency is measured from the scheduled "
        "time, so queueing in the system under test (or the generator) shows; `generator_lag_ms` in the "
        "JSON says how late the generator was.",
        "Client: aiohttp (one pool of up to 1024 keep-alive connections), 10 s per-request timeout; a "
        "timed-out or non-200 request counts as an error and is left out of the latency figures.",
        "CPU ms/req = CPU time (user+sys) of the system's process tree during the scenario, warm-up "
        "included, divided by the requests the mock received in that time. RSS = resident set of the "
        "system's process tree after the scenario (the same process serves every scenario in order).",
        "Streaming: TTFT = time to the first SSE event, `last byte` = whole stream; gaps are between "
        "content events as the client saw them (the mock sends them `chunk_delay_ms` apart: 10 ms in the full run); `batched` = share of "
        "gaps under 1 ms (chunks coalesced on the way).",
        "Sluicegate minimal: recording cannot be turned off yet (no store URL disables it), so the "
        "policy uses `capture: refs_only`, the cheapest capture mode, with a SQLite file in a temp dir. "
        "Set BENCH_MINIMAL_STORE to another store URL to use it instead.",
        "Sluicegate logs one JSON `request` line per request (default --log-level info) to a file.",
    ]

    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    mock_port = free_port()
    first = scenarios[0].mock if scenarios else {}
    mock_cmd = pin(load_core) + [sys.executable, "-m", "bench.upstream", "--port", str(mock_port),
                                 "--latency-ms", str(first.get("latency_ms", 0)),
                                 "--chunks", str(first.get("chunks", 50)),
                                 "--chunk-delay-ms", str(first.get("chunk_delay_ms", 10))]
    log(f"bench: workdir {workdir}; {pinning}")
    mock_log = open(workdir / "mock.log", "wb")
    mock = subprocess.Popen(mock_cmd, stdout=mock_log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    report: dict = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": a.quick,
        "machine": rep.machine(), "pinning": pinning, "workdir": str(workdir),
        "commands": {"bench": shlex.join([sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
                     "mock": shell(mock_cmd), "systems": {}, "load": {}},
        "systems": {}, "scenarios": {}, "notes": notes,
    }
    for sc in scenarios:
        report["scenarios"][sc.name] = {"scenario_title": sc.title, "scenario": None, "results": {}}
        report["commands"]["load"][sc.name] = {}
    failed_sluicegate = False
    try:
        wait_http(f"http://127.0.0.1:{mock_port}/health", 10, mock)
        for i, name in enumerate(names):
            cls = SYSTEMS[name]
            system = cls(workdir, mock_port, free_port(), sut_core)
            entry = {"label": system.label, "status": "not started", "notes": system.notes, "info": system.info}
            report["systems"][name] = entry
            attempts = 2 if isinstance(system, Sluicegate) and retry_wait > 0 else 1
            for attempt in range(attempts):
                try:
                    log(f"bench: starting {system.label}")
                    system.start()
                    entry["status"] = "ok"
                    entry.pop("error", None)
                    break
                except Exception as exc:  # noqa: BLE001 - the run goes on and says why
                    entry["status"] = "failed to start"
                    entry["error"] = str(exc).strip()
                    log(f"bench: {system.label} failed to start: {exc}")
                    if attempt + 1 < attempts:
                        log(f"bench: retrying in {retry_wait:.0f} s (the gateway may be mid-edit)")
                        time.sleep(retry_wait)
            entry["command"] = shell(system.command) if system.command else None
            report["commands"]["systems"][name] = entry["command"]
            if entry["status"] != "ok":
                if isinstance(system, Sluicegate):
                    failed_sluicegate = True
                continue
            try:
                for sc in scenarios:
                    try:
                        r = run_scenario(sc, system, mock_port, load_core, log)
                    except Exception as exc:  # noqa: BLE001
                        entry.setdefault("scenario_errors", {})[sc.name] = str(exc)
                        log(f"bench: {sc.name} on {name} failed: {exc}")
                        continue
                    slot = report["scenarios"][sc.name]
                    slot["scenario"] = r.pop("scenario")
                    report["commands"]["load"][sc.name][name] = r.pop("command")
                    slot["results"][name] = r
                if isinstance(system, Sluicegate):
                    entry["info"]["readyz"] = system.readyz()
                    if a.profile:
                        from bench.profile import profile

                        log(f"bench: profiling {system.label} with py-spy")
                        try:
                            report.setdefault("profile", {})[name] = profile(system, mock_port, load_core, out)
                        except Exception as exc:  # noqa: BLE001
                            report.setdefault("profile", {})[name] = {"error": str(exc)}
            finally:
                system.stop()
    finally:
        mock.terminate()
        try:
            mock.wait(timeout=5)
        except subprocess.TimeoutExpired:
            mock.kill()

    report["scenarios"] = {k: v for k, v in report["scenarios"].items() if v["scenario"]}
    report["comparison"] = rep.compare(report["scenarios"])
    report["summary"] = rep.targets(report)
    report["elapsed_s"] = round(time.time() - started, 1)
    report["litellm_pinned_version"] = LITELLM_VERSION
    (out / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    md = rep.markdown(report)
    (out / "latest.md").write_text(md)
    print(md)
    log(f"bench: wrote {out / 'latest.md'} and {out / 'latest.json'} in {report['elapsed_s']} s")
    ran_all = all(name in sc["results"] for sc in report["scenarios"].values()
                  for name in names if report["systems"].get(name, {}).get("status") == "ok")
    return 1 if failed_sluicegate or not report["scenarios"] or not ran_all else 0


if __name__ == "__main__":
    sys.exit(main())
