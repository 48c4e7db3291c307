"""Judge calibration from the store, the report's scores section, and trust: an untrusted judge is
shown and marked, never changes a verdict; trust flips once enough agreeing human labels arrive."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxy.config import parse_policy
from proxy.records import Outcome, Record, new_id
from proxy.reports import build_report, policy_scores, report_inputs, wilson_interval
from proxy.scoring import Score, score_row
from proxy.scoring._trust import judge_calibrations

POLICY = """\
providers:
  mock: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  a: {provider: mock, model: gpt-a}
  b: {provider: mock, model: gpt-b}
  judge: {provider: mock, model: claude-judge}
routes:
  bot: {split: {a: 50, b: 50}, scorers: [helpful]}
metrics:
  task_success: {type: boolean, level: inference, goal: maximize}
scorers:
  helpful: {kind: llm_judge, model: judge, rubric: rubric.md, trust_after: {min_human_labels: 50, min_kappa: 0.6}}
"""


@pytest.fixture
def policy(tmp_path: Path):
    (tmp_path / "rubric.md").write_text("grade {answer}")
    return parse_policy(POLICY, source=str(tmp_path / "policy.yaml"))


def rec(variant: str) -> Record:
    return Record(id=new_id("att_"), request_id=new_id("req_"), attempt=1, attempt_reason="primary",
                  endpoint="chat.completions", route="bot", variant=variant, provider="mock",
                  model_requested=f"gpt-{variant}", started_at=time.time(), served=True, experiment="bot")


def review(r: Record, reason: str = "rate") -> dict:
    return {"row": "review", "id": f"{r.id}:review", "record_id": r.id, "request_id": r.request_id, "route": "bot",
            "variant": r.variant, "scorer": "review", "reason": reason, "entered_at": time.time()}


def score(r: Record, scorer: str, kind: str, label: str, weight: float = 1.0) -> dict:
    return score_row(Score(record_id=r.id, request_id=r.request_id, scorer=scorer, kind=kind, label=label,
                           weight=weight))


async def test_scores_section_rates_intervals_reweighting_and_untrusted_marking(store, policy) -> None:
    rows: list = []
    for i in range(40):
        r = rec("a")
        rows += [r, score(r, "helpful", "llm_judge", "pass" if i < 30 else "fail", weight=1.0 if i < 30 else 0.5)]
    r = rec("b")
    rows += [r, score(r, "helpful", "llm_judge", "judge_error")]
    await store.write_records(rows)
    section = await policy_scores(store, policy)
    a = section["routes"]["bot"]["a"]["helpful"]
    assert a["n"] == 40 and a["pass_rate"] == 30 / 40
    assert a["pass_rate_ci"] == list(wilson_interval(30, 40))
    assert a["pass_rate_reweighted"] == pytest.approx(30 / (30 + 10 * 0.5))
    assert a["trusted"] is False and "no calibration" not in a["trust"]  # calibrated, but on 0 labels
    b = section["routes"]["bot"]["b"]["helpful"]
    assert b["n"] == 0 and b["judge_errors"] == 1 and b["pass_rate"] is None
    assert section["warnings"] == []  # claude judging gpt: different families


async def test_trust_flips_once_enough_agreeing_human_labels_arrive(store, policy) -> None:
    rows: list = []
    records = [rec("a") for _ in range(60)]
    for i, r in enumerate(records):
        label = "pass" if i % 2 else "fail"
        rows += [r, score(r, "helpful", "llm_judge", label)]
    await store.write_records(rows + [review(r) for r in records])
    # 49 agreeing human labels: not yet trusted
    await store.write_records([score(r, "review", "human", "pass" if i % 2 else "fail")
                               for i, r in enumerate(records[:49])])
    cal, = (await judge_calibrations(store, policy)).values()
    assert not cal.trusted and cal.n_labels == 49 and "50" in cal.reason
    await store.write_records([score(records[49], "review", "human", "pass")])
    cal, = (await judge_calibrations(store, policy)).values()
    assert cal.trusted and cal.n_labels == 50 and cal.kappa == pytest.approx(1.0)
    section = await policy_scores(store, policy)
    helpful = section["routes"]["bot"]["a"]["helpful"]
    assert helpful["trusted"] and helpful["pass_rate_corrected"] == pytest.approx(helpful["pass_rate"])


async def test_an_untrusted_judge_does_not_change_a_verdict(store, policy) -> None:
    rows: list = []
    for variant, successes in (("a", 40), ("b", 70)):
        for i in range(100):
            r = rec(variant)
            rows += [r, Outcome(id=new_id("out_"), metric="task_success", value=1.0 if i < successes else 0.0,
                                level="inference", received_at=time.time(), request_id=r.request_id)]
    await store.write_records(rows)
    before = await build_report(store, **report_inputs(policy))
    # the judge says the opposite of the outcomes, loudly
    judged = [score(r, "helpful", "llm_judge", "fail" if r.variant == "b" else "pass")
              for r in rows if isinstance(r, Record)]
    await store.write_records(judged)
    after = await build_report(store, **report_inputs(policy))
    assert [c["verdict"] for c in after["routes"][0]["comparisons"]] == \
        [c["verdict"] for c in before["routes"][0]["comparisons"]]
    assert before["routes"][0]["comparisons"][0]["verdict"] == "better"


def test_same_family_judge_is_warned_about(tmp_path: Path) -> None:
    from proxy.reports import judge_family_warnings

    (tmp_path / "rubric.md").write_text("grade {answer}")
    text = POLICY.replace("claude-judge", "gpt-4o-mini")
    warnings = judge_family_warnings(parse_policy(text, source=str(tmp_path / "policy.yaml")))
    assert len(warnings) == 2 and all("same model family" in w for w in warnings)


async def test_calibration_counts_only_items_reviewed_at_random(store, policy) -> None:
    """Items a trigger pulled into the queue (e.g. low judge confidence) over-represent the judge's
    mistakes: they are labelled, but calibration leaves them out."""
    rows: list = []
    random_items = [rec("a") for _ in range(10)]
    triggered = [rec("a") for _ in range(10)]
    for r in random_items:
        rows += [r, score(r, "helpful", "llm_judge", "pass"), review(r, "rate"), score(r, "review", "human", "pass")]
    for r in triggered:  # the judge was wrong on every one of these
        rows += [r, score(r, "helpful", "llm_judge", "pass"), review(r, "judge_low_confidence"),
                 score(r, "review", "human", "fail")]
    await store.write_records(rows)
    cal, = (await judge_calibrations(store, policy)).values()
    assert cal.n_labels == 10 and cal.agreement == 1.0


async def test_judge_budget_is_seeded_from_todays_spend_and_the_report_says_when_sampling_backs_off(
        store, tmp_path: Path) -> None:
    from proxy.scoring._trust import judge_spent_today

    (tmp_path / "rubric.md").write_text("grade {answer}")
    policy = parse_policy(POLICY + "budgets:\n  judge_usd_per_day: 5\n", source=str(tmp_path / "policy.yaml"))
    today, yesterday = rec("a"), rec("a")
    old = Score(record_id=yesterday.id, request_id=yesterday.request_id, scorer="helpful", kind="llm_judge",
                label="pass", cost_usd=3.0, created_at=time.time() - 86400)
    new = Score(record_id=today.id, request_id=today.request_id, scorer="helpful", kind="llm_judge",
                label="pass", cost_usd=4.5)
    await store.write_records([today, yesterday, score_row(old), score_row(new)])
    assert await judge_spent_today(store) == pytest.approx(4.5)  # yesterday's spend does not count
    section = await policy_scores(store, policy)
    assert section["judge_budget"]["scale"] == pytest.approx(0.5)  # 90% spent: halfway from 80% to 100%
    assert any("judge budget" in w and "scaled by 0.50" in w for w in section["warnings"])
