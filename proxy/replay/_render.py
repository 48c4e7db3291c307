"""The summary as text: a block for people (stdout) and one line for the end of the progress output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["one_line", "render_summary"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.6f}"


def _signed(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:+,.{digits}f}{unit}"


def _rate_line(name: str, rate: Mapping[str, Any]) -> str:
    low, high = rate["ci95"]
    return (f"  {name:<10} {_pct(rate['rate']):>7}  ({rate['passes']}/{rate['n']}, 95% CI "
            f"{low:.1%}–{high:.1%})")


def _classes(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{cls} {n}" for cls, n in counts.items()) if counts else "none"


def _p(value: float) -> str:
    return f"{value:.3g}"


def render_summary(s: Mapping[str, Any]) -> str:
    pr, paired = s["pass_rate"], s["paired"]
    lines = [f"replay of {s['corpus']}: candidate '{s['variant']}' vs baseline '{s['baseline']}' — "
             f"{s['results']} of {s['items']} items" + ("" if s["complete"] else " (PARTIAL)"),
             "pass rate (answered, no guard failure, every scorer passed):",
             _rate_line("baseline", pr["baseline"]), _rate_line("candidate", pr["candidate"])]
    diff = s["difference"]
    test = "exact" if paired["test"] == "mcnemar_exact" else "chi-square"
    lines.append(f"difference {_signed(None if diff is None else diff * 100, 1, ' points')}; paired: "
                 f"{paired['regressions']} regressions, {paired['improvements']} improvements, "
                 f"{paired['both_pass']} both pass, {paired['both_fail']} both fail; McNemar ({test}) "
                 f"p = {_p(paired['p_value'])}")
    lines.append(f"regressions by class:  {_classes(s['regressions_by_class'])}")
    lines.append(f"improvements by class: {_classes(s['improvements_by_class'])}")
    crit = s["new_critical"]
    lines.append(f"new critical failures: {crit['count']}" + (
        " (" + ", ".join(f"{i['record_id']}: {', '.join(i['classes'])}" for i in crit["items"][:5]) + ")"
        if crit["count"] else ""))
    errors = s["errors"]
    lines.append(f"errors (the candidate's upstream kept failing): {errors['count']}"
                 + (f" ({_classes(errors['by_class'])})" if errors["count"] else ""))
    lat = s["latency_ms"]
    b, c, d = lat["baseline"], lat["candidate"], lat["delta"]
    lines.append(f"latency ms  baseline mean {_num(b['mean'])} p50 {_num(b['p50'])} p95 {_num(b['p95'])} | "
                 f"candidate mean {_num(c['mean'])} p50 {_num(c['p50'])} p95 {_num(c['p95'])} | "
                 f"delta p50 {_signed(d['p50'])} p95 {_signed(d['p95'])}"
                 + (f" ({lat['cache_hits_excluded']} cache hits excluded)" if lat["cache_hits_excluded"] else ""))
    cost = s["cost_usd"]
    cb, cc = cost["baseline"], cost["candidate"]
    delta = cost["delta"]["mean"]
    lines.append(f"cost        baseline {_usd(cb['total'])} ({_usd(cb['mean'])}/item) | candidate {_usd(cc['total'])} "
                 f"({_usd(cc['mean'])}/item) | delta per item "
                 f"{'n/a' if delta is None else f'{delta:+.6f}'}")
    judge = s["judge"]
    if judge["enabled"]:
        lines.append(f"judge       {judge['calls']} calls, {judge['errors']} without a verdict, judge cost "
                     f"{_usd(judge['cost_usd'])} (apart from the models' cost)")
    else:
        lines.append("judge       not run (--judge runs the routes' llm_judge scorers on both sides)")
    drift = s["drift"]
    for kind in ("recorded", "replayed"):
        for name, entry in drift[kind].items():
            pairs = ", ".join(f"{p['model_served']}/{p['system_fingerprint']} ({p['items']})" for p in entry["pairs"])
            lines.append(f"served      {kind} {name}: {pairs}" + ("  <- DRIFT" if entry["drift"] else ""))
    if s["worst"]:
        lines.append("worst regressions:")
        for w in s["worst"]:
            sev = f" ({w['severity']})" if w["severity"] else ""
            lines.append(f"  {w['record_id']}  {', '.join(w['classes'])}{sev}  [{w['stratum']}]")
            if w["detail"]:
                lines.append(f"      {w['detail']}")
            if w["excerpt"]:
                lines.append(f"      answer: {w['excerpt']}")
    for note in s["notes"]:
        lines.append(f"note: {note}")
    gate = s.get("gate")
    if gate:
        if gate["met"]:
            lines.append("gate: FAILED — " + "; ".join(gate["met"]))
        elif gate["rules"]:
            lines.append(f"gate: passed ({', '.join(gate['rules'])})")
    return "\n".join(lines)


def one_line(s: Mapping[str, Any]) -> str:
    pr, paired = s["pass_rate"], s["paired"]
    gate = s.get("gate") or {}
    verdict = ("gate FAILED" if gate.get("met") else "gate passed") if gate.get("rules") else "no gate"
    return (f"replay: {s['results']}/{s['items']} items, pass {_pct(pr['candidate']['rate'])} vs "
            f"{_pct(pr['baseline']['rate'])}, {paired['regressions']} regressions, {paired['improvements']} "
            f"improvements, {s['new_critical']['count']} new critical, {s['errors']['count']} errors, "
            f"p = {_p(paired['p_value'])}; {verdict}")
