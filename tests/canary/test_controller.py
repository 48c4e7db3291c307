"""The controller on a real store: figures from the report, the decision stored with the new stage,
paused canaries left alone, and one lease holder at a time."""

from __future__ import annotations

import time


from proxy.canary._controller import evaluate
from proxy.canary._state import decision_rows, history, read_stages
from proxy.config import parse_policy
from proxy.records import Outcome, Record, SQLiteStore, new_id

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  prod: {provider: mock, model: gpt-a}
  cand: {provider: mock, model: gpt-b}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
routes:
  bot:
    canary: {baseline: prod, candidate: cand, stages: [10, 50, 100], min_samples: 30, success_metric: task_success}
"""


async def traffic(store: SQLiteStore, variant: str, n: int, rate: float) -> None:
    rows: list = []
    for i in range(n):
        r = Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                   endpoint="chat.completions", route="bot", variant=variant, provider="mock",
                   model_requested=variant, started_at=time.time(), served=True, experiment="bot", latency_ms=100.0)
        rows += [r, Outcome(id=new_id("out_"), metric="task_success", value=1.0 if i < rate * n else 0.0,
                            level="inference", received_at=time.time(), request_id=r.request_id)]
    await store.write_records(rows)


async def test_a_better_candidate_is_promoted_and_the_decision_stored_with_its_figures(store) -> None:
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.50)
    await traffic(store, "cand", 400, 0.80)
    decision = await evaluate(store, policy, "bot")
    assert decision is not None and decision.action == "promote" and decision.to_stage == 50
    assert await read_stages(store) == {"bot": (50.0, "running")}
    entry, = await history(store, "bot")
    assert entry["rule"] == "non_inferior" and entry["actor"] == "controller"


async def test_a_worse_candidate_is_rolled_back(store) -> None:
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.80)
    await traffic(store, "cand", 400, 0.40)
    decision = await evaluate(store, policy, "bot")
    assert decision is not None and decision.action == "rollback"
    assert await read_stages(store) == {"bot": (0.0, "rolled_back")}


async def test_a_paused_canary_is_left_alone(store) -> None:
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.50)
    await traffic(store, "cand", 400, 0.80)
    await store.write_records(decision_rows("bot", action="pause", from_stage=10, to_stage=10, status="paused",
                                            rule="manual", reason="holiday", actor="ana"))
    assert await evaluate(store, policy, "bot") is None
    assert await read_stages(store) == {"bot": (10.0, "paused")}


async def test_one_lease_holder_at_a_time(store) -> None:
    assert await store.try_lease("canary-controller", "a", ttl_s=60)
    assert not await store.try_lease("canary-controller", "b", ttl_s=60)
    assert await store.try_lease("canary-controller", "a", ttl_s=60)  # renewing is fine
    assert await store.try_lease("other", "b", ttl_s=60)
    assert await store.try_lease("expired", "a", ttl_s=-1) and await store.try_lease("expired", "b", ttl_s=60)


async def test_min_samples_counts_outcomes_served_at_the_current_stage(store) -> None:
    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.50)
    await traffic(store, "cand", 400, 0.80)
    assert (await evaluate(store, policy, "bot")).to_stage == 50
    # plenty of cumulative evidence, but nothing served at 50% yet: hold, do not race to 100%
    held = await evaluate(store, policy, "bot")
    assert held.action == "hold" and held.rule == "need_samples"
    assert held.figures["candidate_outcomes"] == 400 and held.figures["candidate_stage_outcomes"] == 0
    await traffic(store, "prod", 30, 0.50)
    await traffic(store, "cand", 30, 0.80)
    promoted = await evaluate(store, policy, "bot")
    assert (promoted.action, promoted.to_stage) == ("promote", 100.0)
    assert promoted.figures["candidate_stage_outcomes"] == 30


async def test_report_sections_show_the_canary_and_its_decisions(store) -> None:
    from proxy.reports import policy_sections, render_text

    policy = parse_policy(POLICY)
    await traffic(store, "prod", 400, 0.50)
    await traffic(store, "cand", 400, 0.80)
    await evaluate(store, policy, "bot")
    sections = await policy_sections(store, policy, route="bot")
    canary, = sections["canary"]
    assert (canary["stage"], canary["status"], canary["candidate"]) == (50.0, "running", "cand")
    decision, = canary["decisions"]
    assert decision["rule"] == "non_inferior" and decision["figures"]["candidate_outcomes"] == 400
    text = render_text({"routes": [], **sections})
    assert "canary bot: cand at 50% (baseline prod), status running" in text
    assert "promote   10% -> 50%  [non_inferior, controller]" in text
