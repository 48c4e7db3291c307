"""Fault drills (issue 11) with real processes: a fault is injected while clients send traffic, and
every drill counts what it sent against what the store holds — zero lost records — and checks that
no client saw an error caused by a background part (store, recorder, policy reload, shutdown).

What tests/e2e/test_faults_and_errors.py (fallback per fault kind, the error contract) and
test_store_fault.py (locked SQLite, sequential SIGTERM flush) already cover is not repeated here.
The drills that need PostgreSQL or Redis are in test_drill_scaleout.py.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socketserver
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Self

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import (
    PROVIDER_KEY,
    SLUICEGATE,
    Proc,
    free_port,
    records,
    wait_http,
)

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "where is my order?"}]


# --------------------------------------------------------------------------- processes and load


class DrillGateway(Proc):
    """`sluicegate serve` run in `cwd` (a store that is not a file spills to `./sluicegate.spill.jsonl`:
    in the test's folder, not the repository's)."""

    def __init__(self, policy: Path, store: Path | str, log: Path, *, cwd: Path,
                 args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        self.policy = policy
        url = store if isinstance(store, str) else f"sqlite:///{store}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [*SLUICEGATE, "serve", "--policy", str(policy), "--port", str(self.port), "--store", url,
             "--log-format", "json", *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "TEST_PROVIDER_KEY": PROVIDER_KEY,
                 **(env or {})})
        wait_http(f"{self.url}/readyz", self.proc, log)

    def readyz(self) -> dict:
        return httpx.get(f"{self.url}/readyz", timeout=5).json()

    def wait_logged(self, event: str, timeout: float = 5.0) -> None:
        """Log lines are written in batches, at most 0.1 s late."""
        wait_for(lambda: f'"{event}"' in self.logs(), timeout, f"log event {event}")


@pytest.fixture
def launch(tmp_path: Path, mock_upstream: str) -> Iterator[Callable[..., DrillGateway]]:
    """Start a gateway on a policy text (`{mock}` = the mock's /v1 URL); stopped afterwards."""
    started: list[DrillGateway] = []

    def start(policy_text: str, store: Path | str | None = None, name: str = "gw",
              args: Sequence[str] = ()) -> DrillGateway:
        """A second start with the same `name` is a restart: same policy file, same store."""
        policy = tmp_path / f"{name}.yaml"
        if not policy.exists():
            policy.write_text(policy_text.replace("{mock}", mock_upstream + "/v1"))
        gateway = DrillGateway(policy, store if store is not None else tmp_path / f"{name}.db",
                               tmp_path / f"{name}-{len(started)}.log", cwd=tmp_path, args=args)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> object:
    """Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclasses.dataclass
class Reply:
    route: str
    status: int  # 0: no HTTP answer at all (connection error, client timeout)
    request_id: str | None
    seconds: float
    text: str
    headers: dict[str, str]

    def error(self) -> dict:
        return orjson.loads(self.text)["error"]


def send(client: httpx.Client, route: str, i: int, *, stream: bool = False) -> Reply:
    body = {"model": route, "messages": [{"role": "user", "content": f"drill question {i}"}]}
    if stream:
        body["stream"] = True
    started = time.perf_counter()
    try:
        response = client.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Reply(route, 0, None, time.perf_counter() - started, repr(exc), {})
    return Reply(route, response.status_code, response.headers.get("x-sluicegate-request-id"),
                 time.perf_counter() - started, response.text, dict(response.headers))


class Load:
    """`clients` threads, each sending requests one after the other (routes in turn) until stopped."""

    def __init__(self, url: str, routes: Sequence[str], clients: int = 4, timeout: float = 20.0,
                 pause_s: float = 0.0) -> None:
        self.url, self.routes, self.timeout, self.pause_s = url, list(routes), timeout, pause_s
        self.replies: list[Reply] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def _client(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            i = 0
            while not self._stop.is_set():
                reply = send(client, self.routes[(n + i) % len(self.routes)], n * 1_000_000 + i)
                with self._lock:
                    self.replies.append(reply)
                i += 1
                if self.pause_s:
                    time.sleep(self.pause_s)

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self.replies)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Reply]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.replies

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_sent(self, n: int, timeout: float = 10.0) -> None:
        """Until `n` more replies came back than now."""
        target = self.sent + n
        wait_for(lambda: self.sent >= target, timeout, f"{n} more replies")


def failures(replies: Sequence[Reply]) -> list[Reply]:
    return [r for r in replies if r.status != 200]


def by_request(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        out[row["request_id"]].append(row)
    for attempts in out.values():
        attempts.sort(key=lambda r: r["attempt"])
    return out


def assert_every_reply_recorded(replies: Sequence[Reply], rows: Sequence[dict]) -> None:
    """Each answered request has its records: attempts 1..n, none twice; a 200 exactly one served
    attempt (the last); an error none served. And no record of a request nobody sent."""
    assert len({r["id"] for r in rows}) == len(rows), "a record stored twice"
    grouped = by_request(rows)
    sent = {r.request_id: r for r in replies if r.request_id}
    assert len(sent) == len(replies), "a reply without x-sluicegate-request-id"
    missing = [rid for rid in sent if rid not in grouped]
    assert not missing, f"{len(missing)} of {len(sent)} requests have no record, e.g. {missing[:3]}"
    assert set(grouped) <= set(sent), "records of requests nobody sent"
    for rid, reply in sent.items():
        attempts = grouped[rid]
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1)), attempts
        served = [a for a in attempts if a["served"]]
        if reply.status == 200:
            assert len(served) == 1 and served[0] is attempts[-1], attempts
        else:
            assert served == [] and attempts[-1]["status"] == reply.status, attempts


def all_rows(store: Path, n: int, timeout: float = 20.0) -> list[dict]:
    """The store's records once there are `n` (failing with the count otherwise)."""
    rows = records(store, n, timeout=timeout)
    assert len(rows) == n, f"{len(rows)} records in the store, expected {n}"
    return rows


def mock_model(mock_upstream: str, name: str, **behaviour: object) -> str:
    """Configure a model of the (shared) mock upstream; a fresh name per test keeps tests apart."""
    response = httpx.put(f"{mock_upstream}/_mock/models/{name}", json=behaviour, timeout=5)
    assert response.status_code == 200, response.text
    return name


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- 1. a 429 storm


STORM_POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 5, retry: {max_retries: 1, max_delay_ms: 1000}}
models:
  storm: {provider: mock, model: STORM}
  backup: {provider: mock, model: gpt-mock-prod}
routes:
  storm-fb: {model: storm, fallbacks: [backup], capture: refs_only}
  storm-nofb: {model: storm, capture: refs_only}
"""


def test_429_storm_answers_or_passes_the_429_on_never_hangs_and_records_every_attempt(launch, mock_upstream):
    """The primary's first 50 calls get 429 with `Retry-After: 0.2 s`: one retry each (waiting what the
    upstream asked), then the fallback; without a fallback the client gets the upstream's 429 with its
    Retry-After. Once the storm has passed, the primary answers again."""
    storm = mock_model(mock_upstream, unique("storm"), fault="http_429", fault_count=50, retry_after=0.2)
    gateway = launch(STORM_POLICY.replace("STORM", storm))
    with Load(gateway.url, ["storm-fb", "storm-nofb"], clients=12, timeout=15) as load:
        load.wait_sent(72, timeout=30)
    replies = load.stop()
    with httpx.Client(base_url=gateway.url, timeout=15) as client:  # the storm is over
        after = [send(client, "storm-nofb", i) for i in range(4)]
    assert [r.status for r in after] == [200] * 4

    statuses = Counter((r.route, r.status) for r in replies)
    assert set(statuses) <= {("storm-fb", 200), ("storm-nofb", 200), ("storm-nofb", 429)}, statuses
    assert statuses[("storm-nofb", 429)] > 0, "the storm did not reach the clients of the route without fallback"
    assert max(r.seconds for r in replies) < 5, "a request hung in the storm"
    for reply in replies:
        if reply.status == 429:  # the upstream's own error, OpenAI-shaped, with its wait
            assert reply.headers["retry-after"] == "1" and reply.headers["retry-after-ms"] == "200"
            assert set(reply.error()) == {"message", "type", "param", "code"}
            assert reply.error()["code"] == "rate_limit_exceeded" and "Rate limit" in reply.error()["message"]
            assert reply.headers["x-sluicegate-variant"] == "storm"

    rows = all_rows(gateway.store, gateway.readyz()["recorder"]["submitted"])
    assert_every_reply_recorded([*replies, *after], rows)
    reasons = Counter((r["attempt_reason"], r["outcome"], r["upstream_status"]) for r in rows)
    assert reasons[("retry", "upstream_error", 429)] > 0  # waited and retried the same upstream
    fallbacks = [r for r in rows if r["attempt_reason"] == "fallback"]
    assert fallbacks and all(r["variant"] == "backup" and r["served"] for r in fallbacks)
    for attempts in by_request(rows).values():
        assert len(attempts) <= 3  # primary, one retry, the fallback: a storm does not multiply calls
    ready = gateway.readyz()
    assert ready["recorder"]["dropped"] == 0 and ready["status"] == "ready"


# --------------------------------------------------------------------------- 2. the SQLite store read-only

SIMPLE_POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 10}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  bot: {model: prod, capture: full}
"""


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """`make_read_only(*files)`: the files' immutable flag (chattr +i), removed again at the end.

    chmod would not do: the gateway runs as root on these machines, and root ignores file modes;
    and even as another user a mode change does not affect a file SQLite already has open. With the
    immutable flag every write fails, root's and those through open descriptors alike."""
    probe = tmp_path / "chattr-probe"
    probe.write_bytes(b"")
    try:
        chattr("+i", probe)
        chattr("-i", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot set the immutable flag here (chattr +i needs root and ext4/xfs/btrfs): {exc}")
    flagged: list[Path] = []

    def make_read_only(*paths: Path) -> None:
        chattr("+i", *paths)
        flagged.extend(paths)

    def restore() -> None:
        if flagged:
            chattr("-i", *flagged)
            flagged.clear()

    make_read_only.restore = restore  # type: ignore[attr-defined]
    yield make_read_only
    restore()  # always: an immutable file cannot be deleted, not even by pytest's cleanup


def test_sqlite_store_read_only_under_load_spills_then_replays_every_record(launch, tmp_path, immutable):
    """The store file and its WAL become read-only for ~2 s in the middle of the load: requests keep
    succeeding, the records go to the spill file and, once the files are writable again, all of them
    are replayed into the store — as many records as requests, none twice."""
    store = tmp_path / "data" / "store.db"
    gateway = launch(SIMPLE_POLICY, store=store)
    with Load(gateway.url, ["bot"], clients=4) as load:
        load.wait_sent(20)
        immutable(store, store.with_name("store.db-wal"))
        try:
            wait_for(lambda: gateway.readyz()["recorder"]["spilled"] >= 20, 10, "records spilled")
            during = gateway.readyz()
            assert during["status"] == "degraded" and during["store"]["writable"] is False
            load.wait_sent(20)
        finally:
            immutable.restore()  # type: ignore[attr-defined]
        wait_for(lambda: gateway.readyz()["store"]["writable"], 10, "the store writable again")
        load.wait_sent(20)
    replies = load.stop()
    assert failures(replies) == []
    assert max(r.seconds for r in replies) < 1.5  # no request waited on the failing store

    rows = all_rows(store, len(replies))
    assert_every_reply_recorded(replies, rows)
    wait_for(lambda: gateway.readyz()["recorder"]["spill_pending"] == 0, 10, "the spill file replayed")
    recorder = gateway.readyz()["recorder"]
    assert recorder["dropped"] == 0 and recorder["spill_corrupt"] == 0
    assert recorder["replayed"] == recorder["spilled"] > 0
    assert recorder["submitted"] == recorder["written"] + recorder["spilled"] == len(replies)
    assert not Path(f"{store}.spill.jsonl.replaying").exists()
    gateway.wait_logged("records.store_recovered")


def test_sqlite_store_read_only_at_start_loses_nothing_and_a_restart_replays(launch, tmp_path, immutable):
    """Started on a store file it cannot write: the gateway serves anyway, spills every record, and a
    restart once the file is writable replays them all (see the next test for recovery in place)."""
    store = tmp_path / "data" / "store.db"
    store.parent.mkdir()
    store.write_bytes(b"")  # an empty file is an empty SQLite database
    immutable(store)
    gateway = launch(SIMPLE_POLICY, store=store)
    gateway.wait_logged("store_open_failed")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        replies = [send(client, "bot", i) for i in range(15)]
    assert failures(replies) == []
    wait_for(lambda: gateway.readyz()["recorder"]["spilled"] == 15, 10, "15 records spilled")
    assert gateway.readyz()["status"] == "degraded"
    assert gateway.stop() == 0
    immutable.restore()  # type: ignore[attr-defined]

    again = launch(SIMPLE_POLICY, store=store)
    assert_every_reply_recorded(replies, all_rows(store, 15))
    wait_for(lambda: again.readyz()["recorder"]["spill_pending"] == 0, 10, "the spill file replayed")
    assert again.readyz()["recorder"]["replayed"] == 15 and again.readyz()["status"] == "ready"


def test_sqlite_store_unwritable_at_start_recovers_once_writable(launch, tmp_path, immutable):
    store = tmp_path / "data" / "store.db"
    store.parent.mkdir()
    store.write_bytes(b"")
    immutable(store)
    gateway = launch(SIMPLE_POLICY, store=store)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        replies = [send(client, "bot", i) for i in range(5)]
        assert failures(replies) == []
        wait_for(lambda: gateway.readyz()["recorder"]["spilled"] == 5, 10, "5 records spilled")
        immutable.restore()  # type: ignore[attr-defined]
        # the recorder pings the store every second: it should notice, open it and replay
        wait_for(lambda: gateway.readyz()["store"]["writable"], 6, "the store writable again")
        replies += [send(client, "bot", i) for i in range(5, 10)]
    assert_every_reply_recorded(replies, all_rows(store, 10))


# --------------------------------------------------------------------------- 5. broken reloads under load

RELOAD_POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 10}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  candidate: {provider: mock, model: gpt-mock-candidate}
routes:
  bot: {model: prod, capture: refs_only}
"""

BROKEN = [
    ("yaml", lambda good: good + "  oops: [unclosed\n"),
    ("unknown key", lambda good: good.replace("capture: refs_only", "capture: refs_only, captur: full")),
    ("bad value", lambda good: good.replace("capture: refs_only", "capture: nope")),
    ("dangling model", lambda good: good.replace("{model: prod", "{model: no_such_model")),
    ("empty", lambda good: ""),
]


def write_atomically(path: Path, text: str) -> None:
    """As an editor or a ConfigMap update does: the reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_broken_policy_reloads_under_load_fail_no_request_then_a_good_one_takes_effect(launch):
    """20 reloads of five kinds of broken file while 4 clients send requests: each reload is refused
    with the file's problem, not one request fails, every request is recorded with the version it
    was served on; then a good file is swapped in and its new route serves at once."""
    gateway = launch(RELOAD_POLICY)
    good = gateway.policy.read_text()
    first = gateway.readyz()["policy"]["version"]
    with Load(gateway.url, ["bot"], clients=4) as load, httpx.Client(base_url=gateway.url, timeout=10) as admin:
        load.wait_sent(10)
        for i in range(20):
            kind, breaks = BROKEN[i % len(BROKEN)]
            write_atomically(gateway.policy, breaks(good))
            refused = admin.post("/admin/reload")
            assert refused.status_code == 400, (kind, refused.text)
            assert refused.json()["error"]["code"] == "policy_invalid", kind
            assert str(gateway.policy.name) in refused.json()["error"]["message"], kind
            time.sleep(0.02)
        assert gateway.readyz()["policy"]["version"] == first
        assert gateway.readyz()["reload"]["ok"] is False
        load.wait_sent(10)
        write_atomically(gateway.policy, good.replace("bot: {model: prod", "bot: {model: candidate")
                         + "  bot2: {model: prod, capture: refs_only}\n")
        accepted = admin.post("/admin/reload")
        assert accepted.status_code == 200 and accepted.json()["ok"], accepted.text
        second = accepted.json()["version"]
        assert second != first and accepted.json()["previous"] == first
        swapped_at = load.sent
        new_route = send(admin, "bot2", 0)
        assert new_route.status == 200
        load.wait_sent(10)
    replies = load.stop()
    assert failures(replies) == []
    assert gateway.readyz()["reload"]["ok"] is True and gateway.proc.poll() is None

    rows = all_rows(gateway.store, len(replies) + 1)
    assert_every_reply_recorded([*replies, new_route], rows)
    versions = {r["request_id"]: (r["policy_version"], r["variant"]) for r in rows}
    assert set(versions.values()) <= {(first, "prod"), (second, "candidate"), (second, "prod")}
    # a request sent after the swap was answered was served on the new policy
    late = [versions[r.request_id] for r in replies[swapped_at + 8:]]
    assert late and all(v == (second, "candidate") for v in late), late
    assert versions[new_route.request_id] == (second, "prod")


# --------------------------------------------------------------------------- 6. SIGTERM under load

DRAIN_POLICY = """
providers:
  slow: {kind: openai, base_url: '{mock}', read_timeout: 10, headers: {x-mock-latency-ms: '1500'}}
  dribble: {kind: openai, base_url: '{mock}', read_timeout: 10,
            headers: {x-mock-chunks: '6', x-mock-chunk-delay-ms: '250'}}
models:
  slow: {provider: slow, model: MODEL}
  dribble: {provider: dribble, model: MODEL}
routes:
  slow: {model: slow, capture: full}
  dribble: {model: dribble, capture: full}
"""


def test_sigterm_under_load_finishes_in_flight_requests_and_streams_flushes_and_exits_0(launch, mock_upstream):
    """20 requests in flight (1.5 s answers, and streams of 1.5 s) when SIGTERM arrives: every one of
    them completes whole, every record reaches the store, and the process exits 0."""
    model = unique("drain")
    gateway = launch(DRAIN_POLICY.replace("MODEL", model))
    results: list[Reply | tuple[str, int, str | None, bytes]] = []
    lock = threading.Lock()

    def plain(i: int) -> None:
        with httpx.Client(base_url=gateway.url, timeout=20) as client:
            reply = send(client, "slow", i)
        with lock:
            results.append(reply)

    def streamed(i: int) -> None:
        body = {"model": "dribble", "stream": True, "messages": [{"role": "user", "content": f"drain {i}"}]}
        try:
            with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=20) as response:
                data = response.read()
                outcome = ("dribble", response.status_code, response.headers.get("x-sluicegate-request-id"), data)
        except httpx.HTTPError as exc:
            outcome = ("dribble", 0, None, repr(exc).encode())
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=plain, args=(i,)) for i in range(12)]
    threads += [threading.Thread(target=streamed, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()

    def arrived() -> bool:  # every request reached the upstream: all 20 are in flight in the gateway
        seen = httpx.get(f"{mock_upstream}/_mock/requests", params={"model": model}, timeout=5).json()["data"]
        return len(seen) == 20

    wait_for(arrived, 10, "20 requests in flight")
    assert not results, "a request finished before SIGTERM: the drill would not test the drain"
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(20)
    code = gateway.proc.wait(20)
    assert code == 0, gateway.logs()[-3000:]
    assert time.monotonic() - started < 10

    plain_replies = [r for r in results if isinstance(r, Reply)]
    streams = [r for r in results if not isinstance(r, Reply)]
    assert len(plain_replies) == 12 and len(streams) == 8
    assert failures(plain_replies) == []
    for _, status, request_id, data in streams:
        assert status == 200 and request_id, data[-300:]
        assert data.endswith(b"data: [DONE]\n\n"), data[-300:]  # whole, not cut by the shutdown
    rows = records(gateway.store)  # the process is gone: what it flushed is all there is
    assert len(rows) == 20
    ids = [r.request_id for r in plain_replies] + [s[2] for s in streams]
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    assert all(r["outcome"] == "ok" and r["served"] for r in rows), Counter(r["outcome"] for r in rows)
    assert not Path(f"{gateway.store}.spill.jsonl").exists()  # written to the store, not left to spill
    assert '"stopped"' in gateway.logs()


# --------------------------------------------------------------------------- 7. streams broken by the upstream

STREAM_POLICY = """
providers:
  cutter: {kind: openai, base_url: '{mock}', read_timeout: 10,
           headers: {x-mock-fault: reset_mid_stream, x-mock-chunks: '8'}}
  garbler: {kind: openai, base_url: '{mock}', read_timeout: 10,
            headers: {x-mock-fault: malformed_sse, x-mock-chunks: '8'}}
models:
  cutter: {provider: cutter, model: gpt-mock-cut}
  garbler: {provider: garbler, model: gpt-mock-garbled}
routes:
  cut: {model: cutter, fallbacks: [garbler], capture: full}
  garbled: {model: garbler, capture: full}
"""


def sse_events(data: bytes) -> list[bytes]:
    return [event for event in data.split(b"\n\n") if event.strip()]


def test_streams_cut_or_garbled_by_the_upstream_are_never_silently_truncated(launch):
    """A connection reset mid-stream: the client's stream ends with an SSE error event naming the
    upstream (the openai SDK raises APIError); a stream with an event that is not JSON reaches the
    client as sent (the SDK raises on it) and ends with [DONE]. Either way one record per request,
    saying what happened (`stream_cut` / `malformed`); a fallback is not tried once bytes were sent."""
    gateway = launch(STREAM_POLICY)
    replies: dict[str, tuple[str, bytes]] = {}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for i in range(12):
            route = ("cut", "garbled")[i % 2]
            body = {"model": route, "stream": True, "messages": [{"role": "user", "content": f"stream {i}"}]}
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                replies[response.headers["x-sluicegate-request-id"]] = (route, response.read())
    for route, data in replies.values():
        events = sse_events(data)
        assert len(events) >= 2, data  # the part before the fault was relayed
        if route == "cut":
            error = orjson.loads(events[-1].removeprefix(b"data: "))["error"]
            assert error["code"] == "upstream_bad_response" and "'cutter'" in error["message"]
            assert b"[DONE]" not in data
        else:
            assert b"this is not json" in data and events[-1] == b"data: [DONE]"

    rows = all_rows(gateway.store, 12)
    assert sorted(r["request_id"] for r in rows) == sorted(replies)  # one record each, no fallback attempt
    for row in rows:
        route = replies[row["request_id"]][0]
        assert row["status"] == 200 and row["attempt"] == 1
        if route == "cut":
            assert (row["outcome"], row["provider"]) == ("stream_cut", "cutter")
        else:
            assert (row["outcome"], row["provider"]) == ("malformed", "garbler")
            assert "not JSON" in row["error"]
        assert row["response"]["choices"][0]["message"]["content"]  # what was relayed before the fault

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    for route, raised in (("cut", openai.APIError), ("garbled", ValueError)):  # a JSONDecodeError is a ValueError
        with pytest.raises(raised):
            for _ in client.chat.completions.create(model=route, messages=CHAT, stream=True):
                pass
    all_rows(gateway.store, 14)
    assert gateway.readyz()["recorder"]["dropped"] == 0


class _EndsWithoutDone(socketserver.BaseRequestHandler):
    """An upstream whose stream stops early with a clean end of body (`connection: close`, then FIN):
    what a server or proxy that gives up mid-answer without an HTTP-level error looks like."""

    EVENTS: ClassVar[list[dict]] = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Your order left the warehouse on"}, "finish_reason": None}]},
    ]

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += self.request.recv(65536)
        self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for event in self.EVENTS:
            self.request.sendall(b"data: " + orjson.dumps(event) + b"\n\n")
            time.sleep(0.02)


@pytest.fixture
def upstream_ending_early() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EndsWithoutDone)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_stream_the_upstream_ends_without_done_gets_an_error_event(launch, upstream_ending_early):
    gateway = launch(f"""
providers:
  quitter: {{kind: openai, base_url: '{upstream_ending_early}', read_timeout: 5}}
models:
  quitter: {{provider: quitter, model: m}}
routes:
  bot: {{model: quitter, capture: full}}
""")
    body = {"model": "bot", "stream": True, "messages": CHAT}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10) as response:
        data = response.read()
    row, = all_rows(gateway.store, 1)
    assert row["outcome"] == "stream_cut"  # the gateway knows …
    last = orjson.loads(sse_events(data)[-1].removeprefix(b"data: "))
    assert "error" in last, f"… but the client got a normal-looking end: {data[-200:]!r}"  # … the client does not
