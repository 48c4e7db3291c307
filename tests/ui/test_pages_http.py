"""The dashboard over HTTP, in-process: every page and JSON endpoint, admin-only; the figures on
each page equal the report JSON (`GET /v1/reports`) formatted as the reports format them; canary
actions write decisions as `sluicegate canary` does; forged forms are refused."""

from __future__ import annotations

import re
import time

import orjson
import pytest

from proxy.canary._state import history, read_stages
from proxy.reports._render_text import fmt
from tests.ui._seed import CALLER_KEY
from tests.ui.conftest import ORIGIN, UI, csrf_token, figures, rows_of, running, text_of

PAGES = ["/ui", "/ui/routes/support-bot", "/ui/routes/faq?since=24h", "/ui/canary/support-bot", "/ui/records",
         "/ui/records?route=faq&outcome=ok", "/ui/review"]
APIS = ["/ui/api/overview", "/ui/api/routes/support-bot", "/ui/api/canary/support-bot", "/ui/api/records",
        "/ui/api/review"]


def pct(x):
    return fmt(x, "pct")


def interval(pair, kind=""):
    return f"[{fmt(pair[0], kind)}, {fmt(pair[1], kind)}]"


async def report(ui: UI, route: str | None = None, **query: str) -> dict:
    response = await ui.client.get("/v1/reports" + (f"/{route}" if route else ""), params=query)
    assert response.status_code == 200, response.text
    return response.json()


# --------------------------------------------------------------------------- access


async def test_every_page_and_endpoint_needs_an_admin_key(ui: UI) -> None:
    record = ui.notable["fallback_request"]
    gets = [*PAGES, *APIS, f"/ui/records/{record}", f"/ui/api/records/{record}", "/ui/static/ui.css",
            "/ui/static/ui.js", "/ui/static/review.js"]
    caller = {"authorization": f"Bearer {CALLER_KEY}"}
    for path in gets:
        assert (await ui.client.get(path)).status_code == 200, path
        anonymous = await ui.anonymous.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key", path
        as_caller = await ui.anonymous.get(path, headers=caller)
        assert as_caller.status_code == 403 and as_caller.json()["error"]["code"] == "admin_key_required", path
    for path in ("/ui/canary/support-bot", f"/ui/records/{record}/replay", f"/ui/api/records/{record}/replay"):
        form = path.startswith("/ui/api/") and {"json": {"variant": None}} or {"data": {"action": "pause"}}
        assert (await ui.anonymous.post(path, **form)).status_code == 401, path
        assert (await ui.anonymous.post(path, headers=caller)).status_code == 403, path
    assert [d["rule"] for d in await history(ui.gateway.store, "support-bot")] == ["non_inferior"]


async def test_pages_are_self_contained_html_with_a_strict_csp(ui: UI) -> None:
    for path in PAGES:
        response = await ui.client.get(path)
        assert response.headers["content-type"].startswith("text/html"), path
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "form-action 'self'" in csp
        body = response.text
        assert "http://" not in body and "https://" not in body, f"{path} refers to another site"
        for src in re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', body):
            assert src.startswith("/ui/static/"), (path, src)
        assert re.search(r'<label[^>]*for="', body) or "<form" not in body, path  # inputs are labelled
        assert ' style="' not in body, path  # the CSP allows no inline style
    js = await ui.client.get("/ui/static/review.js")
    assert js.headers["content-type"].startswith("text/javascript") and "keydown" in js.text
    assert (await ui.client.get("/ui/static/missing.js")).status_code == 404


async def test_unknown_things_are_404_on_pages_and_json(ui: UI) -> None:
    for path in ("/ui/routes/nope", "/ui/canary/faq", "/ui/canary/nope", "/ui/records/att_nope"):
        page = await ui.client.get(path)
        assert page.status_code == 404 and "problem" in page.text, path
    for path in ("/ui/api/routes/nope", "/ui/api/canary/faq", "/ui/api/records/att_nope"):
        response = await ui.client.get(path)
        assert response.status_code == 404 and response.json()["error"]["message"], path
    bad_time = await ui.client.get("/ui/api/routes/faq", params={"since": "yesterday-ish"})
    assert bad_time.status_code == 400 and bad_time.json()["error"]["param"] == "since"
    assert (await ui.client.get("/ui/routes/faq", params={"since": "yesterday-ish"})).status_code == 400
    assert (await ui.client.get("/ui/api/records", params={"colour": "red"})).status_code == 400


async def test_every_page_works_on_an_empty_store(tmp_path) -> None:
    async with running(tmp_path, seeded=False) as ui:
        for path in [*PAGES, *APIS, "/ui/routes/faq"]:
            response = await ui.client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
        overview = (await ui.client.get("/ui/api/overview")).json()
        assert [(r["route"], r["requests"], r["arms"]) for r in overview["routes"]] == [("faq", 0, []),
                                                                                        ("support-bot", 0, [])]
        assert (await ui.client.get("/ui/api/routes/faq")).json()["report"] is None
        assert "No requests of this route in the window" in (await ui.client.get("/ui/routes/faq")).text
        canary = (await ui.client.get("/ui/api/canary/support-bot")).json()
        assert (canary["stage"], canary["status"], canary["decisions"]) == (5.0, "running", [])
        review = (await ui.client.get("/ui/api/review")).json()
        assert review["item"] is None and review["progress"]["queued"] == 0 and review["reviewers"] == []
        assert (await ui.client.get("/ui/api/records")).json()["records"] == []


# --------------------------------------------------------------------------- overview


async def test_overview_figures_equal_the_report(ui: UI) -> None:
    full = await report(ui)
    data = (await ui.client.get("/ui/api/overview")).json()
    page = (await ui.client.get("/ui")).text
    assert [r["route"] for r in data["routes"]] == ["faq", "support-bot"]
    for summary in data["routes"]:
        r, = [x for x in full["routes"] if x["route"] == summary["route"]]
        total = sum(a["requests"] for a in r["arms"])
        assert summary["requests"] == total
        rows = rows_of(page, f'data-route="{summary["route"]}"', "data-variant")
        for arm, shown in zip(r["arms"], summary["arms"]):
            metric = arm["metrics"][summary["success_metric"]]
            assert shown["variant"] == arm["variant"] and shown["requests"] == arm["requests"]
            assert shown["share"] == arm["requests"] / total
            assert shown["success"] == {k: metric[k] for k in ("n", "successes", "rate", "interval")}
            assert shown["guard_rate"] == arm["guards"]["rate"]
            cells = rows[arm["variant"]]
            assert cells["requests"] == str(arm["requests"])
            assert cells["share"] == pct(arm["requests"] / total)
            assert cells["success_rate"] == pct(metric["rate"])
            assert cells["success_interval"] == interval(metric["interval"], "pct")
            assert cells["success_n"] == str(metric["n"])
            assert cells["guard_rate"] == pct(arm["guards"]["rate"])
            assert cells["latency_p95_ms"] == fmt(arm["latency_ms"]["p95"], "ms")
        assert [v["verdict"] for v in summary["verdicts"]] == [c["verdict"] for c in r["comparisons"]]
    faq, bot = data["routes"]
    assert faq["split"] == {"prod": 50.0, "cand": 50.0}
    assert [a["configured_share"] for a in faq["arms"]] == [0.5, 0.5]
    assert bot["canary"] == {"stage": 25.0, "status": "running", "baseline": "prod", "candidate": "cand"}
    assert [a["configured_share"] for a in bot["arms"]] == [0.75, 0.25]
    assert bot["shadow"] == {"model": "next", "rate": 0.1}
    # alerts: the split's sample-ratio mismatch, the candidate's drift, the untrusted judge, same-family judges
    assert {a["kind"] for a in faq["alerts"]} >= {"srm", "drift"}
    assert {a["kind"] for a in bot["alerts"]} >= {"drift", "untrusted_judge", "judge_family"}
    assert 'data-alert="srm"' in page and 'data-alert="untrusted_judge"' in page
    assert data["judge_budget"] == full["scores"]["judge_budget"] | {"resets_at": data["judge_budget"]["resets_at"]}
    assert "<svg" in page and "success rate with 95% Wilson interval" in page


# --------------------------------------------------------------------------- route report


def _same_report(a: dict, b: dict) -> None:
    strip = lambda r: {k: v for k, v in r.items() if k not in ("generated_at", "timings")}  # noqa: E731
    assert strip(a) == strip(b)


async def test_route_page_shows_every_figure_of_the_report(ui: UI) -> None:
    full = await report(ui, "support-bot")
    data = (await ui.client.get("/ui/api/routes/support-bot")).json()
    r, = full["routes"]
    assert data["report"] == r  # everything the engine computes for the route, as /v1/reports has it
    assert data["scores"] == full["scores"]["routes"]["support-bot"] and data["shadows"] == full["shadows"]
    _same_report(data["canary"], full["canary"][0])
    page = (await ui.client.get("/ui/routes/support-bot")).text
    arms = rows_of(page, 'id="arms-h"', "data-variant")
    for a in r["arms"]:
        cells = arms[a["variant"]]
        expected = {
            "requests": str(a["requests"]), "episodes": str(a["episodes"]),
            "outcomes_received": str(a["outcomes_received"]), "guard_rate": pct(a["guards"]["rate"]),
            "error_rate": pct(a["error_rate"]), "fallbacks": str(a["fallbacks"]), "retries": str(a["retries"]),
            "latency_p50": fmt(a["latency_ms"]["p50"], "ms"), "latency_p95": fmt(a["latency_ms"]["p95"], "ms"),
            "latency_p99": fmt(a["latency_ms"]["p99"], "ms"), "ttft_p50": fmt(a["ttft_ms"]["p50"], "ms"),
            "ttft_p95": fmt(a["ttft_ms"]["p95"], "ms"), "cost_per_request": fmt(a["cost"]["per_request_usd"], "usd"),
            "cost_per_success": fmt(a["cost"]["per_success_usd"], "usd"),
            "prompt_per_request": fmt(a["tokens"]["prompt_per_request"]),
            "drift": "yes" if a["drift"]["drifted"] else "no",
            "coverage": pct(a["coverage"]["requests"]["pct"] / 100),
        }
        assert {k: cells[k] for k in expected} == expected, a["variant"]
    outcomes = rows_of(page, 'id="outcomes-h"', "data-variant")
    for a in r["arms"]:
        m = a["metrics"]["task_success"]
        assert outcomes[a["variant"]] == {"n": str(m["n"]), "value": pct(m["rate"]),
                                          "interval": interval(m["interval"], "pct")}
    c, = r["comparisons"]
    shown = rows_of(page, 'id="outcomes-h"', "data-comparison")["cand:task_success"]
    assert shown["diff"] == fmt(c["diff"]) and shown["sequential_p_adjusted"] == fmt(c["sequential_p_adjusted"])
    assert shown["confidence_sequence"] == interval(c["confidence_sequence"]) and shown["verdict"] == c["verdict"]
    classes = [(a["variant"], x["class"], x["severity"], x["failures"]) for a in r["arms"]
               for x in a["guards"]["by_class_severity"]]
    for variant, cls, severity, failures in classes:
        row = re.search(rf'<tr data-variant="{variant}" data-class="{cls}" data-severity="{severity}">(.*?)</tr>',
                        page, re.S)
        assert row and f'data-figure="failures">{failures}<' in row.group(1)
    scores = rows_of(page, 'id="scores-h"', "data-score")
    for variant, scorers in data["scores"].items():
        for name, f in scorers.items():
            assert scores[f"{variant}:{name}"]["n"] == str(f["n"])
            assert scores[f"{variant}:{name}"]["pass_rate"] == pct(f["pass_rate"])
            assert scores[f"{variant}:{name}"]["pass_rate_ci"] == interval(f["pass_rate_ci"], "pct")
    for title in ("success rate per hour with 95% Wilson band", "guard failures by severity per hour",
                  "latency p95 per hour", "cost per successful task"):
        assert title in page, title
    assert 'id="since"' in page and '<label for="since">' in page


async def test_series_over_time_add_up_to_the_report(ui: UI) -> None:
    data = (await ui.client.get("/ui/api/routes/support-bot")).json()
    series, r = data["series"], data["report"]
    assert series["bucket_seconds"] == 3600.0 and data["window"]["bucket"] == "hour"
    for a in r["arms"]:
        guards, = [s for s in series["guards"] if s["variant"] == a["variant"]]
        by_class: dict[str, int] = {}
        for p in guards["points"]:
            for cls, n in p["by_class"].items():
                by_class[cls] = by_class.get(cls, 0) + n
        assert by_class == a["guards"]["by_class"]
        cost, = [s for s in series["cost"] if s["variant"] == a["variant"]]
        assert sum(p["requests"] for p in cost["points"]) == a["requests"]
        assert sum(p["cost_usd"] or 0 for p in cost["points"]) == pytest.approx(a["cost"]["total_usd"])
        latency, = [s for s in series["latency"] if s["variant"] == a["variant"]]
        assert sum(p["n"] for p in latency["points"]) == a["latency_ms"]["n"]
        success, = [s for s in series["success"] if s["variant"] == a["variant"]]
        m = a["metrics"]["task_success"]
        assert sum(p["n"] for p in success["points"]) == m["n"]
        assert sum(p["successes"] for p in success["points"]) == m["successes"]
        assert all(p["low"] <= p["rate"] <= p["high"] for p in success["points"])
    # one bucket: its percentiles are the report's own for that window
    hour = (int(time.time()) // 3600 - 5) * 3600
    one = (await ui.client.get("/ui/api/routes/support-bot", params={"since": hour, "until": hour + 3600})).json()
    for a in one["report"]["arms"]:
        (point,), = [s["points"] for s in one["series"]["latency"] if s["variant"] == a["variant"]]
        assert [point[k] for k in ("p50", "p95", "p99")] == [a["latency_ms"][k] for k in ("p50", "p95", "p99")]


async def test_time_range_picker_filters_like_the_report(ui: UI) -> None:
    day = await report(ui, "faq", since="24h")
    data = (await ui.client.get("/ui/api/routes/faq", params={"since": "24h"})).json()
    everything = (await ui.client.get("/ui/api/routes/faq")).json()
    assert [a["requests"] for a in data["report"]["arms"]] == [a["requests"] for a in day["routes"][0]["arms"]]
    assert sum(a["requests"] for a in data["report"]["arms"]) < sum(a["requests"] for a in everything["report"]["arms"])
    page = (await ui.client.get("/ui/routes/faq", params={"since": "24h"})).text
    assert 'value="24h"' in page and 'href="/ui/api/routes/faq?since=24h"' in page
    shown = rows_of(page, 'id="arms-h"', "data-variant")["prod"]
    assert shown["requests"] == str(data["report"]["arms"][0]["requests"])


# --------------------------------------------------------------------------- canary


async def _post_canary(ui: UI, fields: dict, **headers: str):
    return await ui.client.post("/ui/canary/support-bot", data=fields, headers={"origin": ORIGIN, **headers},
                                follow_redirects=False)


async def test_canary_page_shows_stage_status_and_the_decision_log(ui: UI) -> None:
    data = (await ui.client.get("/ui/api/canary/support-bot")).json()
    full = await report(ui, "support-bot")
    status = full["canary"][0]
    assert (data["stage"], data["status"], data["decisions"][0]["figures"]) == (
        status["stage"], status["status"], status["decisions"][0]["figures"])
    bot, = full["routes"]
    base = {a["variant"]: a for a in bot["arms"]}["prod"]
    assert data["current_figures"]["baseline"]["requests"] == base["requests"]
    assert data["current_figures"]["baseline"]["outcomes"] == base["metrics"]["task_success"]["n"]
    page = (await ui.client.get("/ui/canary/support-bot")).text
    assert text_of(re.search(r'data-figure="stage">(.*?)</dd>', page).group(1)) == "25%"
    figures_row = figures(page, "data-arm", "candidate")
    assert figures_row["requests"] == str(data["current_figures"]["candidate"]["requests"])
    decision = data["decisions"][0]
    assert decision["reason"] in page and "Figures behind this decision" in page
    assert fmt(decision["figures"]["success_cs_low"]) in page
    for action in ("Pause", "Resume", "Promote", "Rollback"):
        assert f'name="action" value="{action.lower()}"' in page
    assert '<label for="reason">' in page and "required" in page


async def test_pause_and_resume_ask_for_a_reason_and_a_confirmation_then_write_decisions(ui: UI) -> None:
    token = csrf_token((await ui.client.get("/ui/canary/support-bot")).text)
    store = ui.gateway.store
    missing = await _post_canary(ui, {"csrf_token": token, "action": "pause", "reason": "  "})
    assert missing.status_code == 400 and "A reason is required" in missing.text
    ask = await _post_canary(ui, {"csrf_token": token, "action": "pause", "reason": "holiday freeze"})
    assert ask.status_code == 200 and "Confirm pause" in ask.text
    assert "candidate share 25% -&gt; 25%, status running -&gt; paused" in ask.text
    assert await read_stages(store) == {"support-bot": (25.0, "running")}  # nothing written before confirming
    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', ask.text))
    done = await _post_canary(ui, confirm)
    assert done.status_code == 303 and done.headers["location"] == "/ui/canary/support-bot?done=pause"
    assert await read_stages(store) == {"support-bot": (25.0, "paused")}
    latest = (await history(store, "support-bot"))[0]
    assert {k: latest[k] for k in ("action", "from_stage", "to_stage", "rule", "reason", "actor")} == {
        "action": "pause", "from_stage": 25.0, "to_stage": 25.0, "rule": "manual", "reason": "holiday freeze",
        "actor": "ui"}
    page = (await ui.client.get(done.headers["location"])).text
    assert "Done: pause" in page and "holiday freeze" in page
    # resume; then promote and roll back as the CLI would
    for action, reason, expected in (("resume", "back to work", (25.0, "running")),
                                     ("promote", "looks good", (50.0, "running")),
                                     ("rollback", "users complain", (0.0, "rolled_back"))):
        ask = await _post_canary(ui, {"csrf_token": token, "action": action, "reason": reason})
        confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', ask.text))
        assert (await _post_canary(ui, confirm)).status_code == 303, action
        assert (await read_stages(store))["support-bot"] == expected, action
    log = await history(store, "support-bot")
    assert [d["action"] for d in log[:4]] == ["rollback", "promote", "resume", "pause"]
    assert all(d["actor"] == "ui" and d["rule"] == "manual" for d in log[:4])
    api = (await ui.client.get("/ui/api/canary/support-bot")).json()
    assert (api["stage"], api["status"], len(api["decisions"])) == (0.0, "rolled_back", 5)


async def test_a_confirmation_shown_before_the_canary_moved_is_asked_again(ui: UI) -> None:
    token = csrf_token((await ui.client.get("/ui/canary/support-bot")).text)
    ask = await _post_canary(ui, {"csrf_token": token, "action": "promote", "reason": "go"})
    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', ask.text))
    other = await _post_canary(ui, {"csrf_token": token, "action": "pause", "reason": "x"})
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', other.text))
    assert (await _post_canary(ui, fields)).status_code == 303  # paused meanwhile
    again = await _post_canary(ui, confirm)
    assert again.status_code == 200 and "The canary changed since you looked" in again.text
    assert (await read_stages(ui.gateway.store))["support-bot"] == (25.0, "paused")


async def test_forged_forms_are_refused(ui: UI) -> None:
    token = csrf_token((await ui.client.get("/ui/canary/support-bot")).text)
    store = ui.gateway.store
    fields = {"csrf_token": token, "action": "rollback", "reason": "forged", "confirm": "yes",
              "expected_stage": "25", "expected_status": "running"}
    cases = [
        ({}, "neither an Origin nor a Referer"),
        ({"origin": "https://evil.example"}, "another site"),
        ({"referer": "https://evil.example/page"}, "another site"),
        ({"origin": "null"}, "Origin: null"),  # refused by the gateway-wide check, before the form's own
        ({"host": "gw:8080", "origin": "http://gw:9090"}, "another site"),  # another port: another origin
    ]
    for headers, message in cases:
        response = await ui.client.post("/ui/canary/support-bot", data=fields, headers=headers)
        assert response.status_code == 403 and message in response.text, headers
    for bad in ({**fields, "csrf_token": "0" * 64}, {k: v for k, v in fields.items() if k != "csrf_token"}):
        response = await _post_canary(ui, bad)
        assert response.status_code == 403 and "token" in response.text
    # a token is tied to its page: the replay form's token does not move the canary
    record = ui.notable["fallback_request"]
    other = csrf_token((await ui.client.get(f"/ui/records/{record}")).text)
    assert (await _post_canary(ui, {**fields, "csrf_token": other})).status_code == 403
    # same origin by Referer alone is fine (no Origin header): the request reaches the confirmation
    ok = await ui.client.post("/ui/canary/support-bot", data={**fields, "confirm": ""},
                              headers={"referer": f"{ORIGIN}/ui/canary/support-bot"})
    assert ok.status_code == 200 and "Confirm rollback" in ok.text
    # scheme, host and port all count (default ports filled in): another port, no port for a Host with
    # one, another scheme are other origins (a proxy in front must forward Host with its port: $http_host)
    for host, origin in (("gw", "http://gw:8080"), ("gw:8080", "http://gw"), ("gw", "https://gw"),
                         ("gw:443", "https://gw")):
        other = await ui.client.post("/ui/canary/support-bot", data={**fields, "confirm": ""},
                                     headers={"host": host, "origin": origin})
        assert other.status_code == 403 and "another site" in other.text, (host, origin)
    for host, origin in (("gw", "http://gw:80"), ("gw:80", "http://gw"), ("GW", "http://gw")):
        same = await ui.client.post("/ui/canary/support-bot", data={**fields, "confirm": ""},
                                    headers={"host": host, "origin": origin})
        assert same.status_code == 200 and "Confirm rollback" in same.text, (host, origin)
    assert (await ui.client.post("/ui/canary/support-bot", data=fields,
                                 headers={"origin": "http://gw.evil.example"})).status_code == 403
    replay = await ui.client.post(f"/ui/records/{record}/replay", data={"csrf_token": other, "variant": "cand"},
                                  headers={"origin": "https://evil.example"})
    assert replay.status_code == 403
    assert await read_stages(store) == {"support-bot": (25.0, "running")}
    assert len(await history(store, "support-bot")) == 1


# --------------------------------------------------------------------------- records


async def _stored(ui: UI) -> list[dict]:
    rows = await ui.gateway.store.fetch("SELECT data FROM records", [])
    return [orjson.loads(r[0]) for r in rows]


async def _ids(ui: UI, **query: str) -> list[str]:
    response = await ui.client.get("/ui/api/records", params=query)
    assert response.status_code == 200, response.text
    found = response.json()
    ids = [r["id"] for r in found["records"]]
    offset = 0
    while found["more"]:
        offset += found["page_size"]
        found = (await ui.client.get("/ui/api/records", params={**query, "offset": offset})).json()
        ids += [r["id"] for r in found["records"]]
    return ids


async def test_record_search_by_every_filter(ui: UI) -> None:
    rows = await _stored(ui)
    newest = lambda rs: [r["id"] for r in sorted(rs, key=lambda r: (r["started_at"], r["id"]), reverse=True)]  # noqa: E731
    request = ui.notable["fallback_request"]
    assert await _ids(ui, request_id=request) == newest([r for r in rows if r["request_id"] == request])
    attempt_id = f"att_{request[4:]}_1"
    assert await _ids(ui, request_id=attempt_id) == [attempt_id]
    some = rows[100]
    episode = some["episode_id"]
    assert await _ids(ui, episode_id=episode) == newest([r for r in rows if r["episode_id"] == episode])
    assert await _ids(ui, correlation_id=some["correlation_id"]) == newest(
        [r for r in rows if r["correlation_id"] == some["correlation_id"]])
    assert await _ids(ui, route="faq", variant="cand") == newest(
        [r for r in rows if r["route"] == "faq" and r["variant"] == "cand"])
    assert await _ids(ui, outcome="upstream_error") == newest([r for r in rows if r["outcome"] == "upstream_error"])
    failing = [r for r in rows if any(g["taxonomy"] == "forbidden_content" and not g["passed"] for g in r["guards"])]
    assert failing and await _ids(ui, guard_class="forbidden_content") == newest(failing)
    # downstream outcome: the latest task_success of the request is bad (0: the metric is maximized)
    outs = await ui.gateway.store.fetch("SELECT request_id, value FROM outcomes WHERE metric = 'task_success'", [])
    bad = {rid for rid, v in outs if v == 0.0}
    assert await _ids(ui, metric="task_success", feedback="bad", route="faq") == newest(
        [r for r in rows if r["request_id"] in bad and r["route"] == "faq"])
    since = time.time() - 6 * 3600
    assert await _ids(ui, since="6h", route="support-bot") == newest(
        [r for r in rows if r["started_at"] >= since - 5 and r["route"] == "support-bot"])
    assert await _ids(ui, request_id="req_nope") == []


async def test_records_page_links_each_record_and_pages_through(ui: UI) -> None:
    first = (await ui.client.get("/ui/api/records", params={"route": "faq"})).json()
    page = (await ui.client.get("/ui/records", params={"route": "faq"})).text
    shown = re.findall(r'<tr data-record="([^"]+)"', page)
    assert shown == [r["id"] for r in first["records"]] and len(shown) == 50 and first["more"]
    assert f'href="/ui/records/{shown[0]}"' in page
    assert 'href="/ui/records?route=faq&amp;offset=50"' in page
    for name in ("request_id", "episode_id", "correlation_id", "route", "variant", "guard_class", "outcome"):
        assert f'<label for="f-{name}">' in page and f'id="f-{name}"' in page, name


async def test_record_page_shows_everything_joined_to_the_record(ui: UI) -> None:
    request = ui.notable["shadow_request"]
    data = (await ui.client.get(f"/ui/api/records/{request}")).json()
    rows = [r for r in await _stored(ui) if r["request_id"] == request]
    served, = [r for r in rows if r["served"]]
    assert data["record"]["id"] == served["id"] and data["record"]["request"] == served["request"]
    assert data["record"]["response"] == served["response"]
    assert [(a["attempt"], a["attempt_reason"]) for a in data["attempts"]] == sorted(
        (r["attempt"], r["attempt_reason"]) for r in rows)
    assert any(a["attempt_reason"] == "shadow" and not a["served"] for a in data["attempts"])
    outs = await ui.gateway.store.fetch("SELECT id FROM outcomes WHERE request_id = ?", [request])
    assert sorted(o["id"] for o in data["outcomes"]) == sorted(o for (o,) in outs)
    page = (await ui.client.get(f"/ui/records/{request}")).text
    assert served["request"]["messages"][1]["content"] in page
    assert text_of(served["response"]["choices"][0]["message"]["content"]) in text_of(page)
    for a in data["attempts"]:
        assert f'data-attempt="{a["id"]}"' in page
    assert '<label for="variant">' in page and 'action="/ui/records/' in page
    scored = [r for r in await _stored(ui) if r["route"] == "support-bot" and r["attempt"] == 1][0]
    with_score = (await ui.client.get(f"/ui/api/records/{scored['id']}")).json()
    assert [s["scorer"] for s in with_score["scores"]] == ["helpfulness"]
    assert 'data-scorer="helpfulness"' in (await ui.client.get(f"/ui/records/{scored['id']}")).text
    fallback = (await ui.client.get(f"/ui/api/records/{ui.notable['fallback_request']}")).json()
    assert [a["attempt_reason"] for a in fallback["attempts"]] == ["primary", "fallback"]


async def test_replay_on_a_variant_shows_both_answers(ui: UI) -> None:
    record = ui.notable["fallback_request"]
    token = csrf_token((await ui.client.get(f"/ui/records/{record}")).text)
    page = await ui.client.post(f"/ui/records/{record}/replay", data={"csrf_token": token, "variant": "cand"},
                                headers={"origin": ORIGIN})
    assert page.status_code == 200, page.text
    assert 'id="replay-result"' in page.text and "replayed to cand" in page.text
    sides = re.findall(r"data-side-text>(.*?)</div>", page.text, re.S)
    assert len(sides) == 2 and "(prod) Here is what I found" in sides[0] and sides[1].strip()
    api = await ui.client.post(f"/ui/api/records/{record}/replay", json={"variant": "cand"})
    assert api.status_code == 200, api.text
    result = api.json()
    assert result["target"] == "cand" and result["replayed"]["status"] == 200
    assert result["replayed"]["model"] == "gpt-mock-candidate"
    assert result["recorded"]["text"].startswith("(prod) Here is what I found")
    assert result["replayed"]["text"] and result["replayed"]["passed_guards"]
    as_recorded = await ui.client.post(f"/ui/api/records/{record}/replay", json={"variant": None})
    assert as_recorded.json()["target"] == "the recorded model"
    unknown = await ui.client.post(f"/ui/api/records/{record}/replay", json={"variant": "nope"})
    assert unknown.status_code == 400 and "not a model" in unknown.json()["error"]["message"]
    form = await ui.client.post(f"/ui/api/records/{record}/replay", data={"variant": "cand"})
    assert form.status_code == 415  # JSON only: a cross-site form cannot post here
    assert await ui.gateway.store.fetch("SELECT count(*) FROM records WHERE request_id = ?", [record]) == [(2,)]


# --------------------------------------------------------------------------- review queue


async def test_review_page_embeds_the_queue_with_progress_per_reviewer(ui: UI) -> None:
    data = (await ui.client.get("/ui/api/review")).json()
    queued = len(ui.notable["review_ids"])
    assert data["progress"] == {"queued": queued, "labelled": 5, "pending": queued - 5, "done": 5 / queued}
    assert data["scorers"] == [{"scorer": "review", "queued": queued, "labelled": 5, "pending": queued - 5,
                                "done": 5 / queued}]
    assert [(r["reviewer"], r["labelled"], r["labels"]) for r in data["reviewers"]] == [
        ("ana", 3, {"pass": 2, "fail": 1}), ("ben", 2, {"fail": 1, "pass": 1})]
    next_item = (await ui.client.get("/v1/review/next")).json()
    assert data["item"]["id"] == next_item["id"] and data["pending"] == queued - 5
    assert next_item["id"] in ui.notable["review_ids"][5:]  # the first five are labelled
    page = (await ui.client.get("/ui/review")).text
    script = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page, re.S)
    initial = orjson.loads(script.group(1))
    assert initial["item"]["id"] == next_item["id"] and initial["pending"] == queued - 5
    assert '<script src="/ui/static/review.js" defer></script>' in page
    assert text_of(re.search(r'data-figure="progress">(.*?)</p>', page).group(1)) == (
        f"5 of {queued} labelled ({fmt(5 / queued, 'pct')}), {queued - 5} pending")
    assert 'data-reviewer="ana"' in page and "<kbd>Enter</kbd>" in page
    for element in ("reviewer", "labels", "taxonomy", "note", "submit", "skip", "pending", "messages", "answer"):
        assert f'id="{element}"' in page, element
    # a label through the queue's own API moves the progress
    labelled = await ui.client.post(f"/v1/review/{next_item['id']}", json={"label": "fail", "reviewer": "cy"})
    assert labelled.status_code == 200
    after = (await ui.client.get("/ui/api/review")).json()
    assert after["progress"]["labelled"] == 6 and after["reviewers"][-1]["reviewer"] == "cy"


async def test_odd_inputs_are_clear_4xx_never_500(ui: UI) -> None:
    odd = ["", "nan", "inf", "-1", "1e400", "99999999999999", "2026-13-45", "%00", "'; DROP TABLE records; --",
           "x" * 600, "\u2028<script>"]
    for value in odd:
        for path, name in (("/ui/api/routes/support-bot", "since"), ("/ui/routes/faq", "until"),
                           ("/ui/api/records", "since"), ("/ui/records", "request_id"), ("/ui/api/records", "offset"),
                           ("/ui/api/records", "guard_class"), ("/ui/api/review", "scorer"), ("/ui/review", "route")):
            response = await ui.client.get(path, params={name: value})
            assert response.status_code < 500, (path, name, value, response.text[:300])
            if response.status_code == 200 and response.headers["content-type"].startswith("text/html"):
                assert "<script>" not in response.text.replace('<script src=', '').replace(
                    '<script id="initial"', ''), (path, name, value)
        for path in (f"/ui/api/routes/{value}", f"/ui/api/records/{value}", f"/ui/canary/{value}"):
            assert (await ui.client.get(path)).status_code in (200, 404, 307), path
    assert (await ui.client.get("/ui/api/records", params={"offset": 10**30})).json()["records"] == []
    assert await ui.gateway.store.fetch("SELECT count(*) FROM records", []) == [(ui.notable["record_count"],)]
