"""The controller on a real store: a canary run with a start (traffic from before it, or from an earlier run,
never counts), the run's periods, figures counted as the test counted them, the decision stored with its
figures and run, paused canaries left alone, restarts, and one lease holder at a time — on SQLite, and the
same flow on PostgreSQL."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.canary._controller import evaluate
from proxy.canary._manual import apply_action, plan_action
from proxy.canary._state import decision_rows, history, read_stages, read_state, stage_changes, start_runs
from proxy.canary._strata import SETTLE_S
from proxy.config import parse_policy
from proxy.records import Outcome, Record, SQLiteStore, new_id, open_store
from tests._services import postgres_url  # noqa: F401 (fixture)

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  prod: {provider: mock, model: gpt-a}
  cand: {provider: mock, model: gpt-b}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
  resolved: {type: boolean, level: episode, goal: maximize}
routes:
  bot:
    canary: {baseline: prod, candidate: cand, stages: [10, 50, 100], min_samples: 30, success_metric: task_success}
"""

T0 = 1_750_000_000.0
_buckets = itertools.count(1)


async def traffic(store: Any, variant: str, n: int, rate: float, at: float, *, route: str = "bot",
                  guard: str | None = None, sticky: bool = True, latency: float = 100.0,
                  buckets: Iterator[int] | None = None) -> None:
    """`n` requests of `variant` from `at` on (one sticky unit each), the first `rate`·n successful."""
    buckets = _buckets if buckets is None else buckets
    rows: list = []
    for i in range(n):
        failed = [{"guard": "g", "passed": False, "taxonomy": "x", "severity": guard}] if guard else []
        r = Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                   endpoint="chat.completions", route=route, variant=variant, provider="mock",
                   model_requested=variant, started_at=at + i * 0.01, served=True, experiment=route,
                   latency_ms=latency, guards=failed, bucket=next(buckets) % 10_000 if sticky else None)
        rows += [r, Outcome(id=new_id("out_"), metric="task_success", value=1.0 if i < rate * n else 0.0,
                            level="inference", received_at=at + 1, request_id=r.request_id)]
    await store.write_records(rows)


async def started(store: Any, policy: Any, at: float = T0) -> float:
    """Start the canary's run at `at` (as a serving process does when it starts); its first period opens
    SETTLE_S later."""
    await start_runs(store, policy, now=at)
    return at + SETTLE_S + 1


async def test_traffic_from_before_the_run_never_counts(store) -> None:
    """Last month the baseline did 0.90 on this route; the run compares only what came after its start."""
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 2000, 0.90, T0 - 30 * 86400)  # history: a much better baseline
    await traffic(store, "cand", 50, 0.0, T0 - 86400)  # an earlier, failed try of the candidate
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    decision = await evaluate(store, policy, "bot", now=t + 600)
    f = decision.figures
    assert (f["baseline_outcomes"], f["baseline_successes"]) == (400, 200)  # the counts this test made
    assert (f["candidate_outcomes"], f["candidate_successes"]) == (400, 320)
    assert (decision.action, decision.to_stage, decision.rule) == ("promote", 50.0, "non_inferior")
    assert f["run_started_at"] == T0 and f["run_id"].startswith("run_")


async def test_a_better_candidate_is_promoted_and_the_decision_stored_with_its_figures_and_run(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    decision = await evaluate(store, policy, "bot", now=t + 600)
    assert decision is not None and decision.action == "promote" and decision.to_stage == 50
    assert await read_stages(store) == {"bot": (50.0, "running")}
    entry, = await history(store, "bot")
    state = await read_state(store, "bot")
    assert entry["rule"] == "non_inferior" and entry["actor"] == "controller"
    assert entry["run_id"] == state.run.id == entry["figures"]["run_id"]
    assert state.run.stage_started_at == t + 600  # the new stage's clock
    assert entry["figures"]["plan"][0]["stage"] == 10.0


async def test_a_worse_candidate_is_rolled_back(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.80, t)
    await traffic(store, "cand", 400, 0.40, t)
    decision = await evaluate(store, policy, "bot", now=t + 600)
    assert decision is not None and decision.action == "rollback" and decision.rule == "inferior"
    assert await read_stages(store) == {"bot": (0.0, "rolled_back")}


async def test_the_first_evaluation_starts_a_run_when_no_process_did(store) -> None:
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.50, T0 - 100)
    await traffic(store, "cand", 400, 0.80, T0 - 100)
    held = await evaluate(store, policy, "bot", now=T0)
    assert (held.action, held.rule) == ("hold", "need_samples")  # everything so far came before the run
    assert held.figures["baseline_outcomes"] == held.figures["candidate_outcomes"] == 0
    state = await read_state(store, "bot")
    assert (state.stage, state.status, state.run.started_at) == (10.0, "running", T0)


async def test_a_paused_canary_is_left_alone(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    await apply_action(store, await plan_action(store, policy, "bot", "pause"), "holiday", "ana")
    assert await evaluate(store, policy, "bot", now=t + 600) is None
    assert await read_stages(store) == {"bot": (10.0, "paused")}
    resumed = await plan_action(store, policy, "bot", "resume")
    assert not resumed.new_run  # a pause never changed the allocation: same run
    await apply_action(store, resumed, "back", "ana")
    assert (await evaluate(store, policy, "bot", now=t + 600)).action == "promote"


async def test_one_lease_holder_at_a_time(store) -> None:
    assert await store.try_lease("canary-controller", "a", ttl_s=60)
    assert not await store.try_lease("canary-controller", "b", ttl_s=60)
    assert await store.try_lease("canary-controller", "a", ttl_s=60)  # renewing is fine
    assert await store.try_lease("other", "b", ttl_s=60)
    assert await store.try_lease("expired", "a", ttl_s=-1) and await store.try_lease("expired", "b", ttl_s=60)


async def test_min_samples_counts_outcomes_served_at_the_current_stage(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    assert (await evaluate(store, policy, "bot", now=t + 600)).to_stage == 50
    # plenty of evidence from the run, but nothing served at 50% yet: hold, do not race to 100%
    held = await evaluate(store, policy, "bot", now=t + 700)
    assert held.action == "hold" and held.rule == "need_samples"
    assert held.figures["candidate_outcomes"] == 400 and held.figures["candidate_stage_outcomes"] == 0
    t2 = t + 600 + SETTLE_S + 1  # the new stage's first period opens after the settle seconds
    await traffic(store, "prod", 30, 0.50, t2)
    await traffic(store, "cand", 30, 0.80, t2)
    promoted = await evaluate(store, policy, "bot", now=t2 + 100)
    assert (promoted.action, promoted.to_stage) == ("promote", 100.0)
    assert promoted.figures["candidate_stage_outcomes"] == 30 and promoted.figures["candidate_outcomes"] == 430
    assert promoted.figures["periods"] == 2  # 10% and 50%: compared within each, then combined
    state = await read_state(store, "bot")
    assert await stage_changes(store, state) == [(T0, 10.0), (t + 600, 50.0), (t2 + 100, 100.0)]


async def test_requests_in_the_settle_seconds_after_a_stage_change_do_not_count(store) -> None:
    policy = parse_policy(POLICY)
    await started(store, policy)
    await traffic(store, "prod", 100, 0.5, T0 + 1)  # within SETTLE_S of the run's start: replicas may lag
    await traffic(store, "cand", 100, 0.5, T0 + 1)
    held = await evaluate(store, policy, "bot", now=T0 + 600)
    assert held.figures["baseline_outcomes"] == held.figures["candidate_outcomes"] == 0


async def test_restart_and_resume_after_a_rollback_start_a_new_run(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.80, t)
    await traffic(store, "cand", 400, 0.40, t)
    assert (await evaluate(store, policy, "bot", now=t + 600)).action == "rollback"
    first_run = (await read_state(store, "bot")).run.id
    plan = await plan_action(store, policy, "bot", "resume")
    assert plan.new_run and (plan.to_stage, plan.status_after) == (10.0, "running")
    assert "a new canary run" in plan.sentence()
    await apply_action(store, plan, "fixed the prompt", "ana")
    state = await read_state(store, "bot")
    assert state.run.id != first_run and (state.stage, state.status) == (10.0, "running")
    held = await evaluate(store, policy, "bot", now=state.run.started_at + 600)
    assert held.rule == "need_samples" and held.figures["candidate_outcomes"] == 0  # the first run's 0.40: gone
    latest, = (await history(store, "bot"))[:1]
    assert (latest["action"], latest["run_id"]) == ("resume", state.run.id)
    again = await plan_action(store, policy, "bot", "restart")
    assert again.new_run and again.run.id != state.run.id


async def test_a_reload_that_changes_the_candidate_re_creates_the_canary(store) -> None:
    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    assert (await evaluate(store, policy, "bot", now=t + 600)).to_stage == 50
    old = (await read_state(store, "bot")).run
    changed = parse_policy(POLICY.replace("model: gpt-b", "model: gpt-c"))  # another candidate model pin
    assert await evaluate(store, changed, "bot", now=t + 700) is not None
    state = await read_state(store, "bot")
    assert state.run.id != old.id and state.stage == 10.0 and state.run.started_at == t + 700
    latest = (await history(store, "bot"))[0]
    assert (latest["action"], latest["rule"], latest["from_stage"], latest["to_stage"]) == (
        "restart", "policy_changed", 50.0, 10.0)
    # the same policy again: same run
    assert (await evaluate(store, changed, "bot", now=t + 800)) is not None
    assert (await read_state(store, "bot")).run.id == state.run.id


async def test_guard_failures_count_every_attempt_and_critical_ones_roll_back(store) -> None:
    policy = parse_policy(POLICY.replace("success_metric: task_success}",
                                         "success_metric: task_success, guardrails: {critical_failures: {max: 0}}}"))
    t = await started(store, policy)
    await traffic(store, "prod", 50, 0.5, t)
    await traffic(store, "cand", 50, 0.5, t)
    # a baseline request whose fallback answer failed a critical guard counts in the baseline arm
    first = Record(id=new_id("att_"), request_id="req-fb", attempt=1, attempt_reason="primary",
                   endpoint="chat.completions", route="bot", variant="prod", provider="mock", model_requested="a",
                   started_at=t + 5, served=False, bucket=77)
    late = Record(id=new_id("att_"), request_id="req-fb", attempt=2, attempt_reason="fallback",
                  endpoint="chat.completions", route="bot", variant="prod", provider="mock", model_requested="a",
                  started_at=t + 6, served=True, guards=[{"guard": "g", "passed": False, "taxonomy": "x",
                                                          "severity": "critical"}])
    await store.write_records([first, late])
    held = await evaluate(store, policy, "bot", now=t + 600)
    assert held.figures["baseline_guard_failures"] == 1 and held.figures["baseline_critical_failures"] == 1
    assert held.figures["baseline_requests"] == 51 and held.figures["candidate_critical_failures"] == 0
    await traffic(store, "cand", 1, 0.5, t + 10, guard="critical")
    rolled = await evaluate(store, policy, "bot", now=t + 600)
    assert (rolled.action, rolled.rule) == ("rollback", "critical_failures")


async def test_episode_outcomes_count_in_the_arm_and_period_of_the_episode_s_first_request(store) -> None:
    policy = parse_policy(POLICY.replace("success_metric: task_success", "success_metric: resolved"))
    t = await started(store, policy)
    rows: list = []
    # an episode that began before the run: left out, though it goes on inside the run
    for at, ep in ((T0 - 50, "old"), (t + 1, "old"), (t + 2, "e1"), (t + 3, "e1"), (t + 4, "e2")):
        variant = "cand" if ep == "e2" else "prod"
        rows.append(Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                           endpoint="chat.completions", route="bot", variant=variant, provider="mock",
                           model_requested="m", started_at=at, served=True, episode_id=ep,
                           bucket={"old": 1, "e1": 2, "e2": 3}[ep]))
    for ep, value in (("old", 1.0), ("e1", 0.0), ("e1", 1.0), ("e2", 1.0)):  # e1 corrected later: 1 counts
        rows.append(Outcome(id=new_id("out_"), metric="resolved", value=value, level="episode",
                            received_at=t + 10 + len(rows), episode_id=ep))
    await store.write_records(rows)
    held = await evaluate(store, policy, "bot", now=t + 600)
    f = held.figures
    assert (f["baseline_outcomes"], f["baseline_successes"], f["candidate_outcomes"]) == (1, 1.0, 1)


async def test_report_sections_show_the_canary_its_run_and_its_decisions(store) -> None:
    from proxy.reports import policy_sections, render_text

    policy = parse_policy(POLICY)
    t = await started(store, policy)
    await traffic(store, "prod", 400, 0.50, t)
    await traffic(store, "cand", 400, 0.80, t)
    await evaluate(store, policy, "bot", now=t + 600)
    sections = await policy_sections(store, policy, route="bot")
    canary, = sections["canary"]
    assert (canary["stage"], canary["status"], canary["candidate"]) == (50.0, "running", "cand")
    assert canary["run"]["started_at"] == T0
    decision, = canary["decisions"]
    assert decision["rule"] == "non_inferior" and decision["figures"]["candidate_outcomes"] == 400
    text = render_text({"routes": [], **sections})
    assert "canary bot: cand at 50% (baseline prod), status running" in text
    assert "promote   10% -> 50%  [non_inferior, controller]" in text


async def test_status_shows_the_current_evaluation_and_the_plan(store) -> None:
    from proxy.canary._render import evaluation_lines

    policy = parse_policy(POLICY)
    assert "no run yet" in (await evaluation_lines(store, policy, "bot"))[0]
    t = await started(store, policy)
    await traffic(store, "prod", 20, 0.50, t)
    await traffic(store, "cand", 5, 0.50, t)
    lines = await evaluation_lines(store, policy, "bot")
    text = "\n".join(lines)
    assert "now: hold [need_samples]" in text and "unit of analysis: sticky bucket" in text
    assert "10%: baseline" in text and "50%: baseline 30, candidate 30" in text
    assert await history(store, "bot") == []  # status writes nothing


async def test_a_decision_and_its_state_are_stored_together_and_read_back(store) -> None:
    await store.write_records(decision_rows("bot", action="promote", from_stage=1, to_stage=5, status="running",
                                            rule="non_inferior", reason="ok", figures={"lower": -0.01}, now=10))
    await store.write_records(decision_rows("bot", action="rollback", from_stage=5, to_stage=0,
                                            status="rolled_back", rule="manual", reason="bad", actor="ana", now=20))
    assert await read_stages(store) == {"bot": (0.0, "rolled_back")}
    log = await history(store, "bot")
    assert [(d["action"], d["from_stage"], d["to_stage"], d["actor"]) for d in log] == [
        ("rollback", 5.0, 0.0, "ana"), ("promote", 1.0, 5.0, "controller")]


async def test_a_state_from_before_runs_gets_a_run_at_its_current_stage(store) -> None:
    policy = parse_policy(POLICY)
    await store.write_records(decision_rows("bot", action="promote", from_stage=10, to_stage=50, status="running",
                                            rule="non_inferior", reason="ok", now=T0 - 100))  # no run (schema < 10)
    await start_runs(store, policy, now=T0)
    state = await read_state(store, "bot")
    assert (state.stage, state.status, state.run.started_at, state.run.stage_started_at) == (50.0, "running", T0, T0)
    await start_runs(store, policy, now=T0 + 5)  # another process: the first run stands
    assert (await read_state(store, "bot")).run == state.run
    assert await stage_changes(store, state) == [(T0, 50.0)]


async def test_the_controller_flow_on_postgresql(postgres_url: str, tmp_path) -> None:  # noqa: F811
    """The same run, figures and decision on PostgreSQL as on SQLite, from the same rows."""
    guardrails = "{guard_failure_rate: {max_increase: 0.2}, latency_p95_ms: {max_ratio: 1.5}}"
    policy = parse_policy(POLICY.replace("success_metric: task_success}",
                                         f"success_metric: task_success, guardrails: {guardrails}}}"))
    decisions = []
    for url in (f"sqlite:///{tmp_path}/s.db", postgres_url):
        store = open_store(url)
        await store.open()
        try:
            t = await started(store, policy)
            buckets = itertools.count(1)  # the same units on both stores
            await traffic(store, "prod", 300, 0.50, t, latency=120.0, buckets=buckets)
            await traffic(store, "cand", 300, 0.70, t, latency=90.0, buckets=buckets)
            await traffic(store, "cand", 40, 0.5, t + 50, sticky=False, guard="major")
            await traffic(store, "prod", 7, 0.5, t + 60, sticky=False, guard="critical")
            decision = await evaluate(store, policy, "bot", now=t + 600)
            state = await read_state(store, "bot")
            assert state.run is not None and state.stage == decision.to_stage
            decisions.append(decision)
        finally:
            await store.close()
    sqlite, pg = decisions
    assert (sqlite.action, sqlite.rule, sqlite.to_stage) == (pg.action, pg.rule, pg.to_stage) == (
        "promote", "non_inferior", 50.0)
    assert sqlite.figures["baseline_critical_failures"] == pg.figures["baseline_critical_failures"] == 7
    for key in ("baseline_outcomes", "candidate_outcomes", "candidate_successes", "candidate_guard_failures",
                "success_cs_low", "success_cs_high", "guard_failure_rate_cs_low", "latency_ratio_cs_high"):
        assert sqlite.figures[key] == pytest.approx(pg.figures[key], rel=1e-9), key
    geomean = math.exp((300 * math.log(90.0) + 40 * math.log(100.0)) / 340)  # of the served requests
    assert sqlite.figures["candidate_latency_geomean_ms"] == pytest.approx(geomean, rel=1e-9)
    assert pg.figures["candidate_latency_geomean_ms"] == pytest.approx(geomean, rel=1e-9)


async def test_a_store_from_before_runs_migrates_and_its_canary_gets_a_run(tmp_path) -> None:
    """Schema 9 (no runs) -> 10: the stored stage and status stay; the next start gives the canary a run."""
    import sqlite3

    from proxy.records._store import _MIGRATIONS

    path = tmp_path / "v9.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    for version in range(1, 10):
        for statement in _MIGRATIONS[version]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute("INSERT INTO canary_state (route, stage, status, updated_at, reason) VALUES "
                 "('bot', 50, 'paused', 1, 'holiday')")
    conn.execute("INSERT INTO canary_decisions (id, route, at, action, from_stage, to_stage, rule, reason, actor) "
                 "VALUES ('cd_1', 'bot', 1, 'promote', 10, 50, 'non_inferior', 'ok', 'controller')")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        state = await read_state(store, "bot")
        assert (state.stage, state.status, state.run) == (50.0, "paused", None)
        await start_runs(store, parse_policy(POLICY), now=T0)
        state = await read_state(store, "bot")
        assert (state.stage, state.status, state.run.started_at) == (50.0, "paused", T0)
        assert (await history(store, "bot"))[0]["run_id"] is None  # the old decision stays, outside any run
    finally:
        await store.close()
