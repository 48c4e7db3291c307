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
