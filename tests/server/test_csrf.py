"""Cross-site requests (issue 17, finding 6): every state-changing endpoint refuses what a page on
another site can make a browser send — with the browser's Basic login attached — and nothing
changes (counted in the store, the reloader and the upstream, before and after). Same-origin
requests with a token, and API clients with a Bearer key, still work: each attack's body is also
sent the legitimate way, and must then change what it says it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from starlette.routing import Route

from proxy.server._crosssite import API_ACTION, CSRF_HEADER, csrf_token
from tests.server._sites import ADMIN_KEY, CALLER_KEY, OPEN_POLICY, Site, basic, running_site

SELF = "http://localhost:8080"  # the test client's origin: Host is localhost:8080
EVIL = "https://evil.example"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CHAT = {"messages": [{"role": "user", "content": "csrf?"}]}
PENDING_REQUEST = "req_faq_00401"  # seeded, not queued for review


def targets(site: Site) -> dict[str, dict[str, Any]]:
    """Every state-changing route: its path template -> a concrete path, its kind (json, form,
    bodiless), the key a legitimate caller uses, the body, and what a legitimate call changes."""
    entry = site.notable["review_ids"][-1]  # pending: the seeded labels are on the oldest five
    record = site.notable["fallback_request"]
    feedback = {"request_id": PENDING_REQUEST, "metric": "task_success", "value": False}
    return {
        "/v1/chat/completions": dict(path="/v1/chat/completions", kind="json", key=CALLER_KEY,
                                     body={"model": "faq", **CHAT}, changes={"records": 1, "upstream_requests": 1}),
        "/v1/completions": dict(path="/v1/completions", kind="json", key=CALLER_KEY,
                                body={"model": "faq", "prompt": "csrf?"}, changes={"records": 1, "upstream_requests": 1}),
        "/v1/embeddings": dict(path="/v1/embeddings", kind="json", key=CALLER_KEY, body={"model": "faq", "input": "x"},
                               changes={"records": 1, "upstream_requests": 1}),
        "/v1/feedback": dict(path="/v1/feedback", kind="json", key=CALLER_KEY, body=feedback, changes={"outcomes": 1}),
        "/v1/feedback/batch": dict(path="/v1/feedback/batch", kind="json", key=CALLER_KEY,
                                   body=[{**feedback, "metric": "task_success", "idempotency_key": "b1"}],
                                   changes={"outcomes": 1}),
        "/v1/review": dict(path="/v1/review", kind="json", key=ADMIN_KEY,
                           body={"request_id": PENDING_REQUEST, "scorer": "review"}, changes={"reviews": 1}),
        "/v1/review/{id}": dict(path=f"/v1/review/{entry}", kind="json", key=ADMIN_KEY,
                                body={"label": "fail", "reviewer": "csrf-attacker"}, changes={"human_labels": 1}),
        "/admin/reload": dict(path="/admin/reload", kind="bodiless", key=ADMIN_KEY, body=None, changes={"reloads": 1}),
        "/ui/canary/{route}": dict(path="/ui/canary/support-bot", kind="form", key=ADMIN_KEY,
                                   body={"action": "rollback", "reason": "forged", "confirm": "yes",
                                         "expected_stage": "25", "expected_status": "running"},
                                   changes={"canary_decisions": 1}),
        "/ui/records/{id}/replay": dict(path=f"/ui/records/{record}/replay", kind="form", key=ADMIN_KEY,
                                        body={"variant": "cand"}, changes={"upstream_requests": 1}),
        "/ui/api/records/{id}/replay": dict(path=f"/ui/api/records/{record}/replay", kind="json", key=ADMIN_KEY,
                                            body={"variant": "cand"}, changes={"upstream_requests": 1}),
    }


def _form(target: dict[str, Any], login: dict[str, str], token: bool = True) -> bytes:
    fields = dict(target["body"])
    if token:  # the page's real token: only the origin checks stand between the attack and the change
        fields["csrf_token"] = csrf_token(login, target["path"])
    return urlencode(fields).encode()


def _json(target: dict[str, Any]) -> bytes:
    return b"" if target["body"] is None else orjson.dumps(target["body"])


def attack(name: str, target: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """What a page on another site makes a browser that is logged in to the dashboard send."""
    login = basic(target["key"])
    kind = target["kind"]
    form = kind == "form"
    body = _form(target, login) if form else _json(target)
    if name == "text_plain_cross_site":  # <form enctype=text/plain> or fetch(no-cors): a modern browser
        return {**login, "content-type": "application/x-www-form-urlencoded" if form else "text/plain",
                "origin": EVIL, "sec-fetch-site": "cross-site"}, body
    if name == "form_foreign_origin":  # a browser without Fetch Metadata still sends Origin
        return {**login, "content-type": "application/x-www-form-urlencoded", "origin": EVIL}, body
    if name == "text_plain_no_origin":  # an old or privacy-stripped browser: no Origin, no Fetch Metadata
        return {**login, "content-type": "application/x-www-form-urlencoded" if form else "text/plain"}, body
    if name == "blob_without_content_type":  # fetch(url, {mode: "no-cors", method: "POST", body: new Blob([...])})
        return login, body or b"{}"
    if name == "json_basic_without_token":  # same origin, JSON, Basic: but not from a page (no token)
        return {**login, "content-type": "application/x-www-form-urlencoded" if form else "application/json",
                "origin": SELF}, (_form(target, login, token=False) if form else body)
    if name == "bearer_key_but_cross_site":  # Fetch Metadata is the first line, whatever the credentials
        return {"authorization": f"Bearer {target['key']}", "content-type": "application/json",
                "sec-fetch-site": "cross-site"}, _json(target) if not form else body
    # everything right but the Origin: another scheme, another port, no port, null
    origin = {"origin_other_scheme": "https://localhost:8080", "origin_other_port": "http://localhost:9090",
              "origin_without_port": "http://localhost", "origin_null": "null"}[name]
    headers = {**login, "origin": origin, CSRF_HEADER: csrf_token(login, API_ACTION)}
    if kind != "bodiless":
        headers["content-type"] = "application/x-www-form-urlencoded" if form else "application/json"
    return headers, body


ATTACKS = ["text_plain_cross_site", "form_foreign_origin", "text_plain_no_origin", "blob_without_content_type",
           "json_basic_without_token", "bearer_key_but_cross_site", "origin_other_scheme", "origin_other_port",
           "origin_without_port", "origin_null"]


def _assert_refused(response: Any, where: str) -> None:
    assert response.status_code in (403, 415), (where, response.status_code, response.text[:300])
    ctype = response.headers["content-type"]
    if ctype.startswith("application/json"):
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, where
        assert error["code"] in ("cross_site_request", "unsupported_media_type", None), (where, error)
        assert error["message"], where
    else:  # the dashboard's own 403 page (its form handler refused: no Origin/Referer, no token)
        assert ctype.startswith("text/html") and "Refused" in response.text, where


async def test_the_test_knows_every_state_changing_endpoint(tmp_path: Path) -> None:
    """A new POST/PUT/PATCH/DELETE route fails here until it is added to `targets` (and so attacked)."""
    async with running_site(tmp_path) as site:
        routes = {route.path for route in site.app.router.routes
                  if isinstance(route, Route) and (route.methods or set()) & UNSAFE}
        assert routes == set(targets(site))


@pytest.mark.parametrize("name", ATTACKS)
async def test_cross_site_requests_are_refused_and_change_nothing(tmp_path: Path, name: str) -> None:
    async with running_site(tmp_path) as site:
        every = targets(site)
        before = await site.counts()
        for template, target in every.items():
            headers, content = attack(name, target)
            response = await site.client.post(target["path"], content=content, headers=headers,
                                               follow_redirects=False)
            _assert_refused(response, f"{name} {template}")
        assert await site.counts() == before, name
        # the same bodies, sent as the gateway's own pages and API clients send them, do change things
        await _legitimately(site, every)


async def _legitimately(site: Site, every: dict[str, dict[str, Any]]) -> None:
    for template, target in every.items():
        before = await site.counts()
        if target["kind"] == "form":  # the dashboard's form: Basic login, its token, same origin
            login = basic(target["key"])
            headers = {**login, "content-type": "application/x-www-form-urlencoded", "origin": SELF,
                       "sec-fetch-site": "same-origin"}
            content = _form(target, login)
        else:  # an API client: a Bearer key and JSON (a bodiless POST needs no content type: curl -X POST)
            headers = {"authorization": f"Bearer {target['key']}"}
            if target["kind"] == "json":
                headers["content-type"] = "application/json"
            content = _json(target)
        response = await site.client.post(target["path"], content=content, headers=headers, follow_redirects=False)
        assert response.status_code < 400, (template, response.status_code, response.text[:300])
        after = await site.counts()
        changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        assert {k: changed.get(k, 0) for k in target["changes"]} == target["changes"], (template, changed)


async def test_the_review_page_labels_with_a_basic_login_and_its_token(tmp_path: Path) -> None:
    """The finding's scenario, done right: a reviewer logged in with Basic labels from /review (the
    page's token in x-sluicegate-csrf, the browser's Origin); the label is stored with its reviewer."""
    async with running_site(tmp_path) as site:
        login = basic(ADMIN_KEY, user="ana")
        page = await site.client.get("/review", headers=login)
        assert page.status_code == 200 and page.headers["referrer-policy"] == "same-origin"
        start = page.text.index('<script id="initial" type="application/json">') + len(
            '<script id="initial" type="application/json">')
        initial = orjson.loads(page.text[start:page.text.index("</script>", start)])
        entry = initial["item"]["id"]
        before = await site.counts()
        label = {"label": "pass", "reviewer": "ana"}
        headers = {**login, "content-type": "application/json", "origin": SELF, "sec-fetch-site": "same-origin"}
        forged = await site.client.post(f"/v1/review/{entry}", json=label,
                                        headers={**headers, CSRF_HEADER: "0" * 64})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_site_request"
        assert "Bearer" in forged.json()["error"]["message"]  # says what an API client should do instead
        response = await site.client.post(f"/v1/review/{entry}", json=label,
                                          headers={**headers, CSRF_HEADER: initial["csrf"]})
        assert response.status_code == 200, response.text
        assert (await site.counts())["human_labels"] == before["human_labels"] + 1
        rows = await site.gateway.store.fetch("SELECT data FROM scores WHERE id = ?", [entry])
        assert orjson.loads(rows[0][0])["reviewer"] == "ana"
        # the token is the login's: another admin credential's page token does not fit
        other = csrf_token(basic("sk-someone-else"), API_ACTION)
        refused = await site.client.post(f"/v1/review/{entry}", json=label, headers={**headers, CSRF_HEADER: other})
        assert refused.status_code == 403


async def test_reading_is_not_refused_from_other_sites(tmp_path: Path) -> None:
    """Only state changes are checked: a link from another site to a page or a GET still works."""
    async with running_site(tmp_path, seeded=False) as site:
        cross = {"sec-fetch-site": "cross-site", "origin": EVIL}
        assert (await site.client.get("/v1/models", headers={**cross, **basic(CALLER_KEY)})).status_code == 200
        assert (await site.client.get("/ui", headers={**cross, **basic(ADMIN_KEY)})).status_code == 200


async def test_an_open_gateway_takes_json_only_and_no_foreign_origin(tmp_path: Path) -> None:
    """No keys at all: a cross-site page needs no credentials, so the content type and Origin are what
    stop it. Requiring JSON keeps simple form and text/plain POSTs (no preflight) out; the upstream
    (a second server here) must receive nothing."""
    async with running_site(tmp_path, policy_text=OPEN_POLICY, seeded=False, base_url="http://127.0.0.1:8080") as site:
        body = orjson.dumps({"model": "faq", **CHAT})
        before = await site.counts()
        for headers in ({"content-type": "text/plain"},  # fetch(no-cors) from an old browser: no Origin
                        {"content-type": "application/x-www-form-urlencoded"},
                        {"content-type": "multipart/form-data; boundary=x"},
                        {},  # a Blob without a type
                        {"content-type": "text/plain", "origin": "http://evil.example"},
                        {"content-type": "application/json", "sec-fetch-site": "cross-site"},
                        {"content-type": "application/json", "origin": "http://127.0.0.1:9999"}):
            response = await site.client.post("/v1/chat/completions", content=body, headers=headers)
            _assert_refused(response, str(headers))
        reload_from_elsewhere = await site.client.post("/admin/reload", headers={
            "content-type": "application/x-www-form-urlencoded", "origin": "http://evil.example"})
        assert reload_from_elsewhere.status_code == 403
        empty_form = await site.client.post("/admin/reload", headers={"content-type": "text/plain"})
        assert empty_form.status_code == 415
        assert await site.counts() == before
        assert site.upstream.requests == 0
        # an SDK or curl with JSON, and `curl -X POST …/admin/reload`, still work
        ok = await site.client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert ok.status_code == 200 and site.upstream.requests == 1
        assert (await site.client.post("/admin/reload")).status_code == 200
        # and a same-origin page's request (its Origin is this gateway's) is accepted
        same = await site.client.post("/v1/chat/completions", content=body, headers={
            "content-type": "application/json; charset=utf-8", "origin": "http://127.0.0.1:8080",
            "sec-fetch-site": "same-origin"})
        assert same.status_code == 200


async def test_refusals_say_what_to_fix(tmp_path: Path) -> None:
    async with running_site(tmp_path, seeded=False) as site:
        body = orjson.dumps({"model": "faq", **CHAT})
        plain = await site.client.post("/v1/chat/completions", content=body,
                                       headers={"authorization": f"Bearer {CALLER_KEY}", "content-type": "text/plain"})
        assert plain.status_code == 415
        error = plain.json()["error"]
        assert error["code"] == "unsupported_media_type" and error["param"] == "content-type"
        assert "application/json" in error["message"] and "text/plain" in error["message"]
        other = await site.client.post("/v1/chat/completions", content=body, headers={
            "authorization": f"Bearer {CALLER_KEY}", "content-type": "application/json", "origin": "http://localhost"})
        assert other.status_code == 403
        message = other.json()["error"]["message"]
        assert "http://localhost:8080" in message and "server.public_origins" in message
        jsonl = await site.client.post("/v1/feedback/batch", content=b"", headers={
            "authorization": f"Bearer {CALLER_KEY}", "content-type": "application/x-ndjson"})
        assert jsonl.status_code == 400  # JSON Lines is JSON: it reaches the endpoint (which says: empty)


async def test_public_origins_replace_the_derived_origin(tmp_path: Path) -> None:
    """Behind a TLS proxy the gateway sees http and the browser says https: `server.public_origins`
    names what browsers use, and then only that is accepted."""
    from tests.ui._seed import POLICY

    policy = POLICY.replace("auth:\n", "server:\n  public_origins: ['https://gw.example.com']\nauth:\n")
    async with running_site(tmp_path, policy_text=policy, seeded=False, base_url="http://gw.example.com") as site:
        body = {"model": "faq", **CHAT}
        caller = {"authorization": f"Bearer {CALLER_KEY}"}
        for origin, status in (("https://gw.example.com", 200), ("https://gw.example.com:443", 200),
                               ("http://gw.example.com", 403), ("https://gw.example.com:8443", 403)):
            response = await site.client.post("/v1/chat/completions", json=body, headers={**caller, "origin": origin})
            assert response.status_code == status, (origin, response.text[:200])
