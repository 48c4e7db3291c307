"""Hostile upstreams (issue 17: findings 1-3, the pool wait of 4, invalid UTF-8 in a stream).

A real gateway process (`sluicegate serve`, so the production aiohttp client) in front of the
hostile upstream of tests/_hostile_upstream.py, for each provider kind. Every case is checked
against something the test holds itself: a second server that counts what reaches it, the secrets
the test chose (whole, and every 16-character piece), the OpenAI error schema, the gateway
process's peak RSS from /proc, the clock around `/healthz`. The SSE splitter's linearity is
counted in bytes scanned, not timed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from proxy.config import UpstreamLimits
from proxy.errors import UpstreamBadResponse, UpstreamHTTPError, UpstreamTimeout, UpstreamTooLarge
from proxy.providers import OpenAIAdapter, Scrubber, SSESplitter, UpstreamCall, provider_secrets
from proxy.providers._scrub import mask_key_like
from proxy.providers._sse import EventTooLarge
from tests._hostile_upstream import HostileUpstream
from tests.e2e.conftest import Gateway, records
from tests._spec import SPEC_PATH

API_KEY = "sk-proj-HOSTILEtestKEY0123456789abcdefGHIJKLMNOPqrstuvwx"
# a secret that no key-like detector would notice: only the provider's own list can mask it
HEADER_SECRET = "plain-words-header-secret-that-looks-harmless"
SECRETS = (API_KEY, HEADER_SECRET)
MiB = 1024 * 1024

POLICY = """
providers:
  oai: {kind: openai, base_url: '{url}/v1', api_key: '${HOSTILE_KEY}',
        headers: {x-upstream-token: '${HOSTILE_HEADER_SECRET}'}}
  az:  {kind: azure, base_url: '{url}', api_key: '${HOSTILE_KEY}',
        headers: {x-upstream-token: '${HOSTILE_HEADER_SECRET}'}}
  ant: {kind: anthropic, base_url: '{url}', api_key: '${HOSTILE_KEY}',
        headers: {x-upstream-token: '${HOSTILE_HEADER_SECRET}'}}
  slow: {kind: openai, base_url: '{url}/v1', api_key: '${HOSTILE_KEY}', read_timeout: 5,
         limits: {max_stream_seconds: 2, max_response_seconds: 2}}
  tiny: {kind: openai, base_url: '{url}/v1', api_key: '${HOSTILE_KEY}', max_connections: 1, pool_timeout: 0.5}
models:
  oai:  {provider: oai, model: gpt-hostile}
  az:   {provider: az, model: deployment-hostile}
  ant:  {provider: ant, model: claude-hostile}
  slow: {provider: slow, model: gpt-slow}
  tiny: {provider: tiny, model: gpt-tiny}
routes:
  oai:  {model: oai, capture: full}
  az:   {model: az, capture: full}
  ant:  {model: ant, capture: full}
  slow: {model: slow, capture: full}
  tiny: {model: tiny, capture: full}
"""


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sink() -> Iterator[HostileUpstream]:
    """The "other host" redirects point at: it must receive nothing."""
    server = HostileUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hostile(sink: HostileUpstream) -> Iterator[HostileUpstream]:
    server = HostileUpstream(redirect_to=sink.url).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, hostile: HostileUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hostile")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY.replace("{url}", hostile.url))
    gw = Gateway(policy, tmp / "store.db", tmp / "gw.log",
                 env={"HOSTILE_KEY": API_KEY, "HOSTILE_HEADER_SECRET": HEADER_SECRET})
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def error_schema() -> jsonschema.Draft202012Validator:
    spec = json.loads(SPEC_PATH.read_text())
    return jsonschema.Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse",
                                            "components": spec["components"]})


# --- helpers -----------------------------------------------------------------------------------


def pieces(secret: str) -> list[str]:
    return [secret[i:i + 16] for i in range(len(secret) - 15)]


def leaks(data: bytes | str) -> list[str]:
    """The secrets (or 16-character pieces of them) found in `data`."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return sorted({piece for secret in SECRETS for piece in pieces(secret) if piece in text})


def chat(gw: Gateway, route: str, prompt: str, *, stream: bool = False, timeout: float = 20) -> httpx.Response:
    body = {"model": route, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=timeout)


def sse_payloads(body: bytes) -> list[Any]:
    out = []
    for event in body.decode("utf-8", "replace").split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def record_of(gw: Gateway, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in records(gw.store) if r["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            assert found, f"no record for {request_id}"
            return found[-1]
        time.sleep(0.05)


def store_bytes(gw: Gateway) -> bytes:
    return b"".join(Path(f"{gw.store}{suffix}").read_bytes() for suffix in ("", "-wal")
                    if Path(f"{gw.store}{suffix}").exists())


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


# --- 1. redirects ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("route", ["oai", "az", "ant"])
def test_upstream_redirects_are_never_followed(gateway: Gateway, hostile: HostileUpstream, sink: HostileUpstream,
                                               route: str) -> None:
    for status in (307, 301, 302, 308):
        response = chat(gateway, route, f"redirect:{status}")
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] == "upstream_bad_response"
        assert f"'{route}'" in error["message"] and str(status) in error["message"]
        assert sink.url not in response.text and str(sink.port) not in response.text  # the Location is not quoted
        record = record_of(gateway, response.headers["x-sluicegate-request-id"])
        assert (record["outcome"], record["upstream_status"]) == ("malformed", status)
    assert len(hostile.received(f"redirect:{status}")) >= 1  # the gateway did call the upstream...
    assert sink.requests == []  # ...and nothing, not the key nor the prompt, reached the other host


# --- 2. error bodies ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("route", ["oai", "az", "ant"])
def test_upstream_error_bodies_are_reshaped_and_scrubbed(gateway: Gateway, hostile: HostileUpstream, route: str,
                                                         error_schema: jsonschema.Draft202012Validator) -> None:
    ids = []
    for status in (401, 400, 403, 404, 429, 500):
        for form in ("json", "html"):
            prompt = f"error:{status}:{form}"
            response = chat(gateway, route, prompt)
            sent = hostile.received(prompt)[-1]
            assert API_KEY in json.dumps(sent.headers) and HEADER_SECRET in json.dumps(sent.headers)  # it had both
            assert response.status_code == (status if status < 500 else 502), response.text
            assert response.headers["content-type"] == "application/json"
            error_schema.validate(response.json())
            assert not leaks(response.content), (prompt, response.text)
            assert not leaks(json.dumps(dict(response.headers))), (prompt, dict(response.headers))
            assert "set-cookie" not in response.headers and "x-echo-key" not in response.headers
            assert "retry-after" not in response.headers  # the upstream's was not a number or a date
            assert "<script" not in response.text.lower()
            error = response.json()["error"]
            if status >= 500:
                assert f"upstream '{route}'" in error["message"]
            if form == "json":
                assert "[SECRET]" in error["message"], error  # the upstream's message, kept and masked
                assert error["code"] is None or " " not in error["code"]  # a code quoting the key was dropped
            else:
                assert "HTML page" in error["message"], error  # described, never quoted
            ids.append(response.headers["x-sluicegate-request-id"])
    for request_id in ids:
        record = record_of(gateway, request_id)
        assert record["outcome"] == "upstream_error" and record["error"]
        assert not leaks(json.dumps(record)), record
    assert "[SECRET]" in record_of(gateway, ids[0])["error"]  # the record's error is the scrubbed message
    assert not leaks(store_bytes(gateway))
    assert not leaks(gateway.logs())


# --- 3. bounds on size, decompression, events and time; /healthz unaffected ---------------------


@pytest.mark.e2e
def test_hostile_answers_are_bounded_and_other_callers_unaffected(gateway: Gateway) -> None:
    for route in ("oai", "ant", "slow"):  # warm every path up before the baseline
        assert chat(gateway, route, "ok").status_code == 200
        assert chat(gateway, route, "ok", stream=True).status_code == 200
    baseline = peak_rss(gateway.proc.pid)

    def attack(route: str, prompt: str, stream: bool = False) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = chat(gateway, route, prompt, stream=stream, timeout=30)
        return response, time.monotonic() - started

    attacks = {
        "huge": ("oai", "huge", False), "huge_length": ("oai", "huge:length", False), "bomb": ("oai", "bomb", False),
        "sse_unterminated": ("oai", "sse:unterminated", True), "ant_unterminated": ("ant", "sse:unterminated", True),
        "drip_stream": ("slow", "drip", True), "drip": ("slow", "drip", False),
    }
    healthz: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(len(attacks)) as pool:
        futures = {name: pool.submit(attack, *args) for name, args in attacks.items()}
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            while not all(f.done() for f in futures.values()):
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                healthz.append(time.monotonic() - started)
                time.sleep(0.02)
        results = {name: future.result() for name, future in futures.items()}
    growth = peak_rss(gateway.proc.pid) - baseline
    print(f"\nhostile answers: gateway peak RSS +{growth / MiB:.1f} MiB; /healthz max {max(healthz) * 1000:.0f} ms, "
          f"median {sorted(healthz)[len(healthz) // 2] * 1000:.1f} ms over {len(healthz)} calls")

    for name in ("huge", "huge_length", "bomb"):
        response, _ = results[name]
        assert response.status_code == 502, (name, response.text[:300])
        assert response.json()["error"]["code"] == "upstream_too_large"
        assert "upstream 'oai'" in response.json()["error"]["message"]
        record = record_of(gateway, response.headers["x-sluicegate-request-id"])
        assert record["outcome"] == "upstream_too_large" and record["response"] is None  # nothing stored
    assert "limits.max_response_bytes" in results["huge"][0].json()["error"]["message"]
    assert "limits.max_response_bytes" in results["huge_length"][0].json()["error"]["message"]
    assert "limits.max_decompression_ratio" in results["bomb"][0].json()["error"]["message"]
    for name, route in (("sse_unterminated", "oai"), ("ant_unterminated", "ant")):
        response, _ = results[name]
        assert response.status_code == 200  # the stream had started: it ends with an error event
        error = sse_payloads(response.content)[-1]["error"]
        assert error["code"] == "upstream_too_large" and f"'{route}'" in error["message"]
        assert "limits.max_event_bytes" in error["message"]
        record = record_of(gateway, response.headers["x-sluicegate-request-id"])
        assert "limits.max_event_bytes" in record["error"] and record["response_bytes"] < MiB
        assert record["outcome"] == "upstream_too_large"
    response, elapsed = results["drip_stream"]
    error = sse_payloads(response.content)[-1]["error"]
    assert error["code"] == "upstream_timeout" and "limits.max_stream_seconds" in error["message"]
    assert 1.9 <= elapsed < 6
    response, elapsed = results["drip"]
    assert response.status_code == 504 and "limits.max_response_seconds" in response.json()["error"]["message"]
    assert 1.9 <= elapsed < 6

    assert growth < 64 * MiB, f"the gateway's peak RSS grew by {growth / MiB:.0f} MiB"
    assert len(healthz) >= 10 and max(healthz) < 1.0, f"/healthz took up to {max(healthz):.3f} s"
    assert len(store_bytes(gateway)) < 16 * MiB  # no oversize body was stored


# --- 4. waiting for a pooled connection --------------------------------------------------------


@pytest.mark.e2e
def test_waiting_for_a_pooled_connection_ends_in_503_upstream_busy(gateway: Gateway,
                                                                   hostile: HostileUpstream) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(chat, gateway, "tiny", "stall:2.5")  # takes the provider's only connection
        deadline = time.monotonic() + 5
        while not hostile.received("stall:2.5") and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        busy = chat(gateway, "tiny", "ok-busy")  # any other prompt is answered normally
        waited = time.monotonic() - started
        assert holder.result().status_code == 200
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"]["code"] == "upstream_busy" and "'tiny'" in busy.json()["error"]["message"]
    assert busy.headers["retry-after"] == "1"
    assert 0.4 <= waited < 2.0  # pool_timeout (0.5 s), not the connect timeout (5 s) nor the holder's 2.5 s
    assert len(hostile.received("stall:2.5")) == 1 and hostile.received("ok-busy") == []  # it never got through
    record = record_of(gateway, busy.headers["x-sluicegate-request-id"])
    assert record["outcome"] == "upstream_busy" and record["status"] == 503


async def test_every_way_a_call_ends_gives_its_pooled_connection_back(hostile: HostileUpstream) -> None:
    """The production client with a 1-connection pool: after each failure (and a stream closed early)
    the next call still gets the connection at once — a slot kept by any path would make it 503."""
    adapter = OpenAIAdapter("one", base_url=hostile.url + "/v1", api_key=API_KEY, max_connections=1,
                            pool_timeout=0.5, limits=UpstreamLimits(max_response_seconds=1, max_event_bytes=4096))

    def call(prompt: str, stream: bool = False) -> UpstreamCall:
        return UpstreamCall("chat.completions", {"model": "m", "stream": stream,
                                                 "messages": [{"role": "user", "content": prompt}]})

    try:
        for prompt, error in (("error:401:json", UpstreamHTTPError), ("error:500:html", UpstreamHTTPError),
                              ("redirect:307", UpstreamBadResponse), ("huge", UpstreamTooLarge),
                              ("huge:length", UpstreamTooLarge), ("bomb", UpstreamTooLarge), ("drip", UpstreamTimeout)):
            with pytest.raises(error):
                await adapter.send(call(prompt))
        stream = await adapter.stream(call("sse:unterminated", stream=True))
        with pytest.raises(UpstreamTooLarge, match="max_event_bytes"):
            async for _ in stream.events():
                pass
        await stream.aclose()
        stream = await adapter.stream(call("ok", stream=True))
        async for _ in stream.events():
            break  # a client that leaves after the first event
        await stream.aclose()
        for _ in range(2):
            reply = await asyncio.wait_for(adapter.send(call("ok")), 0.4)  # under pool_timeout: no wait at all
            assert reply.data["choices"][0]["message"]["content"] == "hello"
    finally:
        await adapter.close()


# --- 5. invalid UTF-8 in a stream --------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("route", ["oai", "ant"])
def test_invalid_utf8_in_a_stream_ends_with_an_error_event(gateway: Gateway, route: str) -> None:
    response = chat(gateway, route, "sse:bad-utf8", stream=True)
    assert response.status_code == 200
    assert b"\xff" not in response.content  # the bad bytes never reached the caller
    payloads = sse_payloads(response.content)
    assert payloads[-1]["error"]["code"] == "upstream_bad_response", payloads
    assert "UTF-8" in payloads[-1]["error"]["message"] or "utf-8" in payloads[-1]["error"]["message"].lower()
    assert b"data: [DONE]" not in response.content
    record = record_of(gateway, response.headers["x-sluicegate-request-id"])
    assert record["outcome"] != "ok" and "UTF-8" in record["error"]


# --- unit: the SSE splitter --------------------------------------------------------------------


class CountingBytes(bytes):
    """bytes whose `find` adds the length it scans to a shared tally."""

    scanned = [0]

    def find(self, sub: Any, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
        CountingBytes.scanned[0] += (len(self) if end is None else end) - start
        return super().find(sub, start, end)


class CountingBytearray(bytearray):
    def find(self, sub: Any, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]
        CountingBytes.scanned[0] += (len(self) if end is None else end) - start
        return super().find(sub, start, end)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_sse_splitter_scans_each_byte_about_once(chunk: int) -> None:
    """A stream that never sends a terminator: the old splitter searched the whole growing buffer
    on every chunk (n²/2 bytes for n); this one scans the new bytes, plus one of overlap."""
    total = 200_000
    CountingBytes.scanned[0] = 0
    splitter = SSESplitter(max_event_bytes=10 * total)
    splitter._buffer = CountingBytearray()  # noqa: SLF001 - counting the splitter's own scans
    fed = 0
    data = b"data: " + b"x" * total
    for i in range(0, len(data), chunk):
        assert splitter.feed(CountingBytes(data[i:i + chunk])) == []
        fed += len(data[i:i + chunk])
    assert CountingBytes.scanned[0] > 0  # the counters see the scans
    assert CountingBytes.scanned[0] <= 2 * fed + 2 * (fed // chunk + 1)
    assert splitter.feed(b"\n\n") == [data + b"\n\n"]


def test_sse_splitter_refuses_an_event_over_its_limit() -> None:
    splitter = SSESplitter(max_event_bytes=1024)
    assert splitter.feed(b"data: small\n\n") == [b"data: small\n\n"]
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            splitter.feed(b"y" * 100)  # never terminated
    with pytest.raises(EventTooLarge):
        SSESplitter(max_event_bytes=1024).feed(b"data: " + b"z" * 2000 + b"\n\n")  # terminated, but too big


def test_sse_splitter_joins_crlf_split_across_chunks() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\r\n\r") == []
    assert splitter.feed(b"\ndata: b\r\n\r\n") == [b"data: a\n\n", b"data: b\n\n"]
    assert splitter.tail() == b""


# --- unit: the scrubber ------------------------------------------------------------------------


def test_scrubber_masks_our_secrets_whole_and_in_pieces_and_keeps_normal_text() -> None:
    scrubber = Scrubber(provider_secrets(API_KEY, {"x-upstream-token": HEADER_SECRET, "x-mode": "http_400_mode"},
                                         "https://svc-user:pa%24%24word-1234@proxy.example/v1"))
    text = (f"key {API_KEY} / cut {API_KEY[:30]} / middle {API_KEY[10:27]} / header {HEADER_SECRET} / "
            "basic c3ZjLXVzZXI6cGEkJHdvcmQtMTIzNA== / mode http_400_mode")
    masked = scrubber.text(text)
    assert not leaks(masked), masked
    assert "pa$$word-1234" not in scrubber.text("pw pa$$word-1234") and "c3ZjLXVzZXI6" not in masked
    assert "http_400_mode" in masked  # a header whose name holds no secret is configuration
    normal = ("The model `claude-3-5-sonnet-20241022` does not exist; try mistralai/Mixtral-8x7B-Instruct-v0.1 "
              "(request req_011CSHoEeqs5C35K2UUqR7Fy, org org-AbC123dEf456GhI789jKl). See "
              "https://platform.openai.com/docs/guides/error-codes/api-errors?lang=python#rate-limits.")
    assert scrubber.text(normal) == normal
    assert mask_key_like("other key sk-live-0123456789abcdefABCDEF and 0123456789abcdef0123456789abcdef") == \
        "other key [SECRET] and [SECRET]"
    assert scrubber.answer(f"echo {API_KEY}!".encode()) == b"echo [SECRET]!"
    # answers keep pieces: "0123456789abcdef" may well be the model's own text
    assert scrubber.answer(API_KEY[20:40].encode()) == API_KEY[20:40].encode()
