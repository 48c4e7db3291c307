"""Feedback idempotency is scoped to (caller, request or episode, metric) (issue 17, finding 7).

Before: the key alone decided the outcome id, so another caller, episode or metric reusing a key got
`202 accepted, verified` and its outcome was silently discarded. Here every test counts the outcomes
it had accepted itself and checks the store holds exactly those: nothing is lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.config import parse_policy
from proxy.feedback import content_digest, scoped_id
from proxy.keys import hash_key
from proxy.mock_upstream import MockConfig, MockModel, create_app as create_mock
from proxy.records import Outcome, open_store
from proxy.server import Settings, create_app
from tests._services import postgres_url  # noqa: F401 (fixture)

APP_KEY, OTHER_KEY = "sk-app-0123456789", "sk-other-abcdef"
POLICY = f"""\
providers:
  mock: {{kind: openai, base_url: "http://mock.test/v1"}}
models:
  prod: {{provider: mock, model: gpt-prod}}
routes:
  bot: {{model: prod, capture: full}}
metrics:
  task_success: {{type: boolean, level: episode, goal: maximize}}
  resolved:     {{type: boolean, level: inference, goal: maximize}}
  csat:         {{type: float, level: inference, goal: maximize}}
auth:
  keys:
    app: {{hash: "{hash_key(APP_KEY)}"}}
    other: {{hash: "{hash_key(OTHER_KEY)}"}}
"""
OPEN_POLICY = POLICY.split("auth:")[0]


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, policy: str = POLICY,
                  **recorder: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    mock = httpx.ASGITransport(app=create_mock(MockConfig(default=MockModel())))
    app = create_app(Settings(policy=parse_policy(policy), store_url=f"sqlite:///{tmp_path}/s.db",
                              spill_path=tmp_path / f"{uuid.uuid4().hex}.spill.jsonl", recorder_options=recorder,
                              transports={"mock": mock}, report_metrics_every_s=0))
    async with app.router.lifespan_context(app):
        # localhost: a Host an open gateway answers to
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
            yield client, app.state.gateway


def auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


async def serve(client: httpx.AsyncClient, episode: str, key: str | None = APP_KEY) -> str:
    r = await client.post("/v1/chat/completions", headers={**auth(key), "x-sluicegate-episode": episode},
                          json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    return r.headers["x-sluicegate-request-id"]


async def send(client: httpx.AsyncClient, body: dict[str, Any], key: str | None = APP_KEY) -> httpx.Response:
    return await client.post("/v1/feedback", json=body, headers=auth(key))


async def stored(gw: Any) -> list[tuple[Any, ...]]:
    """Every outcome in the store: (id, metric, value, request_id, episode_id, source, caller)."""
    await gw.recorder.flush()
    rows = await gw.store.fetch("SELECT id, metric, value, request_id, episode_id, source, data FROM outcomes")
    return sorted((*row[:6], orjson.loads(row[6]).get("caller")) for row in rows)


def error(r: httpx.Response) -> dict[str, Any]:
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type", "param", "code"}
    return r.json()["error"]


# --- scope: callers, subjects and metrics never share a key -------------------------------------


async def test_two_callers_using_one_key_never_collide(tmp_path: Path) -> None:
    """`other` reports first, on app's own episode, with app's predictable key: it claims nothing of app's."""
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ticket-4711")
        body = {"episode_id": "ticket-4711", "metric": "task_success", "idempotency_key": "ticket-4711:closed"}
        squatter = await send(client, {**body, "value": False}, key=OTHER_KEY)
        owner = await send(client, {**body, "value": True}, key=APP_KEY)
        rows = await stored(gw)
    assert squatter.status_code == owner.status_code == 202
    assert owner.json()["idempotent_replay"] is False and owner.json()["id"] != squatter.json()["id"]
    assert "idempotent-replayed" not in owner.headers
    assert sorted((r[0], r[2], r[6]) for r in rows) == sorted(
        [(squatter.json()["id"], 0.0, "other"), (owner.json()["id"], 1.0, "app")])


async def test_one_key_on_other_episodes_requests_and_metrics_is_a_new_outcome_each(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, gw):
        r1, r2 = await serve(client, "ep-1"), await serve(client, "ep-2")
        sent = [{"episode_id": "ep-1", "metric": "task_success", "value": True},
                {"episode_id": "ep-2", "metric": "task_success", "value": False},
                {"request_id": r1, "metric": "resolved", "value": True},
                {"request_id": r1, "metric": "csat", "value": 4.0},
                {"request_id": r2, "metric": "csat", "value": 2.5}]
        answers = [await send(client, {**body, "idempotency_key": "k"}) for body in sent]
        rows = await stored(gw)
    assert [a.status_code for a in answers] == [202] * len(sent)
    assert not any(a.json()["idempotent_replay"] for a in answers)
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == len(sent)  # five outcomes, five ids
    by_id = {r[0]: r for r in rows}
    assert len(rows) == len(sent) and set(by_id) == set(ids)
    for answer, body in zip(ids, sent):
        _, metric, value, request_id, episode_id, _, caller = by_id[answer]
        assert (metric, value, request_id, episode_id, caller) == (
            body["metric"], float(body["value"]), body.get("request_id"), body.get("episode_id"), "app")


# --- within one scope: a repeat is answered as the first time, a change is a 409 ----------------


async def test_a_repeat_is_an_idempotent_replay_and_stored_once(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ep-r")
        body = {"episode_id": "ep-r", "metric": "task_success", "value": True, "source": "helpdesk",
                "note": "closed by agent", "idempotency_key": "ep-r:done"}
        first = await send(client, body)
        again = [await send(client, body) for _ in range(3)]
        rows = await stored(gw)
        after_flush = await send(client, body)  # now answered from the store's row as well
    assert first.status_code == 202 and first.json()["idempotent_replay"] is False
    for r in [*again, after_flush]:
        assert r.status_code == 202 and r.headers["idempotent-replayed"] == "true"
        assert r.json() == {**first.json(), "idempotent_replay": True}
    assert [(r[0], r[2]) for r in rows] == [(first.json()["id"], 1.0)]


@pytest.mark.parametrize("change,param", [({"value": False}, "value"), ({"source": "crm"}, "source"),
                                          ({"note": "reopened"}, "note"), ({"note": None}, "note")])
async def test_a_changed_outcome_under_a_used_key_is_a_409_naming_the_field(tmp_path: Path, change: dict[str, Any],
                                                                            param: str) -> None:
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ep-c")
        body = {"episode_id": "ep-c", "metric": "task_success", "value": True, "source": "helpdesk",
                "note": "closed", "idempotency_key": "ep-c:done"}
        first = await send(client, body)
        changed = {k: v for k, v in {**body, **change}.items() if v is not None}
        conflict = await send(client, changed)
        rows = await stored(gw)
        after_flush = await send(client, changed)  # the store's row decides now: still a conflict
    assert first.status_code == 202
    for r in (conflict, after_flush):
        assert r.status_code == 409
        e = error(r)
        assert (e["param"], e["code"], e["type"]) == (param, "idempotency_key_conflict", "invalid_request_error")
        assert "'ep-c:done'" in e["message"] and "task_success" in e["message"]
    assert [(r[0], r[2], r[5]) for r in rows] == [(first.json()["id"], 1.0, "helpdesk")]  # the first one stays


async def test_a_conflict_names_every_field_that_differs(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, _):
        request_id = await serve(client, "ep-m")
        body = {"request_id": request_id, "metric": "csat", "value": 4.5, "idempotency_key": "survey-9"}
        await send(client, body)
        r = await send(client, {**body, "value": 1, "source": "email"})
    e = error(r)
    assert r.status_code == 409 and e["param"] == "value"
    assert "value and source" in e["message"] and "first 4.5, now 1" in e["message"]


async def test_after_a_restart_the_store_still_decides_replay_or_conflict(tmp_path: Path) -> None:
    body = {"episode_id": "ep-s", "metric": "task_success", "value": True, "idempotency_key": "ep-s:done"}
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ep-s")
        first = await send(client, body)
    async with gateway(tmp_path) as (client, gw):  # a new process: nothing remembered in memory
        assert len(gw.feedback_keys) == 0
        replay = await send(client, body)
        conflict = await send(client, {**body, "value": False})
        other = await send(client, {**body, "value": False}, key=OTHER_KEY)  # another caller's scope
        rows = await stored(gw)
    assert replay.status_code == 202 and replay.json() == {**first.json(), "idempotent_replay": True}
    assert conflict.status_code == 409 and error(conflict)["param"] == "value"
    assert other.status_code == 202 and other.json()["idempotent_replay"] is False
    assert sorted((r[0], r[2]) for r in rows) == sorted([(first.json()["id"], 1.0), (other.json()["id"], 0.0)])


async def test_concurrent_uses_of_one_key_store_one_outcome_and_refuse_the_rest(tmp_path: Path) -> None:
    """40 senders at once, half true and half false: exactly one is stored, the same-content ones are
    replays of it, the others are 409s (the await on the store must not let two claims through)."""
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ep-race")
        body = {"episode_id": "ep-race", "metric": "task_success", "idempotency_key": "race"}
        values = [i % 2 == 0 for i in range(40)]
        answers = await asyncio.gather(*(send(client, {**body, "value": v}) for v in values))
        rows = await stored(gw)
    accepted = [(v, a) for v, a in zip(values, answers) if a.status_code == 202]
    first = [v for v, a in accepted if not a.json()["idempotent_replay"]]
    assert len(first) == 1 and len(rows) == 1 and rows[0][2] == float(first[0])
    assert all(v == first[0] for v, _ in accepted)  # every replay carries the stored value
    refused = [v for v, a in zip(values, answers) if a.status_code != 202]
    assert all(a.status_code in (202, 409) for a in answers)
    assert len(refused) == 20 and all(v != first[0] for v in refused)


async def test_open_gateway_scopes_by_subject_and_metric(tmp_path: Path) -> None:
    """No keys: every caller is the same caller, but episodes and metrics still never share a key."""
    async with gateway(tmp_path, OPEN_POLICY) as (client, gw):
        await serve(client, "ep-a", key=None)
        await serve(client, "ep-b", key=None)
        a = await send(client, {"episode_id": "ep-a", "metric": "task_success", "value": True, "idempotency_key": "1"},
                       key=None)
        b = await send(client, {"episode_id": "ep-b", "metric": "task_success", "value": False,
                                "idempotency_key": "1"}, key=None)
        rows = await stored(gw)
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    assert sorted((r[4], r[2], r[6]) for r in rows) == [("ep-a", 1.0, None), ("ep-b", 0.0, None)]


# --- the batch endpoint -------------------------------------------------------------------------


async def test_batch_reports_replays_and_conflicts_per_item_and_loses_nothing(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (client, gw):
        await serve(client, "ep-1")
        await serve(client, "ep-2")
        earlier = await send(client, {"episode_id": "ep-2", "metric": "task_success", "value": True,
                                      "idempotency_key": "old"})
        items = [
            {"episode_id": "ep-1", "metric": "task_success", "value": True, "idempotency_key": "k"},   # new
            {"episode_id": "ep-1", "metric": "task_success", "value": True, "idempotency_key": "k"},   # repeat
            {"episode_id": "ep-1", "metric": "task_success", "value": False, "idempotency_key": "k"},  # conflict
            {"episode_id": "ep-2", "metric": "task_success", "value": False, "idempotency_key": "k"},  # other scope
            {"episode_id": "ep-2", "metric": "task_success", "value": True, "idempotency_key": "old"},  # repeat
            {"episode_id": "ep-2", "metric": "task_success", "value": False, "idempotency_key": "old"},  # conflict
            {"episode_id": "ep-2", "metric": "task_success", "value": False},                          # no key
        ]
        lines = b"\n".join(orjson.dumps(i) for i in items)
        r = await client.post("/v1/feedback/batch", content=lines,
                              headers={**auth(APP_KEY), "content-type": "application/json"})
        rows = await stored(gw)
    body = r.json()
    assert r.status_code == 202
    assert (body["accepted"], body["rejected"], body["replayed"]) == (5, 2, 2)
    assert [(e["index"], e["status"], e["error"]["param"], e["error"]["code"]) for e in body["errors"]] == [
        (2, 409, "value", "idempotency_key_conflict"), (5, 409, "value", "idempotency_key_conflict")]
    ids = body["ids"]  # of items 0, 1, 3, 4, 6
    assert ids[0] == ids[1] and ids[3] == earlier.json()["id"] and len({ids[0], ids[2], ids[3], ids[4]}) == 4
    assert sorted((r[0], r[2]) for r in rows) == sorted(  # 1 earlier + 3 new: the test's own count
        [(earlier.json()["id"], 1.0), (ids[0], 1.0), (ids[2], 0.0), (ids[4], 0.0)])


# --- what only the store's write can see ---------------------------------------------------------


async def test_a_conflict_found_only_at_write_time_is_kept_and_counted(tmp_path: Path) -> None:
    """Two replicas on one store: replica 1 still holds its outcome in memory (long flush interval) when
    replica 2 accepts the same key with other content; its store look-up finds nothing, so it answers 202.
    At write time the later writer's outcome goes to `outcome_conflicts`, counted and in /metrics."""
    body = {"episode_id": "ep-w", "metric": "task_success", "idempotency_key": "ep-w:done"}
    async with gateway(tmp_path, flush_interval=60.0, batch_size=10_000) as (c1, g1):
        await serve(c1, "ep-w")
        await g1.recorder.flush()  # the record is in the store; replica 2 can verify the episode
        held = await send(c1, {**body, "value": True})
        async with gateway(tmp_path) as (c2, g2):
            written = await send(c2, {**body, "value": False})
            await g2.recorder.flush()
        await g1.recorder.flush()
        rows = await g1.store.fetch("SELECT id, value FROM outcomes")
        kept = await g1.store.fetch("SELECT id, outcome_id, data FROM outcome_conflicts")
        metrics = (await c1.get("/metrics")).text
    assert held.status_code == written.status_code == 202 and held.json()["id"] == written.json()["id"]
    assert rows == [(written.json()["id"], 0.0)]  # the first one stored stays
    assert len(kept) == 1 and kept[0][1] == held.json()["id"]
    assert orjson.loads(kept[0][2])["value"] == 1.0  # the other one is kept, not dropped: 2 accepted, 2 rows
    assert g1.store.outcome_conflicts == 1
    assert "sluicegate_feedback_conflicts_total 1.0" in metrics


def keyed(value: float, caller: str = "app", note: str | None = None) -> Outcome:
    outcome_id = scoped_id(caller, "episode_id", "ep-1", "task_success", "k")
    return Outcome(id=outcome_id, metric="task_success", value=value, level="episode", received_at=1.7e9,
                   episode_id="ep-1", note=note, caller=caller, idempotency_key="k",
                   digest=content_digest(value, None, note))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Any]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


async def count(store: Any, table: str) -> int:
    return int((await store.fetch(f"SELECT count(*) FROM {table}"))[0][0])


async def test_store_keeps_the_first_outcome_and_sets_a_conflicting_one_aside(store: Any) -> None:
    first, repeat, other = keyed(1.0), keyed(1.0), keyed(0.0)
    await store.write_records([first])
    await store.write_records([repeat])  # a repeat (a spill replayed twice): no conflict
    assert (await count(store, "outcomes"), await count(store, "outcome_conflicts")) == (1, 0)
    await store.write_records([other])
    await store.write_records([{**dataclasses.asdict(other), "received_at": 1.8e9}])  # as replayed from a spill
    assert (await count(store, "outcomes"), await count(store, "outcome_conflicts")) == (1, 1)
    assert store.outcome_conflicts == 1
    assert await store.fetch("SELECT value, digest FROM outcomes") == [(1.0, first.digest)]
    # two conflicting outcomes in one batch (another scope): the first stays, the second is set aside
    a, b = keyed(1.0, caller="other"), keyed(1.0, caller="other", note="changed")
    await store.write_records([a, b])
    assert (await count(store, "outcomes"), await count(store, "outcome_conflicts")) == (2, 2)
    assert store.outcome_conflicts == 2
    # keyless outcomes keep the batched path
    await store.write_records([Outcome(id=f"out_plain{i}", metric="csat", value=i, level="inference",
                                       received_at=1.7e9, request_id=f"r{i}") for i in range(3)])
    assert await count(store, "outcomes") == 5

