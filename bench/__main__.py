"""python -m bench [--quick] [--only SCENARIO,...] [--systems SYSTEM,...] [--out bench/results]

Starts the mock upstream (core 0), then each system under test in turn (core 1) and runs every
scenario against it with the load generator (core 0, own process); then the recorder scenario once
(bench/recorder.py, core 1); writes latest.md + latest.json.
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
from bench.systems import LITELLM_VENV, LITELLM_VERSION, SYSTEMS, Sluicegate, pin, repo_relative, shell, wait_http

RECORDER = "recorder"  # the scenario run once per bench, not per system
# python -m bench.recorder arguments: full run / --quick
RECORDER_ARGS = ["--rate", "5000", "--seconds", "10", "--baseline-seconds", "5", "--max-records", "100000"]
RECORDER_QUICK_ARGS = ["--rate", "5000", "--seconds", "0.5", "--baseline-seconds", "0.5", "--max-records", "5000"]
# rough start-up (+ extra waiting) per system, seconds, for the estimate printed at the start
# (LiteLLM: ~3 starts as it is restarted when still busy after open-600 and max-c64, 2 x 10 s of waiting for it
# to settle, and ~11 s of per-request timeouts at the end of each open-loop scenario it cannot keep up with)
START_S = {"floor": 0.5, "bare-stack": 1.5, "sluicegate-minimal": 3, "sluicegate-full": 5, "litellm": 110}
PER_SCENARIO_S = 1.5  # load process start, settle, readyz


def estimate_s(scenarios, names: list[str], recorder: bool, quick: bool) -> float:
    total = 1.0
    for n in names:
        total += START_S.get(n, 3) + sum(sc.expected_s() + PER_SCENARIO_S for sc in scenarios if sc.applies_to(n))
    if recorder:
        total += 4 if quick else 5 + 10 + 100_000 / 6_500 + 7  # baseline, sustained, maximum, set-up
    return total

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
    p.add_argument("--quick", action="store_true",
                   help="smoke run: floor + bare stack + Sluicegate minimal, a tiny recorder check; a few seconds")
    p.add_argument("--only", help="comma-separated scenario names (full: open-100,open-300,open-600,max-c64,"
                                  "stream,soak-100k,recorder)")
    p.add_argument("--systems", help="comma-separated: floor,bare-stack,sluicegate-minimal,sluicegate-full,litellm "
                                     "(the floor is always run)")
    p.add_argument("--out", help="output directory (default bench/results, bench/results/quick with --quick)")
    p.add_argument("--profile", action="store_true",
                   help="after the scenarios, py-spy the Sluicegate systems under closed-loop load (flame graph + top frames)")
    p.add_argument("--soak-requests", type=int, default=100_000,
                   help="requests of the soak-100k scenario (default 100,000; smaller only to try the harness)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--retry-wait", type=float, default=None,
                   help="seconds to wait before retrying a Sluicegate that failed to start (default 60; 0 in --quick)")
    a = p.parse_args(argv)

    started = time.time()
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / ("quick" if a.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    scenarios = quick_scenarios() if a.quick else full_scenarios(a.soak_requests)
    run_recorder = True
    if a.only:
        wanted = [s.strip() for s in a.only.split(",") if s.strip()]
        unknown = set(wanted) - {s.name for s in scenarios} - {RECORDER}
        if unknown:
            p.error(f"unknown scenario(s) {sorted(unknown)}; known: {[s.name for s in scenarios] + [RECORDER]}")
        scenarios = [s for s in scenarios if s.name in wanted]
        run_recorder = RECORDER in wanted
    names = (["floor", "bare-stack", "sluicegate-minimal"] if a.quick
             else ["floor", "bare-stack", "sluicegate-minimal", "sluicegate-full", "litellm"])
    if a.systems:
        wanted = [s.strip() for s in a.systems.split(",") if s.strip()]
        unknown = set(wanted) - set(SYSTEMS)
        if unknown:
            p.error(f"unknown system(s) {sorted(unknown)}; known: {list(SYSTEMS)}")
        names = ["floor"] + [n for n in wanted if n != "floor"]
    if not scenarios:
        names = []  # only the recorder: no system to start
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
        "Sluicegate minimal: one single-model route, no guards, capture left default, recording OFF "
        "(`--store none://`: records are counted and discarded). BENCH_MINIMAL_STORE=URL uses another store.",
        "Bare stack: uvicorn (uvloop, httptools, no access log) + one aiohttp session forwarding bytes, no "
        "logic (bench/bare_proxy.py) — what the Python stack alone costs. Sluicegate's own logic = "
        "Sluicegate minimal minus bare stack; the stack's own cost = bare stack minus the floor.",
        "Sluicegate logs one JSON `request` line per request (default --log-level info) to a file.",
        "soak-100k runs only against Sluicegate everything-on, last, so its RSS is the RSS after everything "
        "that system served in the run (the count is in the RSS target row).",
        "Recorder scenario (once per run, bench/recorder.py, pinned to the system-under-test core): the real "
        "Recorder + SQLite store, records like everything-on's (capture redacted, ~2 KB), Recorder defaults. "
        "Sustained: 5,000 records/s offered by a 1 ms asyncio ticker for 10 s; maximum: 100,000 submitted at "
        "once then flush(); loop lag = how late the 1 ms ticker fires, with the recorder at 5,000/s vs the "
        "ticker alone — what any request on that event loop would wait on top of its own work.",
    ]

    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    est = estimate_s(scenarios, names, run_recorder, a.quick)
    log(f"bench: {len(names)} systems ({', '.join(names) or 'none'}), scenarios "
        f"{', '.join(s.name for s in scenarios) or 'none'}{' + recorder' if run_recorder else ''}; "
        f"estimated total ~{est / 60:.1f} min ({est:.0f} s)"
        + (f" + installing LiteLLM {LITELLM_VERSION} into {LITELLM_VENV} first"
           if "litellm" in names and not (LITELLM_VENV / "bin" / "litellm").exists() else ""))
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
        "systems": {}, "scenarios": {}, "notes": notes, "estimated_s": round(est),
    }
    for sc in scenarios:
        report["scenarios"][sc.name] = {"scenario_title": sc.title, "scenario": None, "results": {}}
        report["commands"]["load"][sc.name] = {}
    failed_sluicegate = False
    try:
        wait_http(f"http://127.0.0.1:{mock_port}/health", 10, mock)
        for name in names:
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
                    if not sc.applies_to(name):
                        continue
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

    if run_recorder:
        report["recorder"] = run_recorder_scenario(sut_core, RECORDER_QUICK_ARGS if a.quick else RECORDER_ARGS,
                                                   report["commands"])
    report["scenarios"] = {k: v for k, v in report["scenarios"].items() if v["scenario"]}
    report["comparison"] = rep.compare(report["scenarios"])
    report["summary"] = rep.targets(report)
    report["reference"] = rep.reference(report)
    report["elapsed_s"] = round(time.time() - started, 1)
    report["litellm_pinned_version"] = LITELLM_VERSION
    (out / "latest.json").write_text(repo_relative(json.dumps(report, indent=2, default=str)))
    md = repo_relative(rep.markdown(report))
    (out / "latest.md").write_text(md)
    print(md)
    log(f"bench: wrote {out / 'latest.md'} and {out / 'latest.json'} in {report['elapsed_s']} s")
    ran_all = all(name in sc["results"] for sc in report["scenarios"].values()
                  for name in names if report["systems"].get(name, {}).get("status") == "ok"
                  and (not sc["scenario"].get("systems") or name in sc["scenario"]["systems"]))
    recorder_ok = not run_recorder or "error" not in report["recorder"]
    ran_something = bool(report["scenarios"]) or (run_recorder and recorder_ok)
    return 1 if failed_sluicegate or not ran_something or not ran_all or not recorder_ok else 0


def run_recorder_scenario(core: int | None, args: list[str], commands: dict) -> dict:
    """bench/recorder.py in its own process, pinned to the system-under-test core."""
    cmd = pin(core) + [sys.executable, "-m", "bench.recorder", *args]  # own temp dir, removed afterwards
    commands["recorder"] = shell(cmd)
    log("bench: recorder scenario (Recorder + SQLite, no gateway)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"exit code {proc.returncode}: {proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - the report says why
        log(f"bench: recorder scenario failed: {exc}")
        return {"error": str(exc)}
    s, lag = out["sustained"], out.get("loop_lag_added_ms", {})
    m = out.get("maximum") or {}
    log(f"  recorder  sustained {s['offered_per_s']:.0f}/s offered: {s['written']} written, "
        f"{s['spilled']} spilled, {s['dropped']} dropped, backlog max {s['backlog_max']}; "
        f"max {m.get('records_per_s', '-')}/s; loop lag p99 {s['loop_lag_ms']['p99']} ms "
        f"(+{lag.get('p99')} over {out['baseline_loop_lag_ms']['p99']} ms alone)")
    return out


if __name__ == "__main__":
    sys.exit(main())
