"""deploy/grafana: the dashboard queries only the metric families /metrics exposes, with their labels,
counters and histograms through rate(); it has the panels issue 10 asks for; provisioning points at
the compose services."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy._files import (
    COUNTERS,
    DEPLOY,
    GAUGES,
    HISTOGRAMS,
    compose,
    dashboard,
    host_port,
    series_labels,
)

PROMQL_WORDS = {
    # aggregations, functions and keywords that may appear as bare identifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
}
RATE_FUNCTIONS = {"rate", "irate", "increase"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert m, f"variable {var['name']}: unexpected query {query!r}"
            yield f"variable {var['name']}", f"{m.group(1)}{{{m.group(2)}!=\"\"}}"


def _strip(expr: str) -> str:
    """The query without string literals, range selectors and Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    return re.sub(r"\$\{?\w+\}?", "", expr)


def _metrics(expr: str) -> list[tuple[str, int]]:
    """(name, position) of every series name in the query."""
    text = _strip(expr)
    text_no_braces = re.sub(r"\{[^}]*\}", lambda m: " " * len(m.group(0)), text)
    text_no_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                               lambda m: " " * len(m.group(0)), text_no_braces)
    out = []
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text_no_groupings):
        word = m.group(0)
        following = text_no_groupings[m.end():].lstrip()
        if following.startswith("("):  # a function or aggregation call
            continue
        if word.lower() in PROMQL_WORDS or re.fullmatch(r"[0-9.e+-]+", word):
            continue
        out.append((word, m.start()))
    return out


def _labels(expr: str) -> set[str]:
    """Label names in groupings and matchers."""
    text = _strip(expr)
    names: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        names |= {g.strip() for g in group.split(",") if g.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", text):
        names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    return names


def _enclosing_call(expr: str, position: int) -> str | None:
    """The name of the innermost function call whose parentheses enclose `position`."""
    depth = 0
    for i in range(position - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                m = re.search(r"([A-Za-z_]+)\s*$", expr[:i])
                return m.group(1) if m else None
            depth -= 1
    return None


QUERIES = list(_queries())
PANEL_QUERIES = [(where, expr) for where, expr in QUERIES if where.startswith("panel ")]


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_uses_only_exposed_metrics_and_their_labels(where: str, expr: str) -> None:
    known = series_labels()
    metrics = _metrics(expr)
    assert metrics, f"{where}: no metric in {expr!r}"
    unknown = sorted({name for name, _ in metrics if name not in known})
    assert not unknown, f"{where}: not exposed by /metrics: {unknown}"
    allowed = set().union(*(known[name] for name, _ in metrics))
    assert _labels(expr) <= allowed, f"{where}: labels {sorted(_labels(expr) - allowed)} not on {sorted({n for n, _ in metrics})}"


@pytest.mark.parametrize(("where", "expr"), PANEL_QUERIES, ids=[w for w, _ in PANEL_QUERIES])
def test_counters_and_histograms_are_read_through_rate(where: str, expr: str) -> None:
    """A raw counter graph only ever goes up (and resets on restart): it must go through rate().
    Exception: the judge's spend, a counter of today's dollars, shown as a value."""
    stripped = _strip(expr)
    for name, position in _metrics(expr):
        if name == "sluicegate_judge_cost_usd_total" or not name.endswith(("_total", "_bucket", "_sum", "_count")):
            continue
        assert _enclosing_call(stripped, position) in RATE_FUNCTIONS, f"{where}: {name} outside rate() in {expr!r}"


def test_histogram_quantiles_aggregate_by_le() -> None:
    for where, expr in QUERIES:
        for m in re.finditer(r"histogram_quantile\(\s*[0-9.]+\s*,\s*sum by \(([^)]*)\)", expr):
            assert "le" in {g.strip() for g in m.group(1).split(",")}, where
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr, where


def test_every_metric_family_has_a_panel() -> None:
    used = {name for _, expr in QUERIES for name, _ in _metrics(expr)}
    families = set()
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        families.add(base if base in HISTOGRAMS else name)
    missing = (set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS)) - families
    assert not missing, f"no panel for {sorted(missing)}"


def _panel(title_pattern: str) -> dict[str, Any]:
    found = [p for p in _panels(dashboard()["panels"]) if re.search(title_pattern, p["title"], re.IGNORECASE)]
    assert found, f"no panel titled like {title_pattern!r}"
    return found[0]


def _exprs(panel: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for t in panel["targets"])


def test_the_panels_issue_10_asks_for() -> None:
    assert "by (route, variant, metric)" in _exprs(_panel(r"success rate per variant"))
    assert "sluicegate_success_rate" in _exprs(_panel(r"success rate per variant"))
    latency = _exprs(_panel(r"request latency p50 / p95 / p99"))
    assert all(f"histogram_quantile({q}," in latency for q in ("0.5", "0.95", "0.99"))
    assert "sluicegate_request_duration_seconds_bucket" in latency
    assert "sluicegate_requests_total" in _exprs(_panel(r"request rate"))
    assert "sluicegate_time_to_first_token_seconds_bucket" in _exprs(_panel(r"time to first token"))
    assert "by (taxonomy, severity)" in _exprs(_panel(r"guard failures by class"))
    assert "sluicegate_canary_stage_percent" in _exprs(_panel(r"canary stage"))
    queue = _exprs(_panel(r"queue lag"))
    assert "sluicegate_scoring_queue_lag" in queue and "sluicegate_scoring_queue_depth" in queue
    recorder = _exprs(_panel(r"spilled and dropped"))
    assert "sluicegate_recorder_spilled_total" in recorder and "sluicegate_recorder_dropped_total" in recorder
    assert "sluicegate_judge_cost_usd_total" in _exprs(_panel(r"judge spend"))


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "sluicegate" and board["title"]
    panels = list(_panels(board["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == datasource["uid"] for t in panel["targets"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_provisioning_points_at_the_compose_services() -> None:
    services = compose()["services"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    host, port = host_port(datasource["url"])
    assert host == "prometheus" and host in services
    assert any(f"--web.listen-address=:{port}" in a for a in services["prometheus"]["command"]) or port == 9090
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sluicegate.yml").read_text())["providers"][0]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/sluicegate.json"
