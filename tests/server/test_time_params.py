"""Every time parameter is validated in one place (`proxy.times`), issue 17 finding 10: before,
`/v1/reports?since=nan|inf|1e400` silently reported all time. Each bad value is a 400 in OpenAI's
shape whose `param` names the parameter and whose message says what is accepted, on every endpoint
that takes one, and a usage error (exit 2) on every CLI option that takes one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.cli import main
from proxy.config import parse_policy
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.server import Settings, create_app
from proxy.times import BadTime, parse_time

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://mock.test/v1"}
models:
  prod: {provider: mock, model: gpt-prod}
routes:
  bot: {model: prod, capture: full}
"""
BAD = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e9", "-1", "-1700000000", "-5h", "1_700_000_000",
       "0x10", "99999999999999", "9999999999999w", "yesterday-ish", "2026-13-45", "24 h", "1h\u2028x", "'; --"]
ENDPOINTS = ["/v1/reports", "/v1/reports/bot", "/ui/api/routes/bot", "/ui/api/records"]
PAGES = ["/ui/routes/bot", "/ui/records"]
REQUESTS = 3


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    mock = httpx.ASGITransport(app=create_mock(MockConfig(default=MockModel())))
    app = create_app(Settings(policy=parse_policy(POLICY), store_url=f"sqlite:///{tmp_path}/s.db",
                              transports={"mock": mock}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        # localhost: a Host an open gateway answers to; open and without admin keys, reports need no key
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            for i in range(REQUESTS):
                r = await client.post("/v1/chat/completions",
                                      json={"model": "bot", "messages": [{"role": "user", "content": f"hi {i}"}]})
                assert r.status_code == 200, r.text
            await app.state.gateway.recorder.flush()
            yield client


def requests_in(report: dict[str, Any]) -> int:
    return sum(arm["requests"] for route in report["routes"] for arm in route["arms"])


@pytest.mark.parametrize("name", ["since", "until"])
async def test_bad_times_are_400_naming_the_parameter_on_every_endpoint(tmp_path: Path, name: str) -> None:
    async with gateway(tmp_path) as client:
        for path in ENDPOINTS:
            for value in BAD:
                r = await client.get(path, params={name: value})
                assert r.status_code == 400, (path, value, r.text[:200])
                assert set(r.json()) == {"error"}, (path, value)
                e = r.json()["error"]
                assert (e["param"], e["code"], e["type"]) == (name, "invalid_time", "invalid_request_error"), value
                assert "24h" in e["message"] and "ISO" in e["message"], e["message"]  # what is accepted
        for path in PAGES:  # the HTML twins: an error page with the same status and message
            for value in BAD:
                r = await client.get(path, params={name: value})
                assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), (path, value)
                assert f"&#39;{name}&#39;" in r.text and "24h" in r.text, (path, value)


async def test_good_times_still_select_what_they_say(tmp_path: Path) -> None:
    """The reference: the test's own 3 requests, counted through every accepted form."""
    now = time.time()
    future = f"{now + 3600:.0f}"
    async with gateway(tmp_path) as client:
        async def count(**query: str) -> int:
            r = await client.get("/v1/reports", params=query)
            assert r.status_code == 200, r.text
            return requests_in(r.json())

        assert await count() == REQUESTS
        assert await count(since="0") == REQUESTS  # epoch 0 is a time (all of it), not an error
        assert await count(since="1h") == REQUESTS and await count(since="1.5h", until=future) == REQUESTS
        assert await count(since=f"{now - 60:.3f}") == REQUESTS
        assert await count(since=time.strftime("%Y-%m-%dT%H:%M", time.localtime(now - 120))) == REQUESTS
        assert await count(since=future) == 0  # a bound really applies
        assert await count(until="1970-01-02T00:00+00:00") == 0
        empty = await client.get("/v1/reports", params={"since": "", "until": " "})
        assert empty.status_code == 200 and requests_in(empty.json()) == REQUESTS  # empty = not given
        records = await client.get("/ui/api/records", params={"since": "1h"})
        assert records.status_code == 200 and len(records.json()["records"]) == REQUESTS


@pytest.mark.parametrize("path", [*ENDPOINTS, *PAGES])
async def test_since_after_until_is_a_400_not_an_empty_window(tmp_path: Path, path: str) -> None:
    async with gateway(tmp_path) as client:
        r = await client.get(path, params={"since": "1h", "until": "2h"})
    assert r.status_code == 400
    if path in ENDPOINTS:
        assert r.json()["error"]["param"] == "until" and "after" in r.json()["error"]["message"]


def test_the_one_parser_refuses_non_finite_and_out_of_range_values() -> None:
    for value in BAD:
        with pytest.raises(BadTime, match="24h"):
            parse_time(value)
    assert parse_time("0") == 0.0 and parse_time("1767225600.25") == 1767225600.25
    assert parse_time("2h", now=1_000_000.0) == 1_000_000.0 - 7200
    assert parse_time("2026-01-01T00:00+00:00") == 1767225600.0
    with pytest.raises(BadTime):
        parse_time("3h", now=3600.0)  # an age reaching before 1970


@pytest.mark.parametrize("argv", [
    ["report", "--since={}"], ["report", "--until={}"], ["export", "--since={}"], ["export", "--until={}"],
    ["corpus", "build", "--route", "bot", "--size", "5", "--since={}"],
    ["corpus", "build", "--route", "bot", "--size", "5", "--until={}"],
])  # --opt=value: argparse would read a separate "-inf" as an option
def test_cli_time_options_refuse_bad_values_as_usage_errors(tmp_path: Path, argv: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/untouched.db"
    for value in ("nan", "inf", "-inf", "1e400", "-1", "soon"):
        with pytest.raises(SystemExit) as exit_:
            main([*(a.format(value) for a in argv), "--store", store])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "24h" in err and value in err, err
    assert not (tmp_path / "untouched.db").exists()  # refused before anything ran



@pytest.mark.parametrize("command", [["report"], ["export"], ["corpus", "build", "--route", "bot", "--size", "5"]])
def test_cli_since_after_until_is_a_usage_error(tmp_path: Path, command: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """As over HTTP: a window that ends before it begins selects nothing, so it is refused, not run."""
    store = f"sqlite:///{tmp_path}/untouched.db"
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--since=2026-02-01", "--until=2026-01-01", "--store", store])
    assert exit_.value.code == 2
    assert "--since is after --until" in capsys.readouterr().err
    assert not (tmp_path / "untouched.db").exists()

def test_cli_prune_refuses_bad_ages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/untouched.db"
    for value in ("nan", "inf", "1e400", "-1", "soon"):
        assert main(["prune", f"--older-than={value}", "--store", store]) == 2
        err = capsys.readouterr().err
        assert err.startswith("--older-than:") and "24h" in err, err
    assert not (tmp_path / "untouched.db").exists()


def test_cli_export_applies_a_good_since(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import asyncio

    from proxy.records import Record, open_store

    url = f"sqlite:///{tmp_path}/s.db"

    async def seed() -> None:
        store = open_store(url)
        await store.open()
        await store.write_records([Record(id=f"att_{i}", request_id=f"req_{i}", attempt=1, attempt_reason="primary",
                                          endpoint="chat.completions", route="bot", variant="prod", provider="mock",
                                          model_requested="m", started_at=t) for i, t in enumerate((100.0, 5000.0))])
        await store.close()

    asyncio.run(seed())
    assert main(["export", "--store", url, "--since", "1000"]) == 0
    lines = capsysbinary.readouterr().out.splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["att_1"]
