"""The demo, reduced: its report recovers the known rates and names the better variant."""

from __future__ import annotations

import io

from proxy.demo import TRUTH, run_demo


async def test_reduced_demo_recovers_known_rates_and_names_the_winner(tmp_path):
    out = io.StringIO()
    report = await run_demo(users=1200, seed=11, store=f"sqlite:///{tmp_path}/demo.db", out=out)
    demo = report["demo"]
    assert demo["truly_better"] == "candidate" and TRUTH["candidate"].task_success > TRUTH["prod"].task_success
    assert demo["named_better"] == "candidate", out.getvalue()
    assert all(figure["within"] for arm in demo["found"].values() for figure in arm.values()), out.getvalue()
    assert demo["recovered"]
    assert sum(demo["episodes_per_variant"].values()) == 1200
    text = out.getvalue()
    assert "users  1200/1200" in text and "RECOVERED" in text and "candidate vs prod" in text
    # the judge loop: the background judge scored, simulated reviewers labelled the review queue, and
    # calibration on the randomly reviewed items found the mock judge's known error rate
    judge = demo["judge"]
    assert judge["calibrated"] and judge["n_labels"] >= 50, judge
    assert judge["within"], judge
    scores = report["scores"]["routes"]["support-bot"]
    assert set(scores) == {"prod", "candidate"} and scores["candidate"]["helpfulness"]["n"] > 0
    assert report["scores"]["warnings"] == []  # the judge is of another family than prod and candidate
    assert "judge error rate" in text
