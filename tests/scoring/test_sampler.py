"""The sampler: rates, rule precedence, determinism, budget scaling, late decisions, reweighting."""

from __future__ import annotations

import math
import random
import subprocess
from collections import Counter
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.config._models import Sampling
from proxy.records import Record
from proxy.scoring._sampler import SampleDecision, SampleFacts, Sampler, draw, facts_from_record, reweight

N = 100_000


def sampling(default: float = 0.1, *rules: dict[str, Any]) -> Sampling:
    return Sampling.model_validate({"default": default, "rules": list(rules)})


def facts(request_id: str = "r1", **kw: Any) -> SampleFacts:
    return SampleFacts(request_id=request_id, route=kw.pop("route", "chat"), variant=kw.pop("variant", "prod"), **kw)


def ids(n: int, prefix: str = "req-") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def within_4_sigma(hits: int, n: int, p: float) -> bool:
    return abs(hits / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------- draw


def test_draw_is_uniform_in_unit_interval() -> None:
    values = [draw(i) for i in ids(N)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert abs(sum(values) / N - 0.5) < 4 * math.sqrt(1 / 12 / N)
    # each tenth of [0, 1) gets its share
    tenths = Counter(int(v * 10) for v in values)
    assert all(within_4_sigma(tenths[k], N, 0.1) for k in range(10))


def test_draw_is_reproducible_and_salted() -> None:
    assert draw("abc") == draw("abc")
    assert draw("abc") != draw("abd")
    assert draw("abc", salt="other") != draw("abc")
    # no separator ambiguity between salt and id
    assert draw("bc", salt="a") != draw("c", salt="ab")


def test_draw_is_the_same_in_another_process() -> None:
    code = "from proxy.scoring._sampler import draw; print(repr(draw('req-42', 'x')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert float(out.stdout) == draw("req-42", "x")


# ---------------------------------------------------------------- rates


@pytest.mark.parametrize(("rate", "n"), [(0.1, N), (0.5, 10_000)])
def test_default_rate_holds_over_many_ids(rate: float, n: int) -> None:
    sampler = Sampler(sampling(rate))
    decisions = [sampler.decide(facts(i)) for i in ids(n)]
    hits = sum(d.sampled for d in decisions)
    assert within_4_sigma(hits, n, rate)
    assert all(d.rule == "default" and d.rate == rate for d in decisions)
    assert all(d.weight == (1 / rate if d.sampled else 0.0) for d in decisions)


def test_no_sampling_config_never_samples() -> None:
    sampler = Sampler(None)
    decisions = [sampler.decide(facts(i, tags=("sensitive",), guard_failed=True)) for i in ids(2_000)]
    assert not any(d.sampled for d in decisions)
    assert {(d.rate, d.weight, d.rule) for d in decisions} == {(0.0, 0.0, "default")}


def test_zero_and_full_rates_are_exact() -> None:
    zero = Sampler(sampling(0.0))
    full = Sampler(sampling(1.0))
    assert not any(zero.decide(facts(i)).sampled for i in ids(5_000))
    assert all(full.decide(facts(i)).sampled for i in ids(5_000))


def test_rule_rate_holds_for_matching_traffic() -> None:
    sampler = Sampler(sampling(0.1, {"variant": "cand", "rate": 0.5}))
    hits = sum(sampler.decide(facts(i, variant="cand")).sampled for i in ids(10_000))
    assert within_4_sigma(hits, 10_000, 0.5)


# ---------------------------------------------------------------- precedence and conditions


def test_first_matching_rule_wins_over_a_later_more_generous_one() -> None:
    sampler = Sampler(sampling(0.1, {"tag": "bulk", "rate": 0.0}, {"tag": "bulk", "rate": 1.0},
                              {"guard_failed": True, "rate": 1.0}))
    for i in ids(1_000):
        d = sampler.decide(facts(i, tags=("bulk",), guard_failed=True))
        assert (d.sampled, d.rule, d.rate) == (False, "rules[0]", 0.0)


def test_a_rule_needs_all_its_conditions() -> None:
    sampler = Sampler(sampling(0.0, {"tag": "beta", "variant": "cand", "rate": 1.0}))
    assert sampler.decide(facts(tags=("beta",), variant="cand")).rule == "rules[0]"
    assert sampler.decide(facts(tags=("beta",), variant="prod")).rule == "default"
    assert sampler.decide(facts(tags=(), variant="cand")).rule == "default"


def test_skips_non_matching_rules_to_a_later_match() -> None:
    sampler = Sampler(sampling(0.0, {"tag": "sensitive", "rate": 1.0}, {"guard_failed": True, "rate": 0.7}))
    d = sampler.decide(facts(guard_failed=True))
    assert (d.rule, d.rate) == ("rules[1]", 0.7)
    assert sampler.decide(facts(guard_failed=False)).rule == "default"


@pytest.mark.parametrize(
    ("rule", "matching", "other"),
    [
        ({"tag": "sensitive"}, {"tags": ("a", "sensitive")}, {"tags": ("a",)}),
        ({"guard_failed": True}, {"guard_failed": True}, {"guard_failed": False}),
        ({"guard_failed": False}, {"guard_failed": False}, {"guard_failed": True}),
        ({"feedback": "corrected"}, {"feedback": frozenset({"corrected"})}, {"feedback": frozenset({"thumbs_down"})}),
        ({"variant": "cand"}, {"variant": "cand"}, {"variant": "prod"}),
        ({"metadata": {"tier": "gold", "lang": "de"}}, {"metadata": {"tier": "gold", "lang": "de", "x": "y"}},
         {"metadata": {"tier": "gold", "lang": "en"}}),
        ({"metadata": {"tier": "gold"}}, {"metadata": {"tier": "gold"}}, {"metadata": {}}),
        ({"taxonomy": "pii_leak"}, {"taxonomy": frozenset({"pii_leak", "format"})}, {"taxonomy": frozenset({"format"})}),
        ({"severity": "critical"}, {"severities": frozenset({"critical"})}, {"severities": frozenset({"minor"})}),
    ],
)
def test_each_condition(rule: dict[str, Any], matching: dict[str, Any], other: dict[str, Any]) -> None:
    sampler = Sampler(sampling(0.0, {**rule, "rate": 1.0}))
    hit = sampler.decide(facts(**matching))
    miss = sampler.decide(facts(**other))
    assert (hit.sampled, hit.rule, hit.weight) == (True, "rules[0]", 1.0)
    assert (miss.sampled, miss.rule, miss.rate) == (False, "default", 0.0)


# ---------------------------------------------------------------- determinism


def test_decisions_are_reproducible_across_samplers() -> None:
    a, b = Sampler(sampling(0.3)), Sampler(sampling(0.3))
    for i in ids(2_000):
        assert a.decide(facts(i)) == b.decide(facts(i))
    d = a.decide(facts("req-7"))
    assert d.draw == draw("req-7")


def test_salt_changes_which_ids_are_drawn() -> None:
    plain, salted = Sampler(sampling(0.5)), Sampler(sampling(0.5), salt="judge-v2")
    a = {i for i in ids(4_000) if plain.decide(facts(i)).sampled}
    b = {i for i in ids(4_000) if salted.decide(facts(i)).sampled}
    assert a != b
    assert within_4_sigma(len(a & b), 4_000, 0.25)  # independent draws


# ---------------------------------------------------------------- budget scale


def test_scale_halves_the_default_rate() -> None:
    sampler = Sampler(sampling(0.2))
    decisions = [sampler.decide(facts(i), scale=0.5) for i in ids(20_000)]
    assert {d.rate for d in decisions} == {0.1}
    assert within_4_sigma(sum(d.sampled for d in decisions), 20_000, 0.1)
    assert all(d.weight == 10.0 for d in decisions if d.sampled)


def test_scale_does_not_lower_sensitive_tag_or_severity_at_full_rate() -> None:
    sampler = Sampler(sampling(0.2, {"tag": "sensitive", "rate": 1.0}, {"severity": "critical", "rate": 1.0},
                              {"guard_failed": True, "rate": 1.0}, {"tag": "beta", "rate": 0.5}))
    for scale in (0.5, 0.0):
        for i in ids(500):
            assert sampler.decide(facts(i, tags=("sensitive",)), scale=scale).rate == 1.0
            assert sampler.decide(facts(i, severities=frozenset({"critical"})), scale=scale).sampled
    # everything else is scaled: a rate-1.0 rule on another condition, and a tag rule below 1.0
    assert sampler.decide(facts(guard_failed=True), scale=0.5).rate == 0.5
    assert sampler.decide(facts(tags=("beta",)), scale=0.5).rate == 0.25
    assert sampler.decide(facts(), scale=0.0).rate == 0.0


@pytest.mark.parametrize("scale", [-0.1, 1.5, float("nan")])
def test_scale_out_of_range_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        Sampler(sampling(0.1)).decide(facts(), scale=scale)


# ---------------------------------------------------------------- late decisions


def first_id(pred: Any) -> str:
    return next(i for i in ids(10_000) if pred(draw(i)))


CORRECTED = frozenset({"corrected"})


def test_decide_later_samples_when_feedback_raises_the_rate() -> None:
    sampler = Sampler(sampling(0.1, {"feedback": "corrected", "rate": 1.0}))
    rid = first_id(lambda u: u >= 0.1)
    before, after = facts(rid), facts(rid, feedback=CORRECTED)
    assert not sampler.decide(before).sampled
    later = sampler.decide_later(before, after)
    assert later == SampleDecision(sampled=True, rate=1.0, weight=1.0, rule="rules[0]", draw=draw(rid))


def test_decide_later_never_resamples_an_already_sampled_id() -> None:
    sampler = Sampler(sampling(0.1, {"feedback": "corrected", "rate": 1.0}))
    rid = first_id(lambda u: u < 0.1)
    assert sampler.decide(facts(rid)).sampled
    assert sampler.decide_later(facts(rid), facts(rid, feedback=CORRECTED)) is None


def test_decide_later_is_none_when_the_draw_stays_above_the_new_rate() -> None:
    sampler = Sampler(sampling(0.1, {"feedback": "corrected", "rate": 0.5}))
    high = first_id(lambda u: u >= 0.5)
    mid = first_id(lambda u: 0.1 <= u < 0.5)
    assert sampler.decide_later(facts(high), facts(high, feedback=CORRECTED)) is None
    assert sampler.decide_later(facts(mid), facts(mid, feedback=CORRECTED)) is not None
    assert sampler.decide_later(facts(mid), facts(mid)) is None  # nothing new, nothing to do


def test_decide_later_partitions_the_final_sample() -> None:
    sampler = Sampler(sampling(0.1, {"feedback": "corrected", "rate": 0.6}))
    first = {i for i in ids(5_000) if sampler.decide(facts(i)).sampled}
    late = {i for i in ids(5_000) if sampler.decide_later(facts(i), facts(i, feedback=CORRECTED))}
    final = {i for i in ids(5_000) if sampler.decide(facts(i, feedback=CORRECTED)).sampled}
    assert not first & late
    assert first | late == final


def test_decide_later_uses_the_earlier_scale() -> None:
    sampler = Sampler(sampling(0.4))
    rid = first_id(lambda u: 0.2 <= u < 0.4)
    # not sampled at half budget earlier; now at full budget the same facts sample it
    assert sampler.decide_later(facts(rid), facts(rid), scale=1.0, before_scale=0.5) is not None
    assert sampler.decide_later(facts(rid), facts(rid), scale=1.0) is None


def test_decide_later_refuses_two_requests() -> None:
    with pytest.raises(ValueError):
        Sampler(sampling(0.1)).decide_later(facts("a"), facts("b"))


# ---------------------------------------------------------------- facts from records


def record(**kw: Any) -> Record:
    base: dict[str, Any] = dict(id="att1", request_id="req1", attempt=0, attempt_reason="primary",
                                endpoint="chat.completions", route="chat", variant="cand", provider="mock",
                                model_requested="m", started_at=0.0)
    return Record(**{**base, **kw})


def test_facts_from_record() -> None:
    rec = record(
        tags=["sensitive", "beta"],
        request={"messages": [], "metadata": {"tier": "gold", "n": 3, "vip": True, "deep": {"x": 1}}},
        guards=[
            {"guard": "no_pii", "passed": False, "taxonomy": "pii_leak", "severity": "critical"},
            {"guard": "json", "passed": True, "taxonomy": "format", "severity": "minor"},
            {"guard": "len", "taxonomy": "too_long"},  # no `passed`: guards report failures only
        ],
    )
    f = facts_from_record(rec, feedback=["corrected"])
    assert (f.request_id, f.route, f.variant) == ("req1", "chat", "cand")
    assert f.tags == ("sensitive", "beta")
    assert dict(f.metadata) == {"tier": "gold", "n": "3", "vip": "true"}
    assert f.guard_failed is True
    assert f.taxonomy == {"pii_leak", "too_long"}
    assert f.severities == {"critical"}
    assert f.feedback == {"corrected"}
    assert SampleFacts.from_record(rec, feedback=["corrected"]) == f


def test_facts_from_record_tolerates_missing_parts() -> None:
    f = facts_from_record(SimpleNamespace(request_id="r9"))
    assert f == SampleFacts(request_id="r9", route="", variant="")
    clean = facts_from_record(record(request=None, guards=[{"guard": "g", "passed": True}]))
    assert clean.guard_failed is False and not clean.taxonomy and not clean.metadata
    odd = facts_from_record(record(request={"metadata": "[redacted]"}, guards=["garbage"], tags=None))
    assert odd.guard_failed is True and odd.tags == () and not odd.metadata


def test_record_facts_drive_rules() -> None:
    sampler = Sampler(sampling(0.0, {"taxonomy": "pii_leak", "rate": 1.0}, {"metadata": {"tier": "gold"}, "rate": 0.5}))
    failed = record(guards=[{"guard": "no_pii", "passed": False, "taxonomy": "pii_leak", "severity": "major"}])
    gold = record(request={"metadata": {"tier": "gold"}})
    assert sampler.decide(facts_from_record(failed)).rule == "rules[0]"
    assert sampler.decide(facts_from_record(gold)).rule == "rules[1]"
    assert sampler.decide(facts_from_record(record())).rule == "default"


def test_facts_are_frozen() -> None:
    f = facts(metadata={"a": "b"}, tags=["x"])  # type: ignore[arg-type]
    assert f.tags == ("x",)
    with pytest.raises(TypeError):
        f.metadata["a"] = "c"  # type: ignore[index]
    with pytest.raises(AttributeError):
        f.variant = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- reweighting


def test_reweight_known_values() -> None:
    mean, se = reweight([(1.0, 1.0), (0.0, 3.0)])
    assert mean == pytest.approx(0.25)
    assert se == pytest.approx(math.sqrt(1 * 0.75**2 + 9 * 0.25**2) / 4)
    assert reweight([(0.4, 2.0), (9.0, 0.0)]) == (pytest.approx(0.4), 0.0)  # weight 0 adds nothing


@pytest.mark.parametrize("items", [[], [(1.0, 0.0), (0.0, 0.0)], [(1.0, -1.0), (0.0, 2.0)]])
def test_reweight_refuses_degenerate_input(items: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        reweight(items)


def test_weights_undo_oversampling_of_a_stratum() -> None:
    """Routine 90% (success 0.8) sampled at 0.1; flagged 10% (success 0.3) at 1.0; truth 0.75."""
    rng = random.Random(20240611)
    sampler = Sampler(sampling(0.1, {"tag": "flagged", "rate": 1.0}))
    scored: list[tuple[float, float]] = []
    for i in ids(20_000, prefix="pop-"):
        flagged = rng.random() < 0.1
        success = float(rng.random() < (0.3 if flagged else 0.8))
        d = sampler.decide(facts(i, tags=("flagged",) if flagged else ()))
        if d.sampled:
            scored.append((success, d.weight))
    naive = sum(y for y, _ in scored) / len(scored)
    mean, se = reweight(scored)
    assert 0 < se < 0.02
    assert abs(naive - 0.75) > 10 * se  # the flagged stratum drags the plain sample mean down
    assert abs(mean - 0.75) < 3 * se
