"""The corpus builder's parts on small stores and by hand: classification, selection, capture
under a policy, the file format, `corpus show`."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.cli import main
from proxy.corpus import (
    Baseline,
    BuildOptions,
    Classifier,
    CorpusCounts,
    CorpusFilters,
    CorpusFormatError,
    CorpusHeader,
    CorpusItem,
    CorpusPolicy,
    CorpusSource,
    OutcomeValue,
    ScoreResult,
    StratumCounts,
    allocate,
    build_corpus,
    near_duplicate_key,
    normalize_text,
    public_url,
    read_corpus,
    read_header,
    render_summary,
    write_corpus,
)
from proxy.records import Outcome, Record, SQLiteStore

T0 = 1_700_000_000.0
ROUTE = "bot"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def words(i: int) -> str:
    """A text unique per i (letters only, so it survives near-duplicate normalization)."""
    out, n = [], i + 1
    while n:
        n, d = divmod(n, len(WORDS))
        out.append(WORDS[d])
    return "please help " + " ".join(out)


def rec(i: int, *, text: str | None = None, template: str | None = "faq@v1", tools: bool = False,
        capture: str = "full", guards: list[dict[str, Any]] | None = None, episode: str | None = None,
        route: str = ROUTE, served: bool = True, attempt: int = 1, reason: str = "primary",
        request_id: str | None = None) -> Record:
    body: dict[str, Any] = {"model": "m-prod", "messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": text or words(i)}]}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    return Record(id=f"r{i:05d}", request_id=request_id or f"q{i:05d}", attempt=attempt, attempt_reason=reason,
                  endpoint="chat.completions", route=route, variant="prod", provider="openai",
                  model_requested="m-prod", started_at=T0 + i, served=served, episode_id=episode,
                  template_ref=template, capture=capture, request=body, params={"temperature": 0},
                  response={"choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i}"},
                                         "finish_reason": "stop"}]},
                  status=200, latency_ms=100.0, cost_usd=0.001, model_served="m-prod-2024", guards=guards or [])


def guard(taxonomy: str, severity: str = "major") -> list[dict[str, Any]]:
    return [{"guard": "json_schema", "passed": False, "taxonomy": taxonomy, "severity": severity, "detail": "",
             "pointer": ""}]


def score(rid: str, scorer: str, label: str, *, kind: str = "llm_judge", taxonomy: str | None = None) -> dict[str, Any]:
    return {"row": "score", "id": f"{rid}:{scorer}", "record_id": rid, "request_id": "q" + rid[1:], "scorer": scorer,
            "kind": kind, "label": label, "score": None, "taxonomy": taxonomy, "confidence": None, "weight": 1.0,
            "cost_usd": None, "created_at": T0}


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "small.db")
    await s.open()
    yield s
    await s.close()


async def build(store: SQLiteStore, out: Path, **kw: Any) -> tuple[CorpusHeader, list[CorpusItem]]:
    options = BuildOptions(**{"route": ROUTE, "size": 100, "since": T0, **kw})
    await build_corpus(store, options, out)
    return read_corpus(out)


# --- classification ----------------------------------------------------------------------------


def test_failure_class_order_is_guard_then_score_then_outcome_then_ok() -> None:
    c = Classifier(CorpusPolicy(), boolean_metrics=["task_success", "user_corrected"])
    fail_judge = ("helpful", "llm_judge", "fail", "verbose")
    fail_rule = ("secrets", "rule", "fail", "dangerous_advice")
    assert c.failure_class(guard("schema_violation"), [fail_rule], [("task_success", 0.0)])[1] == \
        "guard:schema_violation"
    assert c.failure_class(guard("verbose", "minor") + guard("dangerous_advice", "critical"), [], [])[1] == \
        "guard:dangerous_advice"
    assert c.failure_class([{"guard": "max_chars", "passed": False}], [], [])[1] == "guard:max_chars"
    assert c.failure_class([{"guard": "max_chars", "passed": True, "taxonomy": "verbose"}], [], [])[1] == "ok"
    assert c.failure_class([], [fail_judge, fail_rule], [("user_corrected", 1.0)])[1] == "score:dangerous_advice"
    assert c.failure_class([], [("helpful", "llm_judge", "fail", None)], [])[1] == "score:fail"
    assert c.failure_class([], [("helpful", "llm_judge", "judge_error", None)], [])[1] == "ok"
    assert c.failure_class([], [], [("user_corrected", 1.0), ("task_success", 0.0)])[1] == "outcome:task_success"
    assert c.failure_class([], [], [("user_corrected", 0.0), ("task_success", 1.0)])[1] == "ok"


def test_metric_goals_and_pass_labels_come_from_the_policy_else_from_names_and_values() -> None:
    bare = Classifier(CorpusPolicy(), boolean_metrics=["user_corrected", "escalated", "resolved"])
    assert (bare.bad_value("user_corrected"), bare.bad_value("escalated"), bare.bad_value("resolved")) == (1.0, 1.0, 0.0)
    assert bare.bad_value("csat") is None  # not all 0/1: a float metric is never a failure
    assert bare.failure_class([], [("review", "human", "good", None)], [])[1] == "score:good"
    policy = CorpusPolicy(pass_labels={"review": "good"},
                          metrics={"resolved": ("boolean", "minimize"), "csat": ("float", "maximize")})
    declared = Classifier(policy, boolean_metrics=["resolved", "csat"])
    assert declared.bad_value("resolved") == 1.0 and declared.bad_value("csat") is None
    assert declared.failure_class([], [("review", "human", "good", None)], [])[1] == "ok"
    assert declared.failure_class([], [("review", "human", "bad", "off_topic")], [])[1] == "score:off_topic"


def test_near_duplicate_key_ignores_case_spacing_digits_and_punctuation_but_not_words_or_roles() -> None:
    def key(*messages: tuple[str, Any]) -> bytes | None:
        return near_duplicate_key({"messages": [{"role": r, "content": c} for r, c in messages]})

    assert normalize_text("Order #4711 — LATE!!\n  again?") == "order late again"
    base = key(("system", "Be brief."), ("user", "Where is order 123?"))
    assert base == key(("system", "be   BRIEF"), ("user", "where IS order #98765 !!"))
    assert base == key(("system", "Be brief."), ("user", "Where is order 123?"), ("assistant", "It shipped."))
    assert base != key(("system", "Be brief."), ("user", "Where is my order?"))
    assert base != key(("user", "Be brief."), ("system", "Where is order 123?"))
    assert key(("user", [{"type": "text", "text": "Hi there"}])) == key(("user", "hi there 1"))
    assert key(("user", "1234 !!")) is None and near_duplicate_key(None) is None


# --- selection ---------------------------------------------------------------------------------


def test_allocate_gives_failures_their_quota_and_routine_strata_the_rest_by_traffic() -> None:
    available = {"a|ok": 600, "b|ok": 300, "c|ok": 100, "a|guard:x": 80, "b|guard:x": 10, "a|score:y": 0}
    failures = ["a|guard:x", "b|guard:x", "a|score:y"]
    got = allocate(available, failures, size=100, per_class_quota=20, include_failures=True)
    assert (got["a|guard:x"], got["b|guard:x"], got["a|score:y"]) == (20, 10, 0)
    assert (got["a|ok"], got["b|ok"], got["c|ok"]) == (42, 21, 7)
    routine_only = allocate(available, failures, size=100, per_class_quota=20, include_failures=False)
    assert routine_only["a|guard:x"] == routine_only["b|guard:x"] == 0 and sum(routine_only.values()) == 100
    # failure quotas above the size: small classes whole, big ones share the rest evenly; nothing routine
    tight = allocate({"x|g:1": 3, "x|g:2": 50, "x|g:3": 50, "x|ok": 100}, ["x|g:1", "x|g:2", "x|g:3"], size=20,
                     per_class_quota=40, include_failures=True)
    assert tight == {"x|g:1": 3, "x|g:2": 9, "x|g:3": 8, "x|ok": 0}
    # too little routine traffic: the corpus is smaller than the size
    short = allocate({"x|ok": 5, "x|g:1": 2}, ["x|g:1"], size=50, per_class_quota=10, include_failures=True)
    assert short == {"x|ok": 5, "x|g:1": 2}


async def test_another_seed_draws_other_routine_items_with_the_same_make_up(store, tmp_path) -> None:
    rows: list[Any] = [rec(i) for i in range(400)]
    rows += [rec(400 + i, guards=guard("schema_violation")) for i in range(8)]
    await store.write_records(rows)
    h0, items0 = await build(store, tmp_path / "s0.jsonl", size=40, seed=0)
    h0b, items0b = await build(store, tmp_path / "s0b.jsonl", size=40, seed=0)
    h1, items1 = await build(store, tmp_path / "s1.jsonl", size=40, seed=1)
    assert [i.to_dict() for i in items0] == [i.to_dict() for i in items0b]
    assert h0.counts.to_dict() == h1.counts.to_dict()
    ok0 = {i.record_id for i in items0 if i.baseline.failure_class == "ok"}
    ok1 = {i.record_id for i in items1 if i.baseline.failure_class == "ok"}
    assert len(ok0) == len(ok1) == 32 and ok0 != ok1
    assert {i.record_id for i in items0 if i.baseline.failure_class != "ok"} == \
        {i.record_id for i in items1 if i.baseline.failure_class != "ok"} == {f"r{400 + i:05d}" for i in range(8)}


async def test_no_include_failures_builds_from_routine_traffic_only(store, tmp_path) -> None:
    await store.write_records([rec(i, guards=guard("verbose", "minor") if i % 4 == 0 else None) for i in range(40)])
    header, items = await build(store, tmp_path / "c.jsonl", size=100, include_failures=False)
    assert len(items) == 30 and all(i.baseline.failure_class == "ok" for i in items)
    assert header.counts.strata[f"{ROUTE}|faq@v1|no_tools|guard:verbose"].to_dict() == \
        {"available": 10, "selected": 0, "duplicates": 0, "near_duplicates": 0, "refs_only_skipped": 0}


async def test_a_duplicate_keeps_its_failing_copy_and_otherwise_the_newest(store, tmp_path) -> None:
    await store.write_records([
        rec(1, text="Where is my parcel?"), rec(2, text="Where is my parcel?", guards=guard("schema_violation")),
        rec(3, text="Where is my parcel?"),  # exact duplicates of 1 and 2: 2 fails, so 2 stays
        rec(4, text="Refund please"), rec(5, text="REFUND, please!! #5"),  # near duplicates, both ok: 5 stays
        rec(6, text="Cancel it", tools=True), rec(7, text="Cancel it"),  # other requests (tools differ)
    ])
    header, items = await build(store, tmp_path / "c.jsonl")
    assert sorted(i.record_id for i in items) == ["r00002", "r00005", "r00006", "r00007"]
    assert (header.counts.duplicates, header.counts.near_duplicates) == (2, 1)
    assert header.counts.strata[f"{ROUTE}|faq@v1|no_tools|ok"].duplicates == 2


async def test_latest_outcome_counts_and_an_episode_outcome_marks_each_of_its_requests(store, tmp_path) -> None:
    await store.write_records([
        rec(1), rec(2, episode="e1"), rec(3, episode="e1"), rec(4),
        Outcome(id="o1", metric="user_corrected", value=1.0, level="inference", received_at=T0 + 10, request_id="q00001"),
        Outcome(id="o2", metric="user_corrected", value=0.0, level="inference", received_at=T0 + 20, request_id="q00001"),
        Outcome(id="o3", metric="task_success", value=0.0, level="episode", received_at=T0 + 30, episode_id="e1"),
        Outcome(id="o4", metric="user_corrected", value=1.0, level="inference", received_at=T0 + 40, request_id="q00004"),
        Outcome(id="o5", metric="csat", value=4.5, level="inference", received_at=T0 + 40, request_id="q00004"),
    ])
    _, items = await build(store, tmp_path / "c.jsonl")
    by_id = {i.record_id: i for i in items}
    assert {rid: i.baseline.failure_class for rid, i in by_id.items()} == {
        "r00001": "ok", "r00002": "outcome:task_success", "r00003": "outcome:task_success",
        "r00004": "outcome:user_corrected"}
    assert by_id["r00001"].baseline.outcomes == {"user_corrected": OutcomeValue(0.0, "inference", T0 + 20)}
    assert by_id["r00002"].baseline.outcomes == {"task_success": OutcomeValue(0.0, "episode", T0 + 30)}
    assert set(by_id["r00004"].baseline.outcomes) == {"csat", "user_corrected"}


async def test_scores_are_the_baseline_and_a_failing_one_sets_the_class(store, tmp_path) -> None:
    await store.write_records([rec(1), rec(2), score("r00001", "helpful", "pass"),
                               score("r00002", "helpful", "fail", taxonomy="out_of_scope_answer"),
                               score("r00002", "secrets", "pass", kind="rule")])
    _, items = await build(store, tmp_path / "c.jsonl")
    by_id = {i.record_id: i for i in items}
    assert by_id["r00001"].baseline.failure_class == "ok"
    assert by_id["r00002"].stratum == f"{ROUTE}|faq@v1|no_tools|score:out_of_scope_answer"
    assert by_id["r00002"].baseline.scores == [
        ScoreResult("helpful", "llm_judge", "fail", None, "out_of_scope_answer"),
        ScoreResult("secrets", "rule", "pass", None, None)]


# --- capture under a policy --------------------------------------------------------------------

POLICY = """\
providers:
  mock: {{kind: openai, base_url: 'http://127.0.0.1:9/v1'}}
models:
  prod: {{provider: mock, model: m-prod}}
routes:
  bot: {{model: prod, capture: {capture}}}
metrics:
  user_corrected: {{type: boolean, level: inference, goal: minimize}}
"""


def _fill_sync(path: Path, rows: list[Any]) -> None:
    async def run() -> None:
        s = SQLiteStore(path)
        await s.open()
        try:
            await s.write_records(rows)
        finally:
            await s.close()

    asyncio.run(run())


@pytest.mark.parametrize("capture", ["full", "redacted", "refs_only"])
def test_the_routes_capture_mode_now_limits_what_older_full_records_give(tmp_path, capture, capsys) -> None:
    _fill_sync(tmp_path / "small.db", [rec(i, text=f"{words(i)} mail me at ana{i}@example.org") for i in range(10)])
    (tmp_path / "policy.yaml").write_text(POLICY.format(capture=capture))
    out = tmp_path / "c.jsonl"
    code = main(["corpus", "build", "--store", f"sqlite:///{tmp_path}/small.db", "--route", ROUTE, "--since",
                 str(T0), "--size", "50", "--policy", str(tmp_path / "policy.yaml"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    header, items = read_corpus(out)
    raw = out.read_bytes()
    assert header.source.policy_version
    if capture == "full":
        assert len(items) == 10 and b"@example.org" in raw
    elif capture == "redacted":
        assert len(items) == 10 and b"@example.org" not in raw
        assert all(i.capture == "redacted" and "[EMAIL]" in i.request["messages"][1]["content"] for i in items)
    else:
        assert items == [] and header.counts.refs_only_skipped == 10 and b"please help" not in raw


def test_build_refuses_a_route_the_policy_does_not_have(tmp_path, capsys) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY.format(capture="full"))
    code = main(["corpus", "build", "--store", f"sqlite:///{tmp_path}/small.db", "--route", "nope", "--size", "5",
                 "--policy", str(tmp_path / "policy.yaml")])
    assert code == 2 and "--route nope: not a route" in capsys.readouterr().err


async def test_refs_only_records_are_counted_never_written(store, tmp_path) -> None:
    await store.write_records([rec(1, capture="refs_only", text="secret plan alpha"), rec(2, capture="redacted"),
                               rec(3, capture="refs_only", guards=guard("schema_violation"))])
    header, items = await build(store, tmp_path / "c.jsonl")
    assert [i.record_id for i in items] == ["r00002"]
    assert b"secret plan" not in (tmp_path / "c.jsonl").read_bytes()
    assert header.counts.refs_only_skipped == 2
    assert header.counts.strata[f"{ROUTE}|faq@v1|no_tools|guard:schema_violation"].refs_only_skipped == 1


# --- the file ----------------------------------------------------------------------------------


def _header(**counts: Any) -> CorpusHeader:
    return CorpusHeader(source=CorpusSource(store="sqlite:///x.db", built_at=T0),
                        filters=CorpusFilters(route=ROUTE, since=T0, until=None, size=10, per_class_quota=5,
                                              include_failures=True, seed=0),
                        counts=CorpusCounts(**counts))


def _item(i: int, stratum: str = f"{ROUTE}|-|no_tools|ok") -> CorpusItem:
    return CorpusItem(record_id=f"r{i}", request_id=f"q{i}", route=ROUTE, variant="prod", model="m", endpoint=
                      "chat.completions", request={"messages": [{"role": "user", "content": "hi"}]}, stratum=stratum,
                      baseline=Baseline(response={"choices": []}, scores=[ScoreResult("s", "rule", "pass")],
                                        outcomes={"ok": OutcomeValue(1.0, "inference", T0)}))


def test_written_corpus_reads_back_and_its_header_counts_what_was_written(tmp_path) -> None:
    header = _header(selected=99, strata={f"{ROUTE}|-|no_tools|ok": StratumCounts(available=7, selected=99)})
    items = [_item(1), _item(2), _item(3, f"{ROUTE}|-|tools|guard:x")]
    write_corpus(tmp_path / "c.jsonl", header, items)
    back_header, back_items = read_corpus(tmp_path / "c.jsonl")
    assert [i.to_dict() for i in back_items] == [i.to_dict() for i in items]
    assert back_header.counts.selected == 3
    assert {k: (s.available, s.selected) for k, s in back_header.counts.strata.items()} == {
        f"{ROUTE}|-|no_tools|ok": (7, 2), f"{ROUTE}|-|tools|guard:x": (0, 1)}
    buffer = io.BytesIO()
    write_corpus(buffer, header, items)
    assert buffer.getvalue() == (tmp_path / "c.jsonl").read_bytes()
    # unknown keys (a newer writer's) are ignored
    assert CorpusItem.from_dict({**items[0].to_dict(), "later_field": 1}).to_dict() == items[0].to_dict()


def test_reading_refuses_what_is_not_a_version_1_corpus_naming_file_and_line(tmp_path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(orjson.dumps({**_header().to_dict(), "version": 2}) + b"\n")
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl:1: corpus version 2"):
        read_header(path)
    path.write_bytes(b'{"kind": "sluicegate.corpus", "version": 1, "filters": {"route": "bot"}}\n')
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl:1: not a complete corpus header"):
        read_header(path)
    path.write_bytes(b'{"kind": "something else"}\n')
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl:1: not a sluicegate corpus"):
        read_corpus(path)
    path.write_bytes(orjson.dumps(_header().to_dict()) + b"\n" + orjson.dumps(_item(1).to_dict()) + b"\n[1]\n")
    with pytest.raises(CorpusFormatError, match=r"c\.jsonl:3: not a corpus item"):
        read_corpus(path)


def test_show_prints_strata_failures_first_and_warns_when_lines_and_header_disagree(tmp_path, capsys) -> None:
    header = _header(records_scanned=20, replayable=18, refs_only_skipped=2, selected=3, strata={
        f"{ROUTE}|-|no_tools|ok": StratumCounts(available=15, selected=2),
        f"{ROUTE}|-|tools|guard:x": StratumCounts(available=3, selected=1, refs_only_skipped=2)})
    text = render_summary(header, name="c.jsonl", items_in_file=3)
    rows = text.splitlines()
    assert rows[0] == "c.jsonl: sluicegate.corpus v1, 3 items" and "WARNING" not in text
    table = rows[rows.index(next(r for r in rows if r.startswith("stratum"))) + 1:]
    assert [r.split()[0] for r in table] == [f"{ROUTE}|-|tools|guard:x", f"{ROUTE}|-|no_tools|ok", "total"]
    assert table[-1].split()[1:] == ["18", "3", "0", "0", "2"]
    assert "1 from failure strata, 2 routine" in text
    path = tmp_path / "c.jsonl"
    path.write_bytes(orjson.dumps(header.to_dict()) + b"\n" + orjson.dumps(_item(1).to_dict()) + b"\n")
    assert main(["corpus", "show", str(path)]) == 0
    assert "WARNING  the file has 1 item lines, the header says 3" in capsys.readouterr().out
    assert main(["corpus", "show", str(tmp_path / "missing.jsonl")]) == 1


def test_public_url_removes_a_password() -> None:
    assert public_url("postgresql://app:s3cret@db.internal:5432/sluice") == "postgresql://app@db.internal:5432/sluice"
    assert public_url("sqlite:////var/lib/s.db") == "sqlite:////var/lib/s.db"
