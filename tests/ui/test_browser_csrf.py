"""Issue 17's cross-site finding, in real headless Chromium: a reviewer logs in to the gateway with
the browser's Basic prompt (the admin key as password), then visits a page on another site
(evil.test, mapped to 127.0.0.1 by Chromium's resolver rules; a second local server) that posts a
`text/plain` form to `/v1/review/{id}` and `/admin/reload`. Chromium attaches the cached login to
those requests (checked: the test reads the request's headers); the gateway refuses both, and the
store and the reloader show nothing changed. The same login labels from the review page itself."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.ui._seed import ADMIN_KEY
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, _unavailable, server  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def evil_site() -> Iterator[dict[str, Any]]:
    """A second server (127.0.0.1, another port) whose pages Chromium loads as http://evil.test:PORT."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"pages": pages, "base": f"http://evil.test:{httpd.server_address[1]}"}
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def rebinding_browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install playwright; never `playwright install`)")
    import os

    if not os.path.exists(CHROMIUM):
        _unavailable(f"no Chromium at {CHROMIUM}: run `bash scripts/install-browser` (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM,
                                     args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.test 127.0.0.1"])
        yield launched
        launched.close()


@pytest.fixture
def logged_in(rebinding_browser: Any, server: dict[str, Any]) -> Iterator[Any]:  # noqa: F811 (fixture)
    """A tab whose browser answered the gateway's Basic prompt (user "ana", the admin key as password)."""
    context = rebinding_browser.new_context(
        http_credentials={"username": "ana", "password": ADMIN_KEY, "origin": server["base"]})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    response = tab.goto(server["base"] + "/review")  # 401 with a Basic challenge, answered: the login is cached
    assert response is not None and response.status == 200
    yield tab
    context.close()


def _human_labels(server: dict[str, Any]) -> int:
    review = httpx.get(server["base"] + "/ui/api/review", headers=ADMIN, timeout=10).json()
    return int(review["progress"]["labelled"])


def _reload_state(server: dict[str, Any]) -> Any:
    return httpx.get(server["base"] + "/readyz", headers=ADMIN, timeout=10).json()["reload"]


def _text_plain_form(action: str, json_fields: str = "") -> str:
    """`<form enctype=text/plain>`: the body is `name=value`, so a name ending in `"note":"` and the value
    `"}` make the body a JSON object the endpoint would accept."""
    field = (f"<input type=hidden name='{{{json_fields},\"note\":\"' value='\"}}'>" if json_fields else "")
    return (f"<!doctype html><form id=f method=POST enctype=text/plain action='{action}'>{field}</form>"
            "<script>document.getElementById('f').submit()</script>")


def test_a_page_on_another_site_cannot_label_or_reload_with_the_login(
        logged_in: Any, server: dict[str, Any], evil_site: dict[str, Any]) -> None:  # noqa: F811
    item = httpx.get(server["base"] + "/v1/review/next", headers=ADMIN, timeout=10).json()
    labelled, reload_before = _human_labels(server), _reload_state(server)
    evil_site["pages"]["/label"] = _text_plain_form(f"{server['base']}/v1/review/{item['id']}",
                                                    '"label":"fail","reviewer":"csrf-attacker"')
    evil_site["pages"]["/reload"] = _text_plain_form(f"{server['base']}/admin/reload")
    for path, target in (("/label", f"/v1/review/{item['id']}"), ("/reload", "/admin/reload")):
        with logged_in.expect_response(lambda r, t=target: r.url.endswith(t)) as answer:
            logged_in.goto(evil_site["base"] + path)
        response = answer.value
        sent = response.request.all_headers()
        assert sent["authorization"].startswith("Basic "), sent  # the browser did attach the login
        assert sent.get("sec-fetch-site") == "cross-site" and sent["origin"] == evil_site["base"]
        assert response.status == 403, (path, response.status, response.text()[:300])
        assert response.json()["error"]["code"] == "cross_site_request"
    assert _human_labels(server) == labelled
    assert _reload_state(server) == reload_before
    store = httpx.get(server["base"] + "/ui/api/review", headers=ADMIN, timeout=10).json()
    assert all(r["reviewer"] != "csrf-attacker" for r in store["reviewers"])


@pytest.mark.parametrize("page", ["/review", "/ui/review"])
def test_the_same_login_labels_from_the_review_pages(logged_in: Any, server: dict[str, Any],  # noqa: F811
                                                     page: str) -> None:
    from playwright.sync_api import expect

    reviewer = f"zoe-basic{page.replace('/', '-')}"
    labelled = _human_labels(server)
    logged_in.goto(server["base"] + page)
    logged_in.keyboard.press("r")
    logged_in.keyboard.type(reviewer)
    logged_in.keyboard.press("Escape")
    logged_in.keyboard.press("1")
    with logged_in.expect_response(lambda r: "/v1/review/" in r.url and r.request.method == "POST") as answer:
        logged_in.keyboard.press("Enter")
    sent = answer.value.request.all_headers()
    assert sent["authorization"].startswith("Basic ") and sent["origin"] == server["base"]
    assert re.fullmatch(r"[0-9a-f]{64}", sent["x-sluicegate-csrf"])
    assert answer.value.status == 200, answer.value.text()[:300]
    expect(logged_in.locator("#status")).to_have_text(re.compile(r"^Saved 'pass'"))
    assert _human_labels(server) == labelled + 1
    reviewers = httpx.get(server["base"] + "/ui/api/review", headers=ADMIN, timeout=10).json()["reviewers"]
    assert [r["labels"] for r in reviewers if r["reviewer"] == reviewer] == [{"pass": 1}]
