"""Fault drills of the scale-out parts (issue 11): PostgreSQL and Redis going away under load and
coming back, and a scoring worker killed mid-batch. Real processes, the machine's PostgreSQL and
Redis (skipped when absent, failed when CI=true, see tests/_services.py).

The machine's servers are shared with other tests and CI jobs, so no drill stops them: a TCP proxy
(tests/_tcp_proxy.py) stands between the gateway and the server, and cutting it (every connection
closed, new ones refused) stands in for stopping the server; restoring it, for starting it again.
Helpers (the gateway, the load, the record checks) come from test_fault_drills.py.
"""

from __future__ import annotations

import ast
import asyncio
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis

from tests._services import postgres_url, redis_stream, redis_url  # noqa: F401 (fixtures)
from tests._tcp_proxy import TcpProxy
from tests.e2e.conftest import SLUICEGATE, Proc, records
from tests.e2e.test_fault_drills import (
    DrillGateway,
    Load,
    assert_every_reply_recorded,
    failures,
    mock_model,
    send,
    unique,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 10}
models:
  prod: {provider: mock, model: gpt-mock-prod}
routes:
  bot: {model: prod, capture: full}
"""


def write_policy(tmp: Path, text: str, mock_upstream: str) -> Path:
    policy = tmp / "policy.yaml"
    policy.write_text(text.replace("{mock}", mock_upstream + "/v1"))
    return policy


# --------------------------------------------------------------------------- PostgreSQL


def through(url: str, proxy: TcpProxy) -> str:
    """The same URL (user, database, ?schema=), with the proxy's address as host and port."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(f"{user}@" if user else "") + f"{proxy.host}:{proxy.port}"))


def target(url: str, default_port: int) -> tuple[int, str]:
    """(port, host) of a service URL: what the proxy forwards to."""
    parts = urlsplit(url)
    return parts.port or default_port, parts.hostname or "127.0.0.1"


def pg_request_ids(url: str) -> list[str]:
    """The request ids of the records in the store (straight to the server, not through the proxy)."""
    base, _, schema = url.partition("?schema=")

    async def fetch() -> list[str]:
        conn = await asyncpg.connect(base, server_settings={"search_path": schema})
        try:
            return [r[0] for r in await conn.fetch("SELECT request_id FROM records")]
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_postgresql_unreachable_under_load_and_back_loses_no_record(tmp_path, mock_upstream, postgres_url):
    """PostgreSQL goes away for 10 s while 4 clients send requests, then comes back.

    The TCP proxy in front of PostgreSQL stands in for stopping the server (the machine's PostgreSQL
    is shared, so it is not stopped): the cut closes every connection of the gateway's store and
    refuses new ones, as a stopped server would; the restore listens again on the same port.
    Requests keep succeeding and do not slow down, the recorder spills, and once PostgreSQL answers
    again every spilled record is replayed: the store holds exactly one record per request."""
    policy = write_policy(tmp_path, POLICY, mock_upstream)
    with TcpProxy(*target(postgres_url, 5432)) as proxy:
        gateway = DrillGateway(policy, through(postgres_url, proxy), tmp_path / "gw.log", cwd=tmp_path)
        try:
            with Load(gateway.url, ["bot"], clients=4, pause_s=0.02) as load:
                load.wait_sent(40)
                assert gateway.readyz()["store"]["writable"] is True
                proxy.cut()
                cut_at = time.monotonic()
                wait_for(lambda: gateway.readyz()["recorder"]["spilled"] > 0, 10, "records spilled")
                during = gateway.readyz()
                assert during["status"] == "degraded" and during["store"]["writable"] is False
                wait_for(lambda: time.monotonic() - cut_at >= 10, 15, "10 s of outage", every=0.5)
                sent_during = load.sent
                proxy.restore()
                wait_for(lambda: gateway.readyz()["store"]["writable"], 10, "the store writable again")
                load.wait_sent(40)
            replies = load.stop()
            assert failures(replies) == []
            assert max(r.seconds for r in replies) < 1.5  # no request waited on the store
            assert sent_during > 100  # the outage was under load

            wait_for(lambda: len(pg_request_ids(postgres_url)) >= len(replies), 20, "every record in PostgreSQL",
                     every=0.2)
            ids = pg_request_ids(postgres_url)
            assert len(ids) == len(set(ids)) == len(replies)  # one record per request, none twice
            assert set(ids) == {r.request_id for r in replies}
            wait_for(lambda: gateway.readyz()["recorder"]["spill_pending"] == 0, 10, "the spill file replayed")
            recorder = gateway.readyz()["recorder"]
            assert recorder["dropped"] == 0 and recorder["replayed"] == recorder["spilled"] > 0
            assert gateway.readyz()["status"] == "ready"
            assert gateway.stop() == 0
            assert len(pg_request_ids(postgres_url)) == len(replies)  # and nothing more at shutdown
            spill = tmp_path / "sluicegate.spill.jsonl"  # `./sluicegate.spill.jsonl` for a PostgreSQL store
            assert not spill.exists() or spill.stat().st_size == 0
        finally:
            gateway.stop()


def test_a_gateway_started_while_postgresql_is_down_recovers_when_it_is_back(tmp_path, mock_upstream, postgres_url):
    """A replica that starts before PostgreSQL (a node reboot, compose without a health-gated
    depends_on): it serves and spills; once PostgreSQL answers it should write and replay."""
    policy = write_policy(tmp_path, POLICY, mock_upstream)
    with TcpProxy(*target(postgres_url, 5432)) as proxy:
        proxy.cut()  # the server is "stopped" before the gateway starts
        gateway = DrillGateway(policy, through(postgres_url, proxy), tmp_path / "gw.log", cwd=tmp_path)
        try:
            with httpx.Client(base_url=gateway.url, timeout=10) as client:
                replies = [send(client, "bot", i) for i in range(5)]
                assert failures(replies) == []
                wait_for(lambda: gateway.readyz()["recorder"]["spilled"] == 5, 10, "5 records spilled")
                proxy.restore()
                wait_for(lambda: gateway.readyz()["store"]["writable"], 6, "the store writable again")
        finally:
            gateway.stop()
    assert sorted(pg_request_ids(postgres_url)) == sorted(r.request_id for r in replies)


# --------------------------------------------------------------------------- Redis

SCORED_POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 10}
models:
  prod: {provider: mock, model: gpt-mock-prod}
scorers:
  short: {kind: rule, max_chars: 20, taxonomy: verbose}
routes:
  bot: {model: prod, capture: full, scorers: [short], sampling: {default: 1.0}}
"""


def scores(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
        try:
            return db.execute("SELECT record_id, scorer FROM scores").fetchall()
        except sqlite3.OperationalError:
            return []


def served_record_ids(store: Path) -> set[str]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
        return {r[0] for r in db.execute("SELECT id FROM records WHERE served = 1")}


def start_worker(tmp: Path, policy: Path, store: Path, redis_url: str, stream: str, consumer: str,
                 *args: str) -> Proc:
    worker = Proc([*SLUICEGATE, "worker", "--policy", str(policy), "--store", f"sqlite:///{store}",
                   "--queue", redis_url, "--queue-stream", stream, "--consumer", consumer, *args],
                  tmp / f"{consumer}.log")
    wait_for(lambda: "worker.started" in worker.logs() or worker.proc.poll() is not None, 20, f"{consumer} started")
    assert worker.proc.poll() is None, worker.logs()[-3000:]
    return worker


def summary(worker: Proc) -> dict:
    """The `scored: {...}` line a worker prints when SIGTERM stopped it."""
    return ast.literal_eval(worker.log_path.read_text().rsplit("scored: ", 1)[1].splitlines()[0])


def queue_counts(gateway: DrillGateway) -> tuple[dict, dict]:
    scoring = gateway.readyz()["scoring"]
    return scoring, scoring["queue"]


def assert_nothing_silently_lost(scoring: dict, queue: dict) -> None:
    """Every sampled job is offered; every offer is sent, refused (dropped) or still buffered."""
    assert scoring["sampled"] == queue["offered"], (scoring, queue)
    assert queue["offered"] == queue["sent"] + queue["dropped"] + queue["buffered"], queue
    assert scoring["refused"] == queue["dropped"], (scoring, queue)


def test_redis_unreachable_under_load_and_back_every_sampled_record_is_scored(
        tmp_path, mock_upstream, redis_url, redis_stream):
    """Redis goes away for 5 s while 4 clients send requests (every answer sampled for scoring).

    The TCP proxy in front of Redis stands in for stopping the server (the machine's Redis is
    shared): the gateway's connections are closed and new ones refused. Requests keep succeeding;
    the offers made meanwhile wait in the gateway's buffer (none dropped, the buffer holds 10,000),
    the counts in /readyz add up at every look; once Redis is back the buffer drains and a worker
    scores every sampled record — once."""
    db = urlsplit(redis_url).path or "/0"
    policy = write_policy(tmp_path, SCORED_POLICY, mock_upstream)
    store = tmp_path / "store.db"
    with TcpProxy(*target(redis_url, 6379)) as proxy:
        gateway = DrillGateway(policy, store, tmp_path / "gw.log", cwd=tmp_path,
                               args=["--scoring", "external", "--queue", f"redis://{proxy.host}:{proxy.port}{db}",
                                     "--queue-stream", redis_stream])
        workers: list[Proc] = []
        try:
            workers.append(start_worker(tmp_path, policy, store, redis_url, redis_stream, "drill-worker",
                                        "--batch", "32"))
            with Load(gateway.url, ["bot"], clients=4, pause_s=0.02) as load:
                load.wait_sent(40)
                wait_for(lambda: queue_counts(gateway)[1]["redis_reachable"], 10, "the gateway on Redis")
                proxy.cut()
                cut_at = time.monotonic()
                wait_for(lambda: queue_counts(gateway)[1]["redis_reachable"] is False, 10, "Redis seen unreachable")
                while time.monotonic() - cut_at < 5:
                    scoring, queue = queue_counts(gateway)
                    assert_nothing_silently_lost(scoring, queue)
                    time.sleep(0.25)
                scoring, queue = queue_counts(gateway)
                assert_nothing_silently_lost(scoring, queue)
                assert queue["buffered"] > 50 and queue["dropped"] == 0  # held back, not lost
                assert queue["send_failures"] > 0
                proxy.restore()
                wait_for(lambda: queue_counts(gateway)[1]["buffered"] == 0, 15, "the buffer drained")
                load.wait_sent(40)
            replies = load.stop()
            assert failures(replies) == []
            assert max(r.seconds for r in replies) < 1.5  # nobody waited for Redis

            wait_for(lambda: queue_counts(gateway)[1]["buffered"] == 0, 10, "the buffer drained")
            scoring, queue = queue_counts(gateway)
            assert_nothing_silently_lost(scoring, queue)
            assert queue["dropped"] == 0 and queue["sent"] == scoring["sampled"] == len(replies)
            assert queue["redis_reachable"] is True

            assert_every_reply_recorded(replies, records(store, len(replies), timeout=15))
            wait_for(lambda: len(scores(store)) >= len(replies), 20, "every sampled record scored", every=0.2)
            scored = scores(store)
            assert len(scored) == len(set(scored)) == len(replies)  # one score per record and scorer
            assert {record_id for record_id, _ in scored} == served_record_ids(store)
            client = redis.Redis.from_url(redis_url)
            try:
                wait_for(lambda: client.xinfo_groups(redis_stream)[0]["pending"] == 0, 10, "every job acked")
                assert client.xlen(f"{redis_stream}:dead") == 0
                assert client.xlen(redis_stream) >= queue["sent"]  # a batch re-sent after a cut may land twice
            finally:
                client.close()
        finally:
            for worker in workers:
                worker.stop()
            gateway.stop()


# --------------------------------------------------------------------------- a worker killed mid-batch

JUDGED_POLICY = """
providers:
  mock: {kind: openai, base_url: '{mock}', read_timeout: 10}
models:
  prod: {provider: mock, model: gpt-mock-prod}
  judge: {provider: mock, model: JUDGE}
scorers:
  short: {kind: rule, max_chars: 20, taxonomy: verbose}
  helpful: {kind: llm_judge, model: judge, rubric: rubrics/helpfulness.md}
routes:
  bot: {model: prod, capture: full, scorers: [short, helpful], sampling: {default: 1.0}}
"""
N_JOBS = 24
BATCH = 6


def test_a_worker_killed_mid_batch_loses_no_job_and_another_scores_each_once(
        tmp_path, mock_upstream, redis_url, redis_stream):
    """Two scorers per record, one of them a judge taking 150 ms a call, batches of 6 jobs. The first
    worker is SIGKILLed in the middle of a batch (after it wrote and acked at least one): nothing of
    that batch was written or acked. A second worker (visibility 1 s) takes the dead worker's
    pending jobs over and scores the rest: every sampled record ends with exactly one score per
    scorer, no job is lost or dead-lettered, and the survivor scored exactly what the dead one had
    not acked."""
    judge = mock_model(mock_upstream, unique("drill-judge"), judge_error_rate=0.0, latency_ms=150)
    (tmp_path / "rubrics").mkdir()
    shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", tmp_path / "rubrics" / "helpfulness.md")
    policy = write_policy(tmp_path, JUDGED_POLICY.replace("JUDGE", judge), mock_upstream)
    store = tmp_path / "store.db"
    gateway = DrillGateway(policy, store, tmp_path / "gw.log", cwd=tmp_path,
                           args=["--scoring", "external", "--queue", redis_url, "--queue-stream", redis_stream])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    workers: list[Proc] = []
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            replies = [send(http, "bot", i) for i in range(N_JOBS)]
        assert failures(replies) == []
        wait_for(lambda: queue_counts(gateway)[1]["sent"] == N_JOBS, 10, "every job on the stream")
        wait_for(lambda: gateway.readyz()["recorder"]["written"] == N_JOBS, 10, "every record written")
        assert client.xlen(redis_stream) == N_JOBS

        doomed = start_worker(tmp_path, policy, store, redis_url, redis_stream, "doomed", "--batch", str(BATCH))
        workers.append(doomed)
        group = wait_for(lambda: client.xinfo_groups(redis_stream), 10, "the group")[0]["name"]

        def doomed_pending() -> int:
            return sum(c["pending"] for c in client.xpending(redis_stream, group)["consumers"] if c["name"] == "doomed")

        wait_for(lambda: len(scores(store)) >= 2 * BATCH, 20, "the first batch written")
        wait_for(lambda: doomed_pending() > 0, 10, "a batch claimed")
        time.sleep(0.3)  # into the batch: its judge calls take ~0.9 s
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(5)

        info, = client.xinfo_groups(redis_stream)
        pending = client.xpending(redis_stream, group)["pending"]
        acked_by_doomed = info["entries-read"] - pending
        assert 0 < pending <= BATCH and acked_by_doomed > 0, (info, pending)
        assert acked_by_doomed < N_JOBS, "the worker finished before it was killed: not a mid-batch kill"
        assert len(scores(store)) == 2 * acked_by_doomed  # nothing of the killed batch was written

        survivor = start_worker(tmp_path, policy, store, redis_url, redis_stream, "survivor", "--batch", str(BATCH),
                                "--visibility", "1")
        workers.append(survivor)
        wait_for(lambda: len(scores(store)) >= 2 * N_JOBS and client.xpending(redis_stream, group)["pending"] == 0,
                 30, "every job scored and acked", every=0.2)
        assert survivor.stop() == 0
        done = summary(survivor)

        scored = scores(store)
        assert len(scored) == len(set(scored)) == 2 * N_JOBS  # one score per record and scorer
        assert {s for _, s in scored} == {"short", "helpful"}
        assert {r for r, _ in scored} == served_record_ids(store) and len(served_record_ids(store)) == N_JOBS
        assert done["queue"]["redelivered"] == pending  # the dead worker's batch, taken over
        assert done["queue"]["delivered"] == N_JOBS - acked_by_doomed  # and nothing it had acked
        assert done["scored"] == 2 * (N_JOBS - acked_by_doomed) and done["errors"] == 0
        assert client.xlen(f"{redis_stream}:dead") == 0
        assert queue_counts(gateway)[0]["sampled"] == N_JOBS
    finally:
        for worker in workers:
            worker.stop()
        gateway.stop()
        client.close()
