"""Renderers: the terminal table and the self-contained HTML page show the JSON's figures."""

from __future__ import annotations

import re

from proxy.reports import build_report, render_html, render_text
from tests.reports.test_engine import METRICS, fill, store  # noqa: F401 (fixture)


async def test_text_and_html(store):  # noqa: F811
    await fill(store)
    report = await build_report(store, metrics=METRICS, controls={"bot": "A"}, weights={"bot": {"A": 50, "B": 50}})
    text = render_text(report)
    r = report["routes"][0]
    for a in r["arms"]:
        assert a["variant"] in text and str(a["requests"]) in text
    for c in r["comparisons"]:
        assert c["verdict"] in text
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<html") == 1 and page.rstrip().endswith("</html>")
    assert page.count("<svg") >= 4
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page
    for a in r["arms"]:
        assert f"<td>{a['requests']}</td>" in page
        m = a["metrics"]["ok"]
        assert f"{100 * m['rate']:.1f}%" in page
    for c in r["comparisons"]:
        assert c["verdict"] in page and f"{c['diff']:+.4g}" in page


async def test_empty_report_renders(store):  # noqa: F811
    report = await build_report(store)
    assert "no records" in render_text(report)
    assert "<html" in render_html(report)


async def test_the_unit_the_periods_and_the_srm_on_units_are_shown(store):  # noqa: F811
    """Sticky users and a policy change from 50/50 to 80/20: the text and
    the page say what the unit is, when the split changed, the periods, the sample-ratio check on units and the
    warnings — the same numbers as the JSON."""
    from proxy.routing import Splitter
    from tests.reports.test_clustered_report import OK, T0, World

    w = World(seed=4)
    for day, (weights, version) in enumerate((({"A": 50, "B": 50}, "v1"), ({"A": 80, "B": 20}, "v2"))):
        w.users(200, Splitter("bot", weights), t0=T0 + day * 86400, t1=T0 + (day + 1) * 86400, version=version,
                lo=3, hi=6)
    await w.write(store)
    report = await build_report(store, metrics=OK, weights={"bot": {"A": 80, "B": 20}}, policy_version="v2")
    r = report["routes"][0]
    text, page = render_text(report), render_html(report)
    units = ", ".join(f"{a['variant']} {a['units']['total']}" for a in r["arms"])
    assert f"unit: {r['unit']['label']} — units per arm: {units}" in text
    assert "unit of analysis: <b>user (sticky key)</b>" in page
    change, = r["split_changes"]
    assert "policy version v1 → v2" in text and "Allocation changes" in page
    for p in (p for p in r["periods"] if p["arms"]):
        cells = ", ".join(f"{a} {v['units']}/{v['requests']}" for a, v in p["arms"].items())
        assert cells in text
    srm = r["srm"]
    assert f"sample-ratio check on units (user (sticky key)) in period {srm['period']}" in text
    assert f"observed {srm['observed']}" in text
    assert f"observed {srm['observed']}".replace("'", "&#x27;") in page
    for c in r["checks"]:
        assert c["figure"].replace("_", " ") in text or c["figure"] == "log_latency"
    assert "latency (geometric mean)" in text and "Per-unit figures" in page
    for wmsg in r["warnings"]:
        assert f"⚠ {wmsg}" in text
    assert any("allocation changed" in x for x in r["warnings"])
