"""Replay against the in-process mock upstream: what is sent, and what the summary finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

from proxy.config import load_policy
from proxy.mock_upstream import MockModel
from proxy.replay import ReplayOptions, render_summary, run_replay

from .conftest import POLICY_YAML, make_corpus, mock_app, record_id, transports

ROOT = Path(__file__).resolve().parents[2]


async def test_a_candidate_worse_on_tool_calls_regresses_exactly_on_the_tool_items_by_class(
        tmp_path: Path, policy: Any) -> None:
    kinds = ["plain"] * 12 + ["tools"] * 8 + ["json"] * 5
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, kinds)
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate"), transports=transports(mock_app()))
    s = run.summary
    tool_ids = {record_id(i) for i, k in enumerate(kinds) if k == "tools"}
    assert {r.record_id for r in run.results if r.kind == "regression"} == tool_ids
    assert s["regressions_by_class"] == {"invented_tool_param": 8}
    assert s["regressions_by_stratum"] == {"bot|-|tools|ok": 8}
    counts = {k: s["paired"][k] for k in ("regressions", "improvements", "both_pass", "both_fail")}
    assert counts == {"regressions": 8, "improvements": 0, "both_pass": 17, "both_fail": 0}
    assert s["improvements_by_class"] == {} and s["new_critical"]["count"] == 0 and s["errors"]["count"] == 0
    assert s["pass_rate"]["baseline"]["passes"] == 25 and s["pass_rate"]["candidate"]["passes"] == 17
    assert all(w["classes"] == ["invented_tool_param"] and w["severity"] == "major" for w in s["worst"])
    assert s["drift"]["replayed"]["candidate"]["pairs"] == [
        {"model_served": "gpt-cand-2025-01-01", "system_fingerprint": "fp_cand", "items": 25}]
    assert "invented_tool_param 8" in render_summary(s)


async def test_the_candidate_gets_the_recorded_request_with_its_model_and_its_pinned_params_over_the_original(
        tmp_path: Path, policy: Any) -> None:
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain", "tools"], stream=[1])
    app = mock_app()
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="clean"), transports=transports(app))
    bodies = [e["body"] for e in app.state.mock.requests]
    assert len(bodies) == 2
    for body in bodies:
        # the original pinned params stay (temperature, seed), the candidate's own pin (max_tokens) is added,
        # its pinned model replaces the original's, and the replay is never streamed
        assert body["model"] == "gpt-clean" and body["temperature"] == 0 and body["seed"] == 7
        assert body["max_tokens"] == 64 and "stream" not in body and "stream_options" not in body
    assert any("tools" in b for b in bodies)
    assert any("replayed non-streaming" in note for note in run.summary["notes"])


async def test_a_model_baseline_is_sent_the_same_items_and_checked_the_same_way(tmp_path: Path, policy: Any) -> None:
    kinds = ["plain"] * 3 + ["tools"] * 2
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, kinds)
    app = mock_app()
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate", baseline="clean"),
                           transports=transports(app))
    models = sorted(e["body"]["model"] for e in app.state.mock.requests)
    assert models == ["gpt-cand"] * 5 + ["gpt-clean"] * 5
    assert run.summary["regressions_by_class"] == {"invented_tool_param": 2}
    assert all(r.baseline.source == "clean" and r.baseline.scores for r in run.results)
    assert set(run.summary["drift"]["replayed"]) == {"candidate", "clean"}


@pytest.mark.parametrize("tools, fixed", [(6, 2), (30, 4)], ids=["exact", "chi2"])
async def test_mcnemar_and_wilson_figures_equal_statsmodels(tmp_path: Path, policy: Any, tools: int,
                                                            fixed: int) -> None:
    # regressions: tool items (the candidate invents params); improvements: JSON items whose recorded answer
    # broke the schema and the candidate's does not
    kinds = ["plain"] * 4 + ["tools"] * tools + ["json"] * fixed
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, kinds, baseline_models={"json": "gpt-prod-badjson"})
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate"), transports=transports(mock_app()))
    s = run.summary
    paired = s["paired"]
    assert (paired["regressions"], paired["improvements"]) == (tools, fixed)
    assert s["improvements_by_class"] == {"schema_violation": fixed}
    table = [[paired["both_pass"], paired["regressions"]], [paired["improvements"], paired["both_fail"]]]
    exact = tools + fixed < 25
    expected = sm_mcnemar(table, exact=exact, correction=True)
    assert paired["test"] == ("mcnemar_exact" if exact else "mcnemar_chi2")
    assert paired["statistic"] == pytest.approx(expected.statistic, abs=1e-9)
    assert paired["p_value"] == pytest.approx(expected.pvalue, abs=1e-9)
    for side in ("baseline", "candidate"):
        rate = s["pass_rate"][side]
        low, high = proportion_confint(rate["passes"], rate["n"], alpha=0.05, method="wilson")
        assert rate["ci95"] == pytest.approx([low, high], abs=1e-9)


async def test_judge_scores_both_sides_and_its_cost_is_shown_apart_from_the_models(tmp_path: Path) -> None:
    text = POLICY_YAML.replace("scorers: [no_secrets]", "scorers: [no_secrets, helpful]").replace(
        "scorers:\n  no_secrets:", "scorers:\n  helpful: {kind: llm_judge, model: judge, rubric: rubric.md}\n  no_secrets:")
    text = text.replace("models:\n", "models:\n  judge: {provider: mock, model: judge-model, "
                                      "price: {input_per_mtok: 1, output_per_mtok: 2}}\n")
    (tmp_path / "policy.yaml").write_text(text)
    (tmp_path / "rubric.md").write_text((ROOT / "policies" / "rubrics" / "helpfulness.md").read_text())
    policy = load_policy(tmp_path / "policy.yaml")
    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 3 + ["tools"] * 2)
    app = mock_app(**{"judge-model": MockModel(judge_error_rate=0.0)})
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate", judge=True),
                           transports=transports(app))
    s = run.summary
    judged = [e for e in app.state.mock.requests if e["body"]["model"] == "judge-model"]
    assert len(judged) == 10  # both answers of every item
    assert s["judge"]["calls"] == 10 and s["judge"]["errors"] == 0
    costs = [sc.cost_usd for r in run.results for side in (r.baseline, r.candidate) for sc in side.scores
             if sc.kind == "llm_judge"]
    assert all(c is not None and c > 0 for c in costs) and s["judge"]["cost_usd"] == pytest.approx(sum(costs))
    assert s["cost_usd"]["baseline"]["total"] == pytest.approx(0.005)  # the models' cost, without the judge's
    # the judge sees the invented parameter too (the mock judge knows its own defect marker)
    for r in run.results:
        verdicts = {sc.label for sc in r.candidate.scores if sc.kind == "llm_judge"}
        assert verdicts == ({"fail"} if r.stratum == "bot|-|tools|ok" else {"pass"})
    assert s["regressions_by_class"] == {"invented_tool_param": 2}


async def test_a_corpus_built_from_gateway_records_replays_with_the_regressions_on_its_tool_stratum(
        tmp_path: Path, policy: Any) -> None:
    """Gateway traffic -> store -> `build_corpus` -> replay: the corpus builder's file is what replay reads."""
    import httpx

    from proxy.config import parse_policy
    from proxy.corpus import BuildOptions, CorpusPolicy, build_corpus
    from proxy.records import open_store
    from proxy.server import Settings, create_app

    from .conftest import TOOLS

    store_url = f"sqlite:///{tmp_path}/s.db"
    served = parse_policy(POLICY_YAML.replace("split: {prod: 90, candidate: 10}", "model: prod"))
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    gateway = create_app(Settings(policy=served, store_url=store_url, transports=transports(mock_app())))
    async with gateway.router.lifespan_context(gateway):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://localhost") as client:
            for i, word in enumerate(words):
                body: dict[str, Any] = {"model": "bot", "messages": [{"role": "user", "content": f"tell me {word}"}]}
                if i % 2:
                    body["tools"] = TOOLS
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        await gateway.state.gateway.recorder.flush()
    store = open_store(store_url)
    await store.open()
    try:
        corpus = tmp_path / "built.jsonl"
        header = await build_corpus(store, BuildOptions(route="bot", size=100, policy=CorpusPolicy.from_policy(served)),
                                    corpus)
    finally:
        await store.close()
    assert header.counts.selected == 10
    run = await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate"), transports=transports(mock_app()))
    assert run.summary["results"] == 10
    assert run.summary["regressions_by_class"] == {"invented_tool_param": 5}
    assert run.summary["regressions_by_stratum"] == {"bot|-|tools|ok": 5}
    assert run.summary["pass_rate"]["baseline"]["passes"] == 10


async def test_a_cached_baseline_is_sent_once_and_reruns_compare_with_the_same_answers(tmp_path: Path,
                                                                                       policy: Any) -> None:
    from proxy.replay._cache import baseline_cache

    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"] * 3 + ["tools"] * 2)
    store_url = f"sqlite:///{tmp_path}/cache.db"
    app = mock_app()
    runs = []
    for n in range(2):
        async with baseline_cache(store_url) as cache:
            runs.append(await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate", baseline="clean",
                                                               out=tmp_path / f"r{n}.jsonl", cache=cache),
                                         transports=transports(app)))
    models = [e["body"]["model"] for e in app.state.mock.requests]
    assert models.count("gpt-clean") == 5 and models.count("gpt-cand") == 10  # the baseline was asked once
    first, second = ([r.baseline.excerpt for r in run.results] for run in runs)
    assert first == second
    assert not any(r.baseline.cache_hit for r in runs[0].results)
    assert all(r.baseline.cache_hit for r in runs[1].results)
    assert runs[1].summary["regressions_by_class"] == runs[0].summary["regressions_by_class"]


async def test_cache_needs_a_model_baseline(tmp_path: Path, policy: Any) -> None:
    from proxy.replay import ReplayUsageError

    corpus = tmp_path / "c.jsonl"
    await make_corpus(corpus, ["plain"])
    with pytest.raises(ReplayUsageError, match="--baseline MODEL"):
        await run_replay(policy, ReplayOptions(corpus=corpus, variant="candidate", cache=object()))
