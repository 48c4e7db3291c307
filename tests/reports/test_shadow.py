"""The report's shadow section: pairs by request id, McNemar on the discordant pairs, shadow errors
counted apart, judge errors never paired, only served primaries."""

from __future__ import annotations

import random
import time

import pytest

from proxy.records import Record, new_id
from proxy.reports import render_text, shadow_section
from proxy.scoring import Score
from proxy.scoring._worker import score_row

FAIL = [{"name": "schema", "passed": False, "taxonomy": "format", "severity": "major"}]
PASS = [{"name": "schema", "passed": True}]


def record(request_id: str, *, variant: str, attempt: int, reason: str, served: bool, status: int = 200,
           guards=None) -> Record:
    return Record(id=new_id("att_"), request_id=request_id, attempt=attempt, attempt_reason=reason,
                  endpoint="chat.completions", route="bot", variant=variant, provider="mock",
                  model_requested=variant, started_at=time.time(), served=served, status=status,
                  guards=guards if guards is not None else PASS)


async def test_guard_pairs_and_mcnemar_equal_statsmodels(store) -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    rng = random.Random(7)
    table = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    rows: list = []
    for _ in range(300):
        rid = new_id("req_")
        p_ok, s_ok = rng.random() < 0.9, rng.random() < 0.75
        table[(p_ok, s_ok)] += 1
        rows.append(record(rid, variant="prod", attempt=1, reason="primary", served=True,
                           guards=PASS if p_ok else FAIL))
        rows.append(record(rid, variant="next", attempt=0, reason="shadow", served=False,
                           guards=PASS if s_ok else FAIL))
    # a primary that failed over: only the served attempt is the pair's primary
    rid = new_id("req_")
    rows += [record(rid, variant="prod", attempt=1, reason="primary", served=False, status=503, guards=[]),
             record(rid, variant="fb", attempt=2, reason="fallback", served=True),
             record(rid, variant="next", attempt=0, reason="shadow", served=False)]
    # shadows that got no answer are counted, not paired
    for _ in range(4):
        rid = new_id("req_")
        rows += [record(rid, variant="prod", attempt=1, reason="primary", served=True),
                 record(rid, variant="next", attempt=0, reason="shadow", served=False, status=504, guards=[])]
    await store.write_records(rows)

    by_primary = {s["primary"]: s for s in await shadow_section(store, route="bot")}
    s = by_primary["prod"]
    assert (s["shadowed"], s["shadow_errors"]) == (304, 4)
    g = s["guards"]
    assert g["pairs"] == 300
    assert (g["both_pass"], g["primary_only_pass"], g["shadow_only_pass"], g["neither_pass"]) == (
        table[(True, True)], table[(True, False)], table[(False, True)], table[(False, False)])
    ref = mcnemar([[table[(True, True)], table[(True, False)]], [table[(False, True)], table[(False, False)]]],
                  exact=False, correction=True)
    assert g["test"] == "mcnemar_chi2"
    assert g["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert g["shadow_pass_rate"] == pytest.approx((table[(True, True)] + table[(False, True)]) / 300)
    assert by_primary["fb"]["shadowed"] == 1 and by_primary["fb"]["guards"]["pairs"] == 1
    text = render_text({"routes": [], "shadows": [s]})
    assert "next vs prod" in text and "4 of 304 shadow calls got no answer" in text


async def test_scorer_pairs_skip_judge_errors_and_use_the_scorers_pass_label(store) -> None:
    rows: list = []
    labels = [("good", "good"), ("good", "bad"), ("good", "bad"), ("bad", "good"), ("judge_error", "good")]
    for primary_label, shadow_label in labels:
        rid = new_id("req_")
        p = record(rid, variant="prod", attempt=1, reason="primary", served=True)
        s = record(rid, variant="next", attempt=0, reason="shadow", served=False)
        rows += [p, s]
        for r, label in ((p, primary_label), (s, shadow_label)):
            rows.append(score_row(Score(record_id=r.id, request_id=rid, scorer="helpful", kind="llm_judge",
                                        label=label)))
    await store.write_records(rows)
    s, = await shadow_section(store, labels={"helpful": ["good", "bad"]})
    c = s["scorers"]["helpful"]
    assert (c["pairs"], c["both_pass"], c["primary_only_pass"], c["shadow_only_pass"]) == (4, 1, 2, 1)
    assert c["test"] == "mcnemar_exact" and c["p_value"] == pytest.approx(1.0)
