"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright for
Python) against `sluicegate serve` on 127.0.0.1 with a seeded store and an admin key: each page's
figures equal the JSON, a review item is labelled from the keyboard, a canary is paused and resumed
(reason + confirmation), a record is followed to its replay. Screenshots of every page go to the
test's directory, and to $SLUICEGATE_SCREENSHOTS when set (docs/screenshots for the README).

Chromium comes from `scripts/install-browser` (run by scripts/test). Without it these tests skip
with the reason, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.records import SQLiteStore
from proxy.reports._render_text import fmt
from tests.ui._seed import ADMIN_KEY, seed, write_policy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _unavailable(reason: str) -> None:
    """Skip locally; fail under CI=true (the same rule as tests/_services.py `require_service`)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} — CI=true: the browser tests must run (scripts/install-browser installs Chromium)",
                    pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`sluicegate serve` (plus its in-process mock upstream) on a seeded store."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    store = SQLiteStore(tmp / "store.db")

    async def fill() -> dict[str, Any]:
        await store.open()
        try:
            return await seed(store)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: pytest-asyncio may have a loop running here
        notable = pool.submit(asyncio.run, fill()).result()
    port, mock_port = _free_port(), _free_port()
    policy = write_policy(tmp, f"http://127.0.0.1:{mock_port}/v1")
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ui._serve", "serve", "--policy", str(policy), "--port", str(port),
             "--store", f"sqlite:///{tmp}/store.db", "--mock-upstream", f"127.0.0.1:{mock_port}",
             "--log-format", "json"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield {"base": base, "notable": notable, "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        _unavailable(f"no Chromium at {CHROMIUM}: run `bash scripts/install-browser` (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright; never `playwright install`)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    """A page of a browser context that sends the admin key with every request (pages, scripts, fetches)."""
    context = browser.new_context(base_url=server["base"], extra_http_headers=ADMIN,
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield tab
    context.close()
    assert not errors, f"errors in the page: {errors}"


def api(server: dict[str, Any], path: str, **params: Any) -> Any:
    response = httpx.get(server["base"] + path, params=params, headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A full-page screenshot as a test artifact, and for the README when SLUICEGATE_SCREENSHOTS is set."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("SLUICEGATE_SCREENSHOTS")
    if target:
        folder = Path(target) if Path(target).is_absolute() else ROOT / target
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{name}.png")


def cell(page: Any, scope: str, figure: str) -> str:
    return " ".join(page.locator(f'{scope} [data-figure="{figure}"]').first.inner_text().split())


def test_every_page_shows_the_figures_of_the_report(page: Any, server: dict[str, Any], tmp_path: Path) -> None:
    overview = api(server, "/ui/api/overview")
    full = api(server, "/v1/reports")
    page.goto("/ui")
    for summary in overview["routes"]:
        r, = [x for x in full["routes"] if x["route"] == summary["route"]]
        for arm in r["arms"]:
            scope = f'[data-route="{summary["route"]}"] tr[data-variant="{arm["variant"]}"]'
            metric = arm["metrics"][summary["success_metric"]]
            assert cell(page, scope, "requests") == str(arm["requests"])
            assert cell(page, scope, "success_rate") == fmt(metric["rate"], "pct")
            assert cell(page, scope, "success_interval") == (
                f"[{fmt(metric['interval'][0], 'pct')}, {fmt(metric['interval'][1], 'pct')}]")
    # the split's mismatch, and the canary's: its seeded 3:1 traffic contradicts its 5% stage (checked per stage)
    srm_routes = {r["route"] for r in full["routes"] if r["srm"] and r["srm"]["warning"]}
    assert srm_routes == {"faq", "support-bot"}
    assert page.locator('[data-alert="srm"]').count() == 2 and page.locator("svg.chart").count() >= 2
    shot(page, tmp_path, "overview")

    route = api(server, "/ui/api/routes/support-bot")["report"]
    page.get_by_role("link", name="support-bot", exact=True).click()
    page.wait_for_url("**/ui/routes/support-bot")
    for arm in route["arms"]:
        scope = f'section[aria-labelledby="arms-h"] tr[data-variant="{arm["variant"]}"]'
        assert cell(page, scope, "requests") == str(arm["requests"])
        assert cell(page, scope, "latency_p95") == fmt(arm["latency_ms"]["p95"], "ms")
        assert cell(page, scope, "guard_rate") == fmt(arm["guards"]["rate"], "pct")
        assert cell(page, scope, "cost_per_success") == fmt(arm["cost"]["per_success_usd"], "usd")
    assert page.locator("svg.chart").count() >= 8
    shot(page, tmp_path, "route")
    page.get_by_label("since").fill("24h")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/ui/routes/support-bot?since=24h*")
    day = api(server, "/v1/reports/support-bot", since="24h")["routes"][0]
    assert cell(page, 'section[aria-labelledby="arms-h"] tr[data-variant="prod"]', "requests") == str(
        day["arms"][0]["requests"])

    canary = api(server, "/ui/api/canary/support-bot")
    page.goto("/ui/canary/support-bot")
    assert cell(page, "", "stage") == fmt(canary["stage"]) + "%"
    assert canary["decisions"][0]["reason"] in page.inner_text("main")
    shot(page, tmp_path, "canary")

    page.goto("/ui/records?route=support-bot")
    found = api(server, "/ui/api/records", route="support-bot")
    assert page.locator("tr[data-record]").count() == len(found["records"])
    assert page.locator("tr[data-record]").first.get_attribute("data-record") == found["records"][0]["id"]
    shot(page, tmp_path, "records")

    review = api(server, "/ui/api/review")
    page.goto("/ui/review")
    progress = review["progress"]
    assert page.locator("#progress-text").inner_text().startswith(f"{progress['labelled']} of {progress['queued']}")
    assert page.locator("#pending").inner_text() == f"{review['pending']} pending"
    shot(page, tmp_path, "review")

    # narrow screens: nothing wider than the viewport (wide tables scroll inside their box)
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/ui", "/ui/routes/support-bot", "/ui/records", "/ui/review"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
    page.goto("/ui")
    shot(page, tmp_path, "overview-narrow")


def test_label_a_review_item_with_the_keyboard(page: Any, server: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    before = api(server, "/ui/api/review")
    item = before["item"]
    page.goto("/ui/review")
    page.keyboard.press("r")  # focus the reviewer name
    page.keyboard.type("dana")
    page.keyboard.press("Escape")
    page.keyboard.press("2")  # the second label: fail
    page.keyboard.press("t")
    page.keyboard.press("Escape")
    page.keyboard.press("n")
    page.keyboard.type("off topic")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text(re.compile(r"^Saved 'fail'"))  # no eval: the page's CSP forbids it
    assert f"for {item['request_id']}" in page.locator("#status").inner_text()
    labelled = before["progress"]["labelled"] + 1
    expect(page.locator("#progress-text")).to_have_text(re.compile(rf"^{labelled} of "))  # refreshed by ui.js
    after = api(server, "/ui/api/review")
    assert after["progress"]["labelled"] == labelled
    dana, = [r for r in after["reviewers"] if r["reviewer"] == "dana"]
    assert dana["labels"] == {"fail": 1}
    assert page.locator('#reviewer-rows tr').count() == len(after["reviewers"])
    shot(page, tmp_path, "review-labelled")


def test_pause_and_resume_a_canary(page: Any, server: dict[str, Any], tmp_path: Path) -> None:
    page.goto("/ui/canary/support-bot")
    for action, status in (("pause", "paused"), ("resume", "running")):
        page.get_by_label("Reason").fill(f"browser test: {action}")
        page.get_by_role("button", name=f"{action.capitalize()}…").click()
        confirm = page.locator("#confirm-text")
        assert f"status {'running' if action == 'pause' else 'paused'} -> {status}" in confirm.inner_text()
        assert api(server, "/ui/api/canary/support-bot")["status"] != status  # nothing written yet
        if action == "pause":
            shot(page, tmp_path, "canary-confirm")
        page.get_by_role("button", name=f"Confirm {action}").click()
        page.wait_for_url(f"**/ui/canary/support-bot?done={action}")
        assert page.locator('[data-figure="status"]').inner_text().strip() == status
        data = api(server, "/ui/api/canary/support-bot")
        latest = data["decisions"][0]
        assert (data["status"], latest["action"], latest["actor"], latest["reason"]) == (
            status, action, "ui", f"browser test: {action}")
        assert latest["reason"] in page.locator("article.decision").first.inner_text()


def test_follow_a_record_to_its_replay(page: Any, server: dict[str, Any], tmp_path: Path) -> None:
    request = server["notable"]["fallback_request"]
    page.goto("/ui/records")
    page.get_by_label("request or record id").fill(request)
    page.get_by_role("button", name="Search").click()
    page.locator("tr[data-record] a").first.click()
    page.wait_for_url(re.compile(r".*/ui/records/att_.*"))
    record = api(server, page.url.split(server["base"], 1)[1].replace("/ui/records/", "/ui/api/records/"))
    assert record["record"]["request_id"] == request
    assert page.locator("tr[data-attempt]").count() == len(record["attempts"]) == 2
    shot(page, tmp_path, "record")
    page.get_by_label("send the recorded request to").select_option("cand")
    page.get_by_role("button", name="Replay").click()
    result = page.locator("#replay-result")
    result.wait_for()
    texts = result.locator("[data-side-text]").all_inner_texts()
    assert texts[0] == record["record"]["answer"]["text"] and texts[1].strip()
    assert "replayed to cand" in result.inner_text().lower()  # h3 is shown upper-case
    shot(page, tmp_path, "replay")
