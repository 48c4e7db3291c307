"""Scoring end to end with real processes on 127.0.0.1.

Traffic goes through `sluicegate serve --scoring external`; `sluicegate worker --once` scores the
sampled records from the store (a rule, an LLM judge played by the mock with a known error rate,
and a human review queue); human labels are posted through the review API; `sluicegate calibrate`
and `sluicegate report` must show the figures this test computes itself from what it sent, got
back and labelled. A second test shows that no request waits for a judge that takes 5 s.
"""

from __future__ import annotations

import ast
import math
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest
from statsmodels.stats.inter_rater import cohens_kappa
from statsmodels.stats.proportion import proportion_confint

from proxy.mock_upstream._judge import BAD_ANSWER_MARKER
from proxy.scoring._sampler import draw
from tests.e2e.conftest import SLUICEGATE, Proc, free_port, wait_http

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

MOCK_CONFIG = """
models:
  gpt-mock-prod:      {bad_answer_rate: 0.3}
  gpt-mock-candidate: {bad_answer_rate: 0.15}
  judge-mock:         {judge_error_rate: 0.1}
  judge-mock-slow:    {judge_error_rate: 0.1, latency_ms: 5000}
"""

PRICE_IN, PRICE_OUT = 2.5, 10.0  # the judge's price, USD per million tokens

POLICY = f"""
providers:
  mock: {{kind: openai, base_url: '{{mock}}', read_timeout: 30}}
models:
  prod:      {{provider: mock, model: gpt-mock-prod}}
  candidate: {{provider: mock, model: gpt-mock-candidate}}
  judge:     {{provider: mock, model: judge-mock, family: mockjudge,
               price: {{input_per_mtok: {PRICE_IN}, output_per_mtok: {PRICE_OUT}}}}}
  slow_judge: {{provider: mock, model: judge-mock-slow, family: mockjudge}}
routes:
  support-bot:
    split: {{prod: 50, candidate: 50}}
    capture: full
    sampling: {{default: 0.5, rules: [{{tag: vip, rate: 1.0}}]}}
    scorers: [scope, helpful, review]
  slow-bot:
    model: prod
    capture: full
    sampling: {{default: 1.0}}
    scorers: [slow_helpful]
scorers:
  scope:   {{kind: rule, regex: 'deliberately wrong', taxonomy: out_of_scope_answer}}
  helpful: {{kind: llm_judge, model: judge, rubric: rubrics/helpfulness.md,
             trust_after: {{min_human_labels: 20, min_kappa: 0.6}}}}
  slow_helpful: {{kind: llm_judge, model: slow_judge, rubric: rubrics/helpfulness.md}}
  review:  {{kind: human, rate: 1.0}}
"""

N_REQUESTS = 60
N_LABELS = 30
ROUTE = "support-bot"


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def mock_judge(tmp_path_factory: pytest.TempPathFactory):
    """A mock upstream with bad answers, a judge with a known error rate and a 5 s judge."""
    folder = tmp_path_factory.mktemp("scoring-mock")
    config = folder / "mock.yaml"
    config.write_text(MOCK_CONFIG)
    port = free_port()
    proc = Proc([*SLUICEGATE, "mock-upstream", "--port", str(port), "--config", str(config)], folder / "mock.log")
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc.proc, folder / "mock.log")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


class Served:
    """`sluicegate serve` on the policy above, with a `--scoring` mode."""

    def __init__(self, tmp: Path, mock: str, scoring: str) -> None:
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(POLICY.replace("{mock}", mock + "/v1"))
        (tmp / "rubrics").mkdir()
        shutil.copy(ROOT / "policies" / "rubrics" / "helpfulness.md", tmp / "rubrics" / "helpfulness.md")
        self.store = tmp / "store.db"
        self.store_url = f"sqlite:///{self.store}"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = Proc([*SLUICEGATE, "serve", "--policy", str(self.policy), "--port", str(port),
                          "--store", self.store_url, "--log-format", "json", "--scoring", scoring], tmp / "gw.log")
        wait_http(f"{self.url}/readyz", self.proc.proc, tmp / "gw.log")

    def readyz(self) -> dict:
        return httpx.get(f"{self.url}/readyz", timeout=5).json()

    def flushed(self, n: int, timeout: float = 10.0) -> dict:
        """/readyz once at least `n` rows were submitted and every submitted row is written."""
        deadline = time.monotonic() + timeout
        while True:
            ready = self.readyz()
            rec = ready["recorder"]
            if (rec["submitted"] >= n and rec["written"] == rec["submitted"]) or time.monotonic() > deadline:
                assert rec["written"] == rec["submitted"] >= n, rec
                return ready
            time.sleep(0.05)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*SLUICEGATE, *args, "--policy", str(self.policy), "--store", self.store_url],
                              capture_output=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return done


@pytest.fixture
def serve(tmp_path: Path, mock_judge: str):
    started: list[Served] = []

    def start(scoring: str) -> Served:
        started.append(Served(tmp_path, mock_judge, scoring))
        return started[-1]

    yield start
    for gateway in started:
        gateway.proc.stop()


def query(store: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
        return db.execute(sql, params).fetchall()


def ask(client: httpx.Client, route: str, i: int, vip: bool = False) -> httpx.Response:
    headers = {"x-sluicegate-tags": "vip"} if vip else {}
    body = {"model": route, "messages": [{"role": "user", "content": f"question {i}: where is my order #{1000 + i}?"}]}
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


# --------------------------------------------------------------------------- the loop


def test_worker_scores_humans_label_calibrate_and_report_agree(serve):
    gw = serve("external")

    # 1. traffic: what the client got back is the truth the test judges everything against
    sent: dict[str, dict] = {}  # request id -> variant, vip, answer, bad
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for i in range(N_REQUESTS):
            vip = i % 3 == 0
            response = ask(client, ROUTE, i, vip)
            text = response.json()["choices"][0]["message"]["content"]
            sent[response.headers["x-sluicegate-request-id"]] = {
                "variant": response.headers["x-sluicegate-variant"], "vip": vip, "answer": text,
                "bad": BAD_ANSWER_MARKER in text}
    ready = gw.flushed(N_REQUESTS)
    assert ready["scoring"] is None  # --scoring external: the server does nothing for scoring
    assert set(v["variant"] for v in sent.values()) == {"prod", "candidate"}
    assert any(v["bad"] for v in sent.values()) and not all(v["bad"] for v in sent.values())
    assert query(gw.store, "SELECT count(*) FROM scores") == [(0,)]

    # which requests the sampler takes: vip at 1.0 (weight 1), the rest at 0.5 (weight 2)
    rate = {rid: 1.0 if s["vip"] else 0.5 for rid, s in sent.items()}
    sampled = {rid for rid in sent if draw(rid) < rate[rid]}
    weight = {rid: 1.0 / rate[rid] for rid in sampled}
    assert 0 < len(sampled) < N_REQUESTS and len(sampled) > N_LABELS

    # 2. the worker scores what the store holds, once
    done = gw.cli("worker", "--once")
    stats_line = next(line for line in done.stderr.decode().splitlines() if line.startswith("scored: "))
    stats = ast.literal_eval(stats_line.removeprefix("scored: "))
    assert stats["sampled"] == len(sampled) and stats["not_sampled"] == N_REQUESTS - len(sampled)
    assert stats["scored"] == 2 * len(sampled) and stats["to_review"] == len(sampled) and stats["errors"] == 0

    record_of = dict(query(gw.store, "SELECT request_id, id FROM records WHERE served = 1 AND route = ?", (ROUTE,)))
    assert set(record_of) == set(sent)
    rows = query(gw.store, "SELECT id, record_id, request_id, scorer, kind, label, taxonomy, confidence, weight, "
                           "cost_usd, data FROM scores")
    assert len(rows) == 2 * len(sampled)  # one row per (record, scorer), nothing for unsampled records
    by = {(r[2], r[3]): r for r in rows}
    assert set(by) == {(rid, s) for rid in sampled for s in ("scope", "helpful")}
    judge_label: dict[str, str] = {}
    wrong = 0
    for rid in sampled:
        truth = "fail" if sent[rid]["bad"] else "pass"
        for scorer in ("scope", "helpful"):
            id_, record_id, _, _, _, _, _, _, w, _, _ = by[(rid, scorer)]
            assert id_ == f"{record_id}:{scorer}" and record_id == record_of[rid]
            assert w == weight[rid]
        _, _, _, _, kind, label, taxonomy, _, _, cost, _ = by[(rid, "scope")]
        assert kind == "rule" and label == truth and cost is None
        assert taxonomy == ("out_of_scope_answer" if truth == "fail" else None)
        _, _, _, _, kind, label, taxonomy, confidence, _, cost, data = by[(rid, "helpful")]
        data = orjson.loads(data)
        assert kind == "llm_judge" and label in ("pass", "fail"), (label, data.get("error"))
        judge_label[rid] = label
        wrong += label != truth
        # the mock judge is confident when right (>= 0.75) and unsure when it flipped (< 0.65)
        assert (label != truth) == (confidence < 0.7), (label, truth, confidence)
        assert data["judge_model"] == "judge-mock" and data["attempts"] == 1
        assert data["prompt_tokens"] > 0 and data["completion_tokens"] > 0
        assert cost == pytest.approx((data["prompt_tokens"] * PRICE_IN + data["completion_tokens"] * PRICE_OUT) / 1e6,
                                     rel=1e-6)
    # judge_error_rate 0.1 over ~40 verdicts: generous bound (P(> 25%) is about 0.5%)
    assert wrong / len(sampled) <= 0.25, (wrong, len(sampled))
    # judge calls are not production traffic: no record, no production cost for them
    assert query(gw.store, "SELECT count(*) FROM records") == [(N_REQUESTS,)]

    reviews = query(gw.store, "SELECT record_id, request_id, scorer, reason FROM reviews")
    assert sorted(reviews) == sorted((record_of[rid], rid, "review", "rate") for rid in sampled)

    # 3. a human labels N_LABELS items through the API with the TRUE label
    posted: dict[str, str] = {}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for k in range(N_LABELS):
            response = client.get("/v1/review/next", params={"scorer": "review"})
            assert response.status_code == 200, response.text
            item = response.json()
            rid = item["request_id"]
            assert rid in sampled and rid not in posted
            assert item["pending"] == int(response.headers["x-sluicegate-review-pending"]) == len(sampled) - k
            assert item["record"]["answer"]["text"] == sent[rid]["answer"]  # the reviewer sees what was served
            assert {s["scorer"]: s["label"] for s in item["scores"]} == {
                "scope": "fail" if sent[rid]["bad"] else "pass", "helpful": judge_label[rid]}
            truth = "fail" if sent[rid]["bad"] else "pass"
            saved = client.post(f"/v1/review/{quote(item['id'])}",
                                json={"label": truth, "reviewer": "e2e",
                                      **({"taxonomy": "out_of_scope_answer"} if truth == "fail" else {})})
            assert saved.status_code == 200, saved.text
            assert saved.json()["status"] == "stored" and saved.json()["replaced"] is None
            posted[rid] = truth
        left = client.get("/v1/review/next")
        assert left.status_code == 200 and left.json()["pending"] == len(sampled) - N_LABELS
    humans = query(gw.store, "SELECT request_id, label, weight FROM scores WHERE kind = 'human'")
    assert sorted((r, lab) for r, lab, _ in humans) == sorted(posted.items())

    # the pairs calibration must use, from what the test itself knows: (judge label, posted label)
    pairs = [(judge_label[rid], posted[rid]) for rid in posted]
    store_pairs = query(gw.store, "SELECT j.label, h.label FROM scores j JOIN scores h ON h.record_id = j.record_id "
                                  "WHERE j.scorer = 'helpful' AND h.kind = 'human'")
    assert sorted(store_pairs) == sorted(pairs)
    cells = Counter(pairs)
    table = [[cells[("pass", "pass")], cells[("fail", "pass")]],   # rows: human pass, fail
             [cells[("pass", "fail")], cells[("fail", "fail")]]]   # columns: judge pass, fail
    kappa = float(cohens_kappa(table).kappa)
    agreement = sum(j == h for j, h in pairs) / len(pairs)
    human_fail = cells[("pass", "fail")] + cells[("fail", "fail")]
    human_pass = len(pairs) - human_fail
    sensitivity = cells[("fail", "fail")] / human_fail if human_fail else None
    specificity = cells[("pass", "pass")] / human_pass if human_pass else None
    trusted = len(pairs) >= 20 and not math.isnan(kappa) and kappa >= 0.6
    # with labels equal to the truth, disagreement is exactly the judge's flips on these items
    assert len(pairs) - sum(j == h for j, h in pairs) == sum(judge_label[r] != ("fail" if sent[r]["bad"] else "pass")
                                                             for r in posted)

    # 4. calibrate
    cal = orjson.loads(gw.cli("calibrate", "--json").stdout)["helpful"]
    assert cal["n_labels"] == N_LABELS
    assert cal["agreement"] == pytest.approx(agreement, abs=1e-12)
    if math.isnan(kappa):
        assert cal["kappa"] is None
    else:
        assert cal["kappa"] == pytest.approx(kappa, abs=1e-9)
        assert cal["kappa_low"] <= cal["kappa"] <= cal["kappa_high"]
    assert cal["confusion"] == {"pass": {"pass": table[0][0], "fail": table[0][1]},
                                "fail": {"pass": table[1][0], "fail": table[1][1]}}
    assert cal["positive"] == "fail"
    assert cal["sensitivity"] == pytest.approx(sensitivity) if sensitivity is not None else cal["sensitivity"] is None
    assert cal["specificity"] == pytest.approx(specificity) if specificity is not None else cal["specificity"] is None
    assert (cal["min_human_labels"], cal["min_kappa"]) == (20, 0.6)
    assert cal["trusted"] is trusted, cal

    # 5. report: per variant figures equal counts from what was sent, scored and labelled
    report = orjson.loads(gw.cli("report", "--json").stdout)
    scores = report["scores"]
    assert scores["warnings"] == []  # the judge is of another family than the variants
    section = scores["routes"][ROUTE]
    assert set(section) == {"prod", "candidate"}
    for variant, figures in section.items():
        mine = [rid for rid in sampled if sent[rid]["variant"] == variant]
        assert set(figures) == {"scope", "helpful", "review"}

        def expect(fig: dict, passed: list[bool], weights: list[float], kind: str) -> None:
            n, k = len(passed), sum(passed)
            assert fig["kind"] == kind and fig["n"] == n and fig["judge_errors"] == 0
            assert fig["labels"] == {label: c for label, c in
                                     (("pass", k), ("fail", n - k)) if c}
            assert fig["pass_rate"] == pytest.approx(k / n)
            low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
            assert fig["pass_rate_ci"] == pytest.approx([low, high], abs=1e-9)
            if weights:
                assert fig["pass_rate_reweighted"] == pytest.approx(
                    sum(w for w, p in zip(weights, passed) if p) / sum(weights))

        scope = figures["scope"]
        expect(scope, [not sent[r]["bad"] for r in mine], [weight[r] for r in mine], "rule")
        assert scope["cost_usd"] == 0 and scope["tokens"] == {"prompt": 0, "completion": 0}

        judge = figures["helpful"]
        expect(judge, [judge_label[r] == "pass" for r in mine], [weight[r] for r in mine], "llm_judge")
        costs = [(orjson.loads(by[(r, "helpful")][10]), by[(r, "helpful")][9]) for r in mine]
        assert judge["cost_usd"] == pytest.approx(sum(c for _, c in costs), abs=1e-6)
        assert judge["tokens"] == {"prompt": sum(d["prompt_tokens"] for d, _ in costs),
                                   "completion": sum(d["completion_tokens"] for d, _ in costs)}
        assert judge["trusted"] is cal["trusted"] and judge["human_labels"] == N_LABELS
        assert judge["kappa"] == cal["kappa"]
        if trusted and sensitivity is not None and specificity is not None:
            corrected = (judge["pass_rate"] + sensitivity - 1) / (sensitivity + specificity - 1)
            assert judge["pass_rate_corrected"] == pytest.approx(min(max(corrected, 0.0), 1.0))
        else:
            assert "pass_rate_corrected" not in judge

        labelled = [r for r in mine if r in posted]
        review = figures["review"]
        expect(review, [posted[r] == "pass" for r in labelled], [], "human")

    # the text report marks an untrusted judge
    text = gw.cli("report").stdout.decode()
    assert ("UNTRUSTED" in text) is (not trusted)


# --------------------------------------------------------------------------- a slow judge


def test_no_request_waits_for_a_judge_that_takes_5s(serve, mock_judge):
    gw = serve("inprocess")
    n = 10
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        ids = [ask(client, "slow-bot", i).headers["x-sluicegate-request-id"] for i in range(n)]
        # every answer is back; the judge has not given a single verdict yet
        served_at = time.time()
        scoring = gw.readyz()["scoring"]
    assert scoring["sampled"] == n and scoring["scored"] == 0 and scoring["errors"] == 0, scoring

    gw.flushed(n)
    rows = [orjson.loads(d) for (d,) in query(gw.store, "SELECT data FROM records WHERE route = 'slow-bot'")]
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    # a request that had waited for the judge would have lasted at least the judge's 5000 ms
    assert all(r["latency_ms"] < 5000 for r in rows), [r["latency_ms"] for r in rows]
    assert not query(gw.store, "SELECT id FROM scores")

    # the judge does answer, later: its first verdict is stored after every request had ended
    deadline = time.monotonic() + 20
    while not query(gw.store, "SELECT id FROM scores") and time.monotonic() < deadline:
        time.sleep(0.1)
    (created_at, label, judge_model), *_ = query(
        gw.store, "SELECT created_at, label, json_extract(data, '$.judge_model') FROM scores "
                  "WHERE scorer = 'slow_helpful' ORDER BY created_at")
    assert label in ("pass", "fail") and judge_model == "judge-mock-slow"
    assert created_at > max(r["ended_at"] for r in rows) and created_at > served_at
    asked = httpx.get(f"{mock_judge}/_mock/requests", params={"model": "judge-mock-slow"}).json()["data"]
    assert asked and created_at - min(a["time"] for a in asked) >= 4.5  # the verdict took the judge's 5 s
    assert gw.proc.stop() == 0  # SIGTERM with a judge call in flight: a clean exit
