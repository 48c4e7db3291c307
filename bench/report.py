"""Figures, ratios to the floor and to LiteLLM, and the Markdown / JSON output."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.scenarios import SETTLE_LIMIT_S

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aiohttp", "uvicorn", "uvloop", "httptools", "starlette", "httpx", "httpx-aiohttp", "orjson",
            "pydantic", "structlog", "sluicegate")

COLUMNS = {
    "open": [("p50", "lat_p50"), ("p90", "lat_p90"), ("p99", "lat_p99"), ("+p50", "add_p50"),
             ("+p90", "add_p90"), ("+p99", "add_p99"), ("RPS", "rps"), ("errors", "errors"),
             ("CPU ms/req", "cpu_ms_per_req"), ("RSS MB", "rss_mb")],
    "closed": [("RPS", "rps"), ("p50", "lat_p50"), ("p99", "lat_p99"), ("errors", "errors"),
               ("CPU ms/req", "cpu_ms_per_req"), ("RSS MB", "rss_mb"), ("records/s", "records_per_s")],
    "stream": [("TTFT p50", "ttft_p50"), ("TTFT p99", "ttft_p99"), ("+TTFT p50", "add_ttft_p50"),
               ("+TTFT p99", "add_ttft_p99"), ("last byte p50", "ttlb_p50"), ("+last byte p50", "add_ttlb_p50"),
               ("+last byte p99", "add_ttlb_p99"), ("gap p50", "gap_p50"), ("gap p10", "gap_p10"),
               ("gap p90", "gap_p90"), ("batched", "batched_frac"), ("errors", "errors"),
               ("CPU ms/req", "cpu_ms_per_req"), ("RSS MB", "rss_mb")],
}


def kind(sc: dict) -> str:
    return "stream" if sc["stream"] else sc["mode"]


def _sub(a, b):
    return None if a is None or b is None else round(a - b, 3)


def figures(result: dict, floor: dict | None, k: str) -> dict:
    lat, ttfb = result["latency_ms"], result["ttfb_ms"]
    f_lat = floor["latency_ms"] if floor else {}
    f_ttfb = floor["ttfb_ms"] if floor else {}
    out = {"rps": result["rps"], "errors": result["errors"], "cpu_ms_per_req": result.get("sut_cpu_ms_per_request"),
           "rss_mb": result.get("rss_mb")}
    if k == "open":
        for q in ("p50", "p90", "p99"):
            out[f"lat_{q}"] = lat[q]
            out[f"add_{q}"] = _sub(lat[q], f_lat.get(q)) if floor else None
    elif k == "closed":
        out["lat_p50"], out["lat_p99"] = lat["p50"], lat["p99"]
        out["records_per_s"] = (result.get("recorder") or {}).get("written_per_s")
    else:
        for q in ("p50", "p99"):
            out[f"ttft_{q}"] = ttfb[q]
            out[f"add_ttft_{q}"] = _sub(ttfb[q], f_ttfb.get(q)) if floor else None
            out[f"ttlb_{q}"] = lat[q]
            out[f"add_ttlb_{q}"] = _sub(lat[q], f_lat.get(q)) if floor else None
        gap = result.get("gap_ms") or {}
        out["gap_p50"], out["gap_p10"], out["gap_p90"] = gap.get("p50"), gap.get("p10"), gap.get("p90")
        out["batched_frac"] = result.get("gaps_batched_frac")
    return out


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def compare(scenarios: dict) -> dict:
    """Per scenario and system: figures, and each figure as a ratio to the floor and to LiteLLM."""
    out = {}
    for name, sc in scenarios.items():
        k = kind(sc["scenario"])
        results = sc["results"]
        floor = results.get("floor")
        figs = {s: figures(r, floor, k) for s, r in results.items()}
        lite = figs.get("litellm")
        out[name] = {}
        for s, f in figs.items():
            out[name][s] = {
                "figures": f,
                "x_floor": {m: ratio(v, figs["floor"].get(m)) if "floor" in figs else None for m, v in f.items()},
                "x_litellm": {m: ratio(v, lite.get(m)) if lite else None for m, v in f.items()},
            }
    return out


def machine() -> dict:
    cpu_model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""

    dirty = git("status", "--porcelain")
    mem = ""
    try:
        mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)), "cpu_model": cpu_model,
            "memory": mem, "platform": platform.platform(), "python": sys.version.split()[0],
            "python_executable": sys.executable, "packages": versions,
            "git_commit": git("rev-parse", "HEAD"), "git_branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "git_dirty_files": len(dirty.splitlines()) if dirty else 0}


def _fmt(v, ratio_cell: bool = False) -> str:
    if v is None:
        return "–"
    if ratio_cell:
        return f"{v:.2f}×"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _table(cols: list, rows: list[tuple[str, dict]], ratio_cells: bool) -> list[str]:
    lines = ["| system | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, vals in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(vals.get(key), ratio_cells) for _, key in cols) + " |")
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# Sluicegate benchmark{' (quick smoke run)' if report['quick'] else ''}", "",
             f"Run at {report['started_at']} in {report['elapsed_s']} s. Latencies in ms; `+` = added over the "
             "floor at the same rate (same percentile); ratios are this run's figure divided by the floor's "
             "or LiteLLM's.", "",
             f"**Machine:** {m['cores']} cores ({m['cpu_model']}), {m['memory']}, {m['platform']}, "
             f"Python {m['python']}; git {m['git_commit'][:12]} on {m['git_branch']}"
             f"{' with %d uncommitted files' % m['git_dirty_files'] if m['git_dirty_files'] else ''}.", "",
             f"**Pinning:** {report['pinning']}", ""]
    if report.get("summary"):
        lines += ["## Against the targets of issue 5", "", "| target | measured | met |", "|---|---|---|"]
        for row in report["summary"]:
            lines.append(f"| {row['target']} | {row['measured']} | {row['met']} |")
        lines.append("")
    if report.get("reference"):
        lines += ["Reference (no target): the Python stack alone, and Sluicegate's own logic on top of it", "",
                  "| what | measured |", "|---|---|"]
        lines += [f"| {r['what']} | {r['measured']} |" for r in report["reference"]] + [""]
    labels = {n: s["label"] for n, s in report["systems"].items()}
    for name, sc in report["scenarios"].items():
        k = kind(sc["scenario"])
        cols = COLUMNS[k]
        cmp_ = report["comparison"][name]
        lines += [f"## {name}: {sc['scenario_title']}", ""]
        rows = [(labels.get(s, s), c["figures"]) for s, c in cmp_.items()]
        lines += _table(cols, rows, False) + [""]
        if "floor" in cmp_:
            lines += ["Ratio to the floor:", ""]
            lines += _table(cols, [(labels.get(s, s), c["x_floor"]) for s, c in cmp_.items()], True) + [""]
        if "litellm" in cmp_:
            lines += ["Ratio to LiteLLM:", ""]
            lines += _table(cols, [(labels.get(s, s), c["x_litellm"]) for s, c in cmp_.items()], True) + [""]
        restarted = [labels.get(s, s) for s, r in sc["results"].items() if r.get("restarted_before")]
        if restarted:
            lines += [f"Restarted before this scenario (still busy {SETTLE_LIMIT_S:.0f} s after the previous one): "
                      + ", ".join(restarted), ""]
        errs = {labels.get(s, s): r["error_kinds"] for s, r in sc["results"].items() if r["error_kinds"]}
        if errs:
            lines += ["Errors: " + "; ".join(f"{s}: {e}" for s, e in errs.items()), ""]
    lines += recorder_markdown(report.get("recorder"))
    for n, prof in (report.get("profile") or {}).items():
        lines += [f"## Profile of {labels.get(n, n)} (py-spy, closed loop c=64, 0 ms upstream)", ""]
        if prof.get("error"):
            lines += [f"py-spy failed: {prof['error']}", ""]
            continue
        lines += [f"Flame graph: `{prof.get('flamegraph')}`; collapsed stacks: `{prof.get('raw')}` "
                  f"({prof.get('samples')} samples). Top frames by own time:", "",
                  "| # | frame | own share |", "|---|---|---|"]
        for i, f in enumerate(prof.get("top_own", []), 1):
            lines.append(f"| {i} | `{f['frame']}` | {f['share']:.1%} |")
        lines.append("")
    lines += ["## Systems", ""]
    for n, s in report["systems"].items():
        lines.append(f"- **{s['label']}** — {s['status']}" + (f": {s['error']}" if s.get("error") else ""))
        for note in s.get("notes", []):
            lines.append(f"  - {note}")
        if s.get("command"):
            lines.append(f"  - command: `{s['command']}`")
        for code in s.get("info", {}).get("started_at_code", []):
            lines.append(f"  - started on git {code['git_commit'][:12]} with {code['proxy_uncommitted_files']} "
                         "uncommitted files under proxy/")
        if s.get("info", {}).get("version"):
            lines.append(f"  - version: {s['info']['version']}")
    lines += ["", "## Commands", "", f"- bench: `{report['commands']['bench']}`",
              f"- mock upstream: `{report['commands']['mock']}`"]
    if report["commands"].get("recorder"):
        lines.append(f"- recorder scenario: `{report['commands']['recorder']}`")
    for name, per in report["commands"]["load"].items():
        for s, c in per.items():
            lines.append(f"- load {name} / {s}: `{c}`")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "## Package versions", "", ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v), ""]
    return "\n".join(lines)


def recorder_markdown(rec: dict | None) -> list[str]:
    if not rec:
        return []
    lines = ["## recorder: Recorder + SQLite alone (once per run, pinned to the system-under-test core)", ""]
    if rec.get("error"):
        return lines + [f"Failed: {rec['error']}", ""]
    s, m = rec["sustained"], rec.get("maximum")
    lines += [f"Records like everything-on's (capture `{rec['capture']}`), {rec['settings']}; {rec['loop']} loop.", "",
              "| part | offered | written | written/s | backlog max | backlog at end | flushed after | spilled | "
              "dropped | submit µs/record |", "|---|---|---|---|---|---|---|---|---|---|",
              f"| sustained {s['seconds']:.3g} s | {s['offered_per_s']:,.0f}/s ({s['submitted']:,}) | "
              f"{s['written']:,} | "
              f"{s['written_per_s']:,.0f} (in the window) | {s['backlog_max']:,} | {s['backlog_at_end']:,} | "
              f"{s['flush_after_s'] * 1000:.0f} ms | {s['spilled']} | {s['dropped']} | {s['submit_us_per_record']} |"]
    if m:
        lines.append(f"| maximum | {m['records']:,} at once | {m['written']:,} | {m['records_per_s']:,.0f} "
                     f"(end to end, {m['seconds']:.1f} s) | – | – | – | {m['spilled']} | {m['dropped']} | "
                     f"{m['submit_us_per_record']} |")
    lines += ["", "Event-loop lag (how late a 1 ms asyncio ticker fires), ms:", "",
              "| | ticks | p50 | p90 | p99 | p99.9 | max | mean |", "|---|---|---|---|---|---|---|---|"]
    added = rec.get("loop_lag_added_ms", {})
    for label, lag in (("ticker alone", rec["baseline_loop_lag_ms"]),
                       (f"recorder at {s['offered_per_s']:,.0f}/s", s["loop_lag_ms"])):
        cells = " | ".join(_fmt(lag[q]) for q in ("p50", "p90", "p99", "p999", "max", "mean"))
        lines.append(f"| {label} | {lag['ticks']:,} | {cells} |")
    lines.append("| increase | | " + " | ".join(_fmt(added.get(q)) for q in ("p50", "p90", "p99", "p999", "max"))
                 + " | |")
    if m:
        lines += ["", f"Record: {m['record_json_bytes']:,} bytes of JSON before sealing; "
                      f"{m['db_bytes_per_record']:,} bytes of SQLite file per record."]
    return lines + [""]


def _fig(report: dict, scenario: str, system: str, key: str):
    return report["comparison"].get(scenario, {}).get(system, {}).get("figures", {}).get(key)


def targets(report: dict) -> list[dict]:
    """The issue's targets against this run (only those whose scenarios ran)."""
    rows = []
    full = "sluicegate-full"

    def row(target: str, value, limit, better: str, fmt: str = "{:.3f}") -> None:
        if value is None:
            return
        met = value <= limit if better == "le" else value >= limit
        rows.append({"target": target, "measured": fmt.format(value), "value": value, "limit": limit,
                     "met": "yes" if met else f"no (by {abs(value - limit):.3g})"})

    row("everything-on added p50 at 300 RPS ≤ 0.5 ms", _fig(report, "open-300", full, "add_p50"), 0.5, "le")
    row("everything-on added p99 at 300 RPS ≤ 2 ms", _fig(report, "open-300", full, "add_p99"), 2.0, "le")
    lite = _fig(report, "max-c64", "litellm", "rps")
    for s in ("sluicegate-minimal", full):
        rps = _fig(report, "max-c64", s, "rps")
        if rps is not None and lite:
            row(f"{s} max RPS ≥ 10× LiteLLM (1 worker)", rps / lite, 10, "ge", "{:.1f}×")
    mini = _fig(report, "max-c64", "sluicegate-minimal", "rps")
    fr = _fig(report, "max-c64", full, "rps")
    if mini and fr is not None:
        row("everything-on max RPS ≥ 70% of minimal", fr / mini, 0.7, "ge", "{:.0%}")
    row("everything-on added TTFT p50 ≤ 1 ms", _fig(report, "stream", full, "add_ttft_p50"), 1.0, "le")
    gap = _fig(report, "stream", full, "gap_p50")
    fgap = _fig(report, "stream", "floor", "gap_p50")
    if gap is not None and fgap is not None:
        row("everything-on stream gap p50 within 1 ms of the floor's (chunks not batched)",
            abs(gap - fgap), 1.0, "le", "{:.3f} ms off")
    row("everything-on share of batched gaps ≤ 1%", _fig(report, "stream", full, "batched_frac"), 0.01, "le",
        "{:.2%}")
    res = report["scenarios"]
    served = sum(r.get("upstream_requests", 0) for sc in res.values() for s, r in sc["results"].items() if s == full)
    last = [(n, sc["results"][full].get("rss_mb")) for n, sc in res.items() if full in sc["results"]]
    if last and last[-1][1] is not None:
        after, rss = last[-1]
        what = f"after {after}, {served:,} requests served in all" + ("" if served >= 100_000 else ", not 100k")
        row(f"everything-on RSS ≤ 120 MB after 100k requests (here {what})", rss, 120, "le", "{:.1f} MB")
    rec = report.get("recorder") or {}
    sus = rec.get("sustained")
    if sus:
        rate = sus["offered_per_s"]
        kept = sus["kept_up"]
        value = rate if kept else sus["written_per_s"]
        maxi = (rec.get("maximum") or {}).get("records_per_s")
        measured = (f"{rate:,.0f}/s offered for {sus['seconds']:.3g} s: {sus['written']:,} of {sus['submitted']:,} "
                    f"written, {sus['spilled']} spilled, {sus['dropped']} dropped, backlog ≤ {sus['backlog_max']:,}"
                    + (f"; maximum {maxi:,.0f}/s" if maxi else ""))
        rows.append({"target": "recorder ≥ 5,000 records/s sustained into SQLite (recorder scenario; everything-on "
                               "records)", "measured": measured, "value": value, "limit": 5000,
                     "met": "yes" if kept and rate >= 5000
                     else f"no ({'fell behind' if not kept else 'offered less'})"})
        lag, added = sus["loop_lag_ms"], (rec.get("loop_lag_added_ms") or {}).get("p99")
        base = rec["baseline_loop_lag_ms"]
        if added is not None:
            rows.append({"target": "without raising request latency: event-loop lag p99 with the recorder at "
                                   "5,000/s, increase over the loop alone ≤ 0.5 ms",
                         "measured": f"+{added:.3f} ms (p99 {lag['p99']:.3f} vs {base['p99']:.3f} ms alone; "
                                     f"max {lag['max']:.1f} vs {base['max']:.1f} ms)",
                         "value": added, "limit": 0.5,
                         "met": "yes" if added <= 0.5 else f"no (by {added - 0.5:.3g})"})
    return rows


def reference(report: dict) -> list[dict]:
    """Reference lines next to the targets: what the Python stack alone costs, and what is Sluicegate's."""
    rows = []
    for sc in ("open-300", "open-100", "open-600", "open-50"):
        bare = [_fig(report, sc, "bare-stack", f"add_{q}") for q in ("p50", "p99")]
        if bare[0] is None:
            continue
        rows.append({"what": f"stack floor: bare stack (uvicorn + aiohttp, no logic) added latency at {sc}",
                     "measured": f"p50 {bare[0]:.3f} ms, p99 {bare[1]:.3f} ms"})
        for s in ("sluicegate-minimal", "sluicegate-full"):
            own = [_fig(report, sc, s, f"add_{q}") for q in ("p50", "p99")]
            if own[0] is not None:
                rows.append({"what": f"{s} minus bare stack at {sc} (Sluicegate's own logic)",
                             "measured": f"p50 {own[0] - bare[0]:+.3f} ms, p99 {own[1] - bare[1]:+.3f} ms"})
        break
    bare_ttft = _fig(report, "stream", "bare-stack", "add_ttft_p50")
    if bare_ttft is not None:
        parts = [f"bare stack {bare_ttft:.3f} ms"]
        for s in ("sluicegate-minimal", "sluicegate-full"):
            ttft = _fig(report, "stream", s, "add_ttft_p50")
            if ttft is not None:
                parts.append(f"{s} {ttft:.3f} ms ({ttft - bare_ttft:+.3f} over the bare stack)")
        rows.append({"what": "stream: added TTFT p50", "measured": "; ".join(parts)})
    maxsc = "max-c64" if "max-c64" in report["comparison"] else "max-c8"
    bare_rps = _fig(report, maxsc, "bare-stack", "rps")
    if bare_rps:
        for s in ("sluicegate-minimal", "sluicegate-full"):
            rps = _fig(report, maxsc, s, "rps")
            cpu = _fig(report, maxsc, s, "cpu_ms_per_req")
            bare_cpu = _fig(report, maxsc, "bare-stack", "cpu_ms_per_req")
            if rps:
                extra = f"; CPU {cpu:.3f} vs {bare_cpu:.3f} ms/req" if cpu is not None and bare_cpu is not None else ""
                rows.append({"what": f"{s} max RPS vs bare stack ({maxsc})",
                             "measured": f"{rps:,.0f} vs {bare_rps:,.0f} RPS ({rps / bare_rps:.0%}){extra}"})
    return rows
