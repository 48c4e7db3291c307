"""The report as a terminal table (plain text, no dependency)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

__all__ = ["canary_lines", "check_lines", "fmt", "render_text", "scores_lines", "shadow_lines", "srm_lines",
           "unit_lines"]


def fmt(x: Any, kind: str = "") -> str:
    if x is None:
        return "—"
    if kind == "pct":
        return f"{100 * x:.1f}%"
    if kind == "ms":
        return f"{x:.0f}"
    if kind == "usd":
        return f"${x:.6f}"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("─" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def render_text(report: dict[str, Any]) -> str:
    out: list[str] = []
    if not report["routes"]:
        out.append("no records in the window")
    for r in report["routes"]:
        out.append(f"route {r['route']}  (control: {r['control']})")
        out += unit_lines(r)
        rows = []
        for a in r["arms"]:
            cov = a["coverage"]["requests"]["pct"]
            rows.append([a["variant"] + (" (control)" if a["is_control"] else ""), str(a["requests"]),
                         str(a.get("units", {}).get("total", "—")), str(a["episodes"]), str(a["outcomes_received"]),
                         "—" if cov is None else f"{cov:.1f}%", fmt(a["guards"]["rate"], "pct"),
                         fmt(a["error_rate"], "pct"), str(a["fallbacks"]), str(a["retries"]),
                         fmt(a["latency_ms"]["p50"], "ms"), fmt(a["latency_ms"]["p95"], "ms"),
                         fmt(a["latency_ms"]["p99"], "ms"), fmt(a["ttft_ms"]["p50"], "ms"),
                         fmt(a["cost"]["per_request_usd"], "usd"), fmt(a["cost"]["per_success_usd"], "usd"),
                         "yes" if a["drift"]["drifted"] else "no"])
        out += _table(["variant", "requests", "units", "episodes", "outcomes", "coverage", "guard fail", "errors",
                       "fallbacks", "retries", "p50 ms", "p95 ms", "p99 ms", "ttft p50", "cost/req",
                       "cost/success", "drift"], rows)
        out.append("")
        rows = []
        for a in r["arms"]:
            for name, m in a["metrics"].items():
                if not m["n"]:
                    continue
                value = m.get("rate", m.get("mean"))
                kind = "pct" if "rate" in m else ""
                lo, hi = m["interval"]
                rows.append([a["variant"], name, str(m["n"]), fmt(value, kind),
                             f"[{fmt(lo, kind)}, {fmt(hi, kind)}]"])
        if rows:
            out += _table(["variant", "metric", "n", "value", "95% interval"], rows)
            out.append("")
        if r["comparisons"]:
            rows = []
            for c in r["comparisons"]:
                rows.append([f"{c['candidate']} vs {c['control']}", c["metric"], f"{c['diff']:+.4g}",
                             f"[{fmt(c['interval'][0])}, {fmt(c['interval'][1])}]", fmt(c["p_value"]),
                             fmt(c["sequential_p"]), fmt(c["sequential_p_adjusted"]), c["verdict"]])
            out += _table(["comparison", "metric", "diff", "95% CI", "p (fixed)", "always-valid p",
                           "adjusted p", "verdict"], rows)
            if r["multiple_comparisons"]:
                out.append(f"verdicts use always-valid p-values Holm-adjusted over this route's "
                           f"{len(r['comparisons'])} candidate × metric comparisons")
            for c in r["comparisons"]:
                how = c.get("analysis", {}).get("method")
                out.append(f"  {c['candidate']} / {c['metric']}: {c['verdict']} — {c['reason']}; {c['meaning']}"
                           + (f" [{how}]" if how and c["analysis"]["clustered"] else ""))
            out.append("")
        out += check_lines(r.get("checks") or [])
        out += srm_lines(r)
        for a in r["arms"]:
            g = a["guards"]
            if g["by_class"]:
                out.append(f"guard failures {a['variant']}: " + ", ".join(
                    f"{x['class']}/{x['severity']} {x['failures']}" for x in g["by_class_severity"]))
        for w in r["warnings"]:
            out.append(f"⚠ {w}")
        out.append("")
    out += scores_lines(report.get("scores"))
    out += shadow_lines(report.get("shadows") or [])
    out += canary_lines(report.get("canary") or [])
    return "\n".join(out)


def unit_lines(r: dict[str, Any]) -> list[str]:
    """The unit of analysis, units per arm, and the periods when the allocation changed."""
    unit = r.get("unit")
    if not unit:
        return []
    per_arm = ", ".join(f"{a['variant']} {a['units']['total']}" for a in r["arms"] if "units" in a)
    out = [f"unit: {unit['label']} — units per arm: {per_arm}"]
    changes = r.get("split_changes") or []
    if changes:
        out.append("allocation changes: " + "; ".join(f"{_utc(c['at'])} {c['change']}" for c in changes))
        rows = []
        for p in r.get("periods") or []:
            if not p["arms"]:
                continue
            rows.append([str(p["index"]), _utc(p["start"]) if p["start"] is not None else "start",
                         p["because"], _weights(p["weights"]),
                         ", ".join(f"{a} {v['units']}/{v['requests']}" for a, v in p["arms"].items())])
        out += _table(["period", "from", "why", "weights", "units/requests per arm"], rows)
        out.append("comparisons are stratified over these periods (never pooled across an allocation change)")
    out.append("")
    return out


def _weights(w: dict[str, float] | None) -> str:
    return "unknown" if not w else "/".join(f"{x}:{v:g}" for x, v in w.items())


def _utc(epoch: float | None) -> str:
    return "—" if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def srm_lines(r: dict[str, Any]) -> list[str]:
    s = r.get("srm")
    if not s:
        return []
    what = f"units ({r['unit']['label']})" if r.get("unit") else "units"
    several = sum(1 for p in r.get("periods") or [] if p["arms"]) > 1
    where = f" in period {s['period']}" if several else ""
    if s.get("periods_tested", 1) > 1:
        where += f" (the smallest p of {s['periods_tested']} periods tested)"
    line = (f"sample-ratio check on {what}{where}: observed {s['observed']} vs weights {s['weights']}: "
            f"chi2 = {s['chi2']:.3g}, p = {s['p']:.3g}, threshold {s['threshold']:.2g}"
            + ("  ⚠ MISMATCH" if s["warning"] else " (ok)"))
    if s.get("observed_requests") and s["observed_requests"] != s["observed"]:
        line += f"; requests {s['observed_requests']} (not tested: requests per unit differ by design)"
    return [line]


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """Request-level figures per unit: candidate − control with the always-valid sequence."""
    if not checks:
        return []
    rows = []
    for c in checks:
        if c["figure"] == "log_latency":
            lo, hi = c["ratio_confidence_sequence"]
            rows.append([f"{c['candidate']} vs {c['control']}", "latency (geometric mean)",
                         f"{c['control_value']:.0f} ms", f"{c['candidate_value']:.0f} ms", f"×{c['ratio']:.3f}",
                         f"[×{fmt(lo)}, ×{fmt(hi)}]", fmt(c["sequential_p"])])
        else:
            rows.append([f"{c['candidate']} vs {c['control']}", c["figure"].replace("_", " "),
                         fmt(c["control_value"], "pct"), fmt(c["candidate_value"], "pct"), f"{c['diff']:+.4g}",
                         f"[{fmt(c['confidence_sequence'][0])}, {fmt(c['confidence_sequence'][1])}]",
                         fmt(c["sequential_p"])])
    out = _table(["comparison", "per unit", "control", "candidate", "difference", "always-valid 95% CS",
                  "always-valid p"], rows)
    out.append("")
    return out


def _when(epoch: float | None) -> str:
    return "—" if epoch is None else datetime.fromtimestamp(epoch).isoformat(timespec="seconds")


def canary_lines(canaries: list[dict[str, Any]]) -> list[str]:
    """Each canary: where it stands, then its decisions newest first (the reason holds the figures)."""
    out: list[str] = []
    for c in canaries:
        out.append(f"canary {c['route']}: {c['candidate']} at {c['stage']:g}% (baseline {c['baseline']}), "
                   f"status {c['status']} since {_when(c['since'])}; stages {c['stages']}, "
                   f"success metric {c['success_metric']}")
        if not c["decisions"]:
            out.append("  no decisions yet")
        for d in c["decisions"]:
            out.append(f"  {_when(d['at'])}  {d['action']:<9} {d['from_stage']:g}% -> {d['to_stage']:g}%  "
                       f"[{d['rule']}, {d['actor']}] {d['reason']}")
        out.append("")
    return out


def shadow_lines(shadows: list[dict[str, Any]]) -> list[str]:
    """Shadow vs primary on the same requests: pass rates and McNemar's paired test."""
    if not shadows:
        return []
    rows = []
    for s in shadows:
        for name, c in [("no guard failure", s["guards"]), *s["scorers"].items()]:
            rows.append([s["route"], f"{s['shadow']} vs {s['primary']}", name, str(c["pairs"]),
                         fmt(c["primary_pass_rate"], "pct"), fmt(c["shadow_pass_rate"], "pct"),
                         f"{c['primary_only_pass']}/{c['shadow_only_pass']}", fmt(c["p_value"]),
                         c["test"]])
    out = ["shadow vs primary (paired: the same requests answered by both)"]
    out += _table(["route", "shadow vs primary", "result", "pairs", "primary pass", "shadow pass",
                   "only primary/only shadow", "p", "test"], rows)
    for s in shadows:
        if s["shadow_errors"]:
            out.append(f"  {s['shadow']} on {s['route']}: {s['shadow_errors']} of {s['shadowed']} shadow calls "
                       "got no answer (not paired)")
    out.append("")
    return out


def scores_lines(scores: dict[str, Any] | None) -> list[str]:
    """Scores per route, variant and scorer; untrusted judges marked (they never drive a verdict)."""
    if not scores or not scores.get("routes"):
        return []
    out: list[str] = []
    for route, variants in scores["routes"].items():
        rows = []
        for variant, scorers in variants.items():
            for name, f in scorers.items():
                lo, hi = f["pass_rate_ci"]
                trust = ""
                if f["kind"] == "llm_judge":
                    trust = "trusted" if f["trusted"] else "UNTRUSTED"
                rows.append([variant, name, f["kind"], str(f["n"]), fmt(f["pass_rate"], "pct"),
                             f"[{fmt(lo, 'pct')}, {fmt(hi, 'pct')}]", fmt(f["pass_rate_reweighted"], "pct"),
                             fmt(f.get("pass_rate_corrected"), "pct"), str(f["judge_errors"]),
                             fmt(f["cost_usd"], "usd"), trust])
        out.append(f"scores on route {route}")
        out += _table(["variant", "scorer", "kind", "n", "pass", "95% interval", "reweighted", "corrected",
                       "judge errors", "judge cost", "judge"], rows)
        for variants_ in variants.values():
            for name, f in variants_.items():
                if f["kind"] == "llm_judge" and not f["trusted"]:
                    out.append(f"  {name}: untrusted — {f['trust']}; shown only, never used for a verdict")
                    break
        out.append("")
    for w in scores.get("warnings", []):
        out.append(f"⚠ {w}")
    return out
