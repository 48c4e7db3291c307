"""The report engine on a store filled by the test; each figure is recomputed here independently."""

from __future__ import annotations

import random

import pytest

from proxy.records import SQLiteStore
from proxy.records._model import Outcome, Record
from proxy.reports import build_report, holm, verdict, wilson_interval

T0 = 1_700_000_000.0
METRICS = {"ok": {"type": "boolean", "level": "inference", "goal": "maximize"},
           "resolved": {"type": "boolean", "level": "episode", "goal": "maximize"},
           "score": {"type": "float", "level": "inference", "goal": "maximize"}}


def rec(i: int, req: str, variant: str, *, attempt: int = 1, reason: str = "primary", served: bool = True,
        episode: str | None = None, t: float = T0, latency: float = 100.0, guards=None, model=None,
        fp: str = "fp1", cost: float = 0.001) -> Record:
    return Record(id=f"att{i}", request_id=req, attempt=attempt, attempt_reason=reason, endpoint="chat.completions",
                  route="bot", variant=variant, provider="mock", model_requested=variant, started_at=t,
                  served=served, episode_id=episode, latency_ms=latency, ttft_ms=latency / 2,
                  model_served=model or f"m-{variant}", system_fingerprint=fp, cost_usd=cost,
                  usage={"prompt_tokens": 10, "completion_tokens": 5}, guards=guards or [],
                  status=200 if served else 502, outcome="ok" if served else "upstream_error")


def out(oid: str, metric: str, value: float, *, req=None, ep=None, at: float = T0 + 10) -> Outcome:
    return Outcome(id=oid, metric=metric, value=value, level="episode" if ep else "inference", received_at=at,
                   request_id=req, episode_id=ep)


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "r.db")
    await s.open()
    yield s
    await s.close()


def arm(report, variant, route="bot"):
    r, = [x for x in report["routes"] if x["route"] == route]
    a, = [x for x in r["arms"] if x["variant"] == variant]
    return a


async def fill(store, seed=1):
    """Two arms A (control) and B; episodes of 3 requests; truth kept in `truth`."""
    rng = random.Random(seed)
    rows, outs = [], []
    truth = {v: {"requests": 0, "ok_n": 0, "ok_s": 0, "lat": [], "guard_req": 0, "classes": {}, "episodes": 0,
                 "ep_n": 0, "ep_s": 0, "cov": 0, "fallbacks": 0, "errors": 0, "score": []} for v in "AB"}
    i = 0
    for e in range(120):
        v = "AB"[e % 2]
        ep = f"ep{e}"
        truth[v]["episodes"] += 1
        for k in range(3):
            i += 1
            req = f"r{i}"
            t = T0 + i
            truth[v]["requests"] += 1
            lat = rng.uniform(50, 500)
            fb = rng.random() < 0.1
            err = not fb and rng.random() < 0.05
            g = []
            if rng.random() < 0.2:
                cls = rng.choice(["refusal", "pii"])
                g = [{"guard": cls, "passed": False, "taxonomy": cls, "severity": "major", "detail": "", "pointer": ""}]
                truth[v]["guard_req"] += 1
                truth[v]["classes"][cls] = truth[v]["classes"].get(cls, 0) + 1
            rows.append(rec(i, req, v, served=not fb and not err, episode=ep, t=t, latency=lat,
                            guards=g if not fb else []))
            if fb:  # fallback to the other variant: stays in arm v (ITT)
                truth[v]["fallbacks"] += 1
                i += 1
                rows.append(rec(i, req, "BA"["AB".index(v)], attempt=2, reason="fallback", episode=ep, t=t + 1,
                                latency=lat, guards=g))
            if err:
                truth[v]["errors"] += 1
            else:
                truth[v]["lat"].append(lat)
            if rng.random() < 0.7:
                truth[v]["cov"] += 1
                first = float(rng.random() < 0.5)
                final = float(rng.random() < (0.5 if v == "A" else 0.7))
                outs.append(out(f"o{i}a", "ok", first, req=req, at=T0 + 100))
                outs.append(out(f"o{i}b", "ok", final, req=req, at=T0 + 200))  # correction: latest wins
                truth[v]["ok_n"] += 1
                truth[v]["ok_s"] += int(final)
                sc = rng.uniform(0, 10)
                outs.append(out(f"o{i}s", "score", sc, req=req))
                truth[v]["score"].append(sc)
        if rng.random() < 0.8:
            val = float(rng.random() < 0.6)
            outs.append(out(f"e{e}", "resolved", val, ep=ep))
            truth[v]["ep_n"] += 1
            truth[v]["ep_s"] += int(val)
    # a mixed episode: one request in A, one in B, with an episode outcome — excluded
    i += 1
    rows.append(rec(i, f"r{i}", "A", episode="mixed", t=T0 + i))
    truth["A"]["requests"] += 1
    truth["A"]["lat"].append(100.0)
    i += 1
    rows.append(rec(i, f"r{i}", "B", episode="mixed", t=T0 + i))
    truth["B"]["requests"] += 1
    truth["B"]["lat"].append(100.0)
    outs.append(out("emixed", "resolved", 1.0, ep="mixed"))
    await store.write_records(rows + outs)
    return truth


def nearest_rank(values, p):
    s = sorted(values)
    return s[max(1, -(-len(s) * p // 100)) - 1]


async def test_counts_rates_coverage_itt_and_latest_outcome(store):
    truth = await fill(store)
    report = await build_report(store, metrics=METRICS, controls={"bot": "A"})
    r = report["routes"][0]
    assert r["control"] == "A" and r["episodes_mixed"] == 1 and r["episodes_mixed_outcomes"] == 1
    assert any("more than one variant" in w for w in r["warnings"])
    for v in "AB":
        a, t = arm(report, v), truth[v]
        assert a["requests"] == t["requests"]
        assert a["episodes"] == t["episodes"]  # the mixed one is excluded
        assert a["fallbacks"] == t["fallbacks"] and a["errors"] == t["errors"]
        m = a["metrics"]["ok"]
        assert (m["n"], m["successes"]) == (t["ok_n"], t["ok_s"])
        assert m["interval"] == list(wilson_interval(t["ok_s"], t["ok_n"]))
        assert a["coverage"]["requests"]["with_outcome"] == t["cov"]
        assert a["coverage"]["requests"]["pct"] == pytest.approx(100 * t["cov"] / t["requests"])
        e = a["metrics"]["resolved"]
        assert (e["n"], e["successes"]) == (t["ep_n"], t["ep_s"])
        assert a["coverage"]["episodes"]["with_outcome"] == t["ep_n"]
        assert a["metrics"]["score"]["n"] == len(t["score"])
        assert a["metrics"]["score"]["mean"] == pytest.approx(sum(t["score"]) / len(t["score"]))
        assert a["guards"]["requests_failed"] == t["guard_req"]
        assert a["guards"]["rate"] == pytest.approx(t["guard_req"] / t["requests"])
        assert a["guards"]["by_class"] == t["classes"]
        for p in (50, 95, 99):
            assert a["latency_ms"][f"p{p}"] == pytest.approx(nearest_rank(t["lat"], p))
        assert a["latency_ms"]["n"] == len(t["lat"])


async def test_verdicts_holm_adjusted(store):
    truth = await fill(store)
    report = await build_report(store, metrics=METRICS, controls={"bot": "A"})
    r = report["routes"][0]
    assert r["multiple_comparisons"] == "holm"
    comps = {c["metric"]: c for c in r["comparisons"]}
    assert set(comps) == {"ok", "resolved", "score"}
    c = comps["ok"]
    v = verdict(truth["A"]["ok_s"], truth["A"]["ok_n"], truth["B"]["ok_s"], truth["B"]["ok_n"])
    assert c["sequential_p"] == pytest.approx(v.sequential_p) and c["p_value"] == pytest.approx(v.p_value)
    assert c["diff"] == pytest.approx(v.diff) and c["interval"] == pytest.approx(list(v.interval))
    adjusted = holm([comps[m]["sequential_p"] for m in comps])
    assert [comps[m]["sequential_p_adjusted"] for m in comps] == pytest.approx(adjusted)
    for comp in comps.values():
        assert comp["verdict"] and comp["meaning"] and comp["reason"]
        if comp["sequential_p_adjusted"] >= 0.05:
            assert comp["code"] in ("inconclusive", "no_difference")


async def test_drift_srm_and_filters(store):
    rows = [rec(i, f"r{i}", "A", t=T0 + i, fp="fp1" if i < 50 else "fp2") for i in range(100)]
    rows += [rec(1000 + i, f"q{i}", "B", t=T0 + i) for i in range(20)]
    await store.write_records(rows)
    report = await build_report(store, weights={"bot": {"A": 50, "B": 50}})
    a = arm(report, "A")
    assert a["drift"]["drifted"] and len(a["drift"]["pairs"]) == 2
    assert a["drift"]["changes"][0]["at"] == T0 + 50
    assert not arm(report, "B")["drift"]["drifted"]
    srm = report["routes"][0]["srm"]
    assert srm["warning"] and srm["observed"] == {"A": 100, "B": 20} and srm["p"] < 0.001
    window = await build_report(store, since=T0 + 10, until=T0 + 30)
    assert arm(window, "A")["requests"] == 20 and arm(window, "B")["requests"] == 10
    assert (await build_report(store, route="nope"))["routes"] == []


async def test_inferred_metrics_without_policy(store):
    await store.write_records([rec(1, "r1", "A"), rec(2, "r2", "B"), out("x", "ok", 1.0, req="r1"),
                               out("y", "lat", 3.5, req="r2")])
    report = await build_report(store)
    assert report["metrics"]["ok"]["type"] == "boolean" and report["metrics"]["lat"]["type"] == "float"
    assert report["metrics"]["ok"]["source"] == "inferred"
    assert report["routes"][0]["control"] == "A"
