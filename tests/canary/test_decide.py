"""The canary decision: rules, figures, and seeded simulations of whole canaries."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest
from proxy.canary import ArmFigures, CanaryFigures, Decision, Evidence, decide, next_stage, rollback_rules
from proxy.config import Canary
from proxy.reports import Estimate

STAGES = [1, 5, 25, 50, 100]


def make_canary(**over: object) -> Canary:
    data: dict[str, object] = {
        "baseline": "base-model",
        "candidate": "cand-model",
        "stages": STAGES,
        "min_samples": 200,
        "success_metric": "resolved",
        "guardrails": {
            "guard_failure_rate": {"max_increase": 0.0},
            "latency_p95_ms": {"max_ratio": 1.5},
            "critical_failures": {"max": 0},
        },
    }
    data.update(over)
    return Canary.model_validate(data)


def arm(successes: int, outcomes: int, **kw: object) -> ArmFigures:
    kw.setdefault("requests", outcomes)
    kw.setdefault("latency_p95_ms", 800.0)
    return ArmFigures(successes, outcomes, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- simulation


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact for small n; normal approximation (rounded, clipped) for large n."""
    if n <= 400:
        return sum(rng.random() < p for _ in range(n))
    x = round(rng.gauss(n * p, math.sqrt(n * p * (1.0 - p))))
    return min(max(x, 0), n)


@dataclasses.dataclass
class Arm:
    p: float
    g: float
    s: int = 0
    n: int = 0
    gf: int = 0
    stage_n: int = 0

    def serve(self, rng: random.Random, k: int) -> None:
        self.s += binomial(rng, k, self.p)
        self.gf += binomial(rng, k, self.g)
        self.n += k
        self.stage_n += k

    def figures(self, p95: float) -> ArmFigures:
        return ArmFigures(self.s, self.n, requests=self.n, guard_failures=self.gf,
                          latency_p95_ms=p95, stage_outcomes=self.stage_n)


def simulate(
    seed: int,
    p_base: float,
    p_cand: float,
    *,
    g_base: float = 0.05,
    g_cand: float = 0.05,
    batch: int = 100,
    max_looks: int = 40,
    canary: Canary | None = None,
) -> list[Decision]:
    """One canary: at each look the candidate serves ``batch`` requests and the baseline
    its share of the same traffic ((100 − s)/s times as many); ``decide`` runs after every
    look on cumulative figures; promote advances the stage (and resets the stage counts),
    rollback / promoted end the run, and ``max_looks`` holds in a stage end it too."""
    canary = canary or make_canary()
    rng = random.Random(seed)
    base, cand = Arm(p_base, g_base), Arm(p_cand, g_cand)
    stage: float = canary.stages[0]
    decisions: list[Decision] = []
    looks = 0
    while True:
        cand.serve(rng, batch)
        base.serve(rng, round(batch * (100 - stage) / stage))
        d = decide(canary, stage, CanaryFigures(base.figures(800.0), cand.figures(800.0)))
        decisions.append(d)
        looks += 1
        if d.action in ("rollback", "promoted"):
            return decisions
        if d.action == "promote":
            stage = d.to_stage
            base.stage_n = cand.stage_n = 0
            looks = 0
        elif looks >= max_looks:
            return decisions


def stages_reached(decisions: list[Decision]) -> list[float]:
    seen = [decisions[0].from_stage]
    for d in decisions:
        if d.action == "promote":
            seen.append(d.to_stage)
    return seen


def test_better_candidate_is_promoted_through_every_stage() -> None:
    runs = [simulate(seed, 0.60, 0.75) for seed in range(40)]
    finals = [r[-1] for r in runs]
    assert all(d.action == "promoted" and d.rule == "final_stage" for d in finals)
    assert all(stages_reached(r) == STAGES for r in runs)
    # each promotion fired on non-inferiority with the bound above -margin
    for r in runs:
        for d in r:
            if d.action == "promote":
                assert d.rule == "non_inferior"
                assert d.figures["success_cs_low"] > -d.figures["margin"]


def test_worse_candidate_is_rolled_back_before_25_percent() -> None:
    runs = [simulate(seed, 0.60, 0.45) for seed in range(40)]
    for r in runs:
        last = r[-1]
        assert last.action == "rollback", last
        assert last.rule == "inferior"
        assert last.from_stage < 25 and last.to_stage == 0
        assert not any(d.action == "promote" and d.to_stage >= 25 for d in r)
        assert last.figures["success_cs_high"] < -last.figures["margin"]


def test_a_a_candidate_is_rolled_back_in_at_most_5_percent_of_runs() -> None:
    outcomes = {"rollback": 0, "promoted": 0, "hold": 0}
    for seed in range(500):
        last = simulate(10_000 + seed, 0.60, 0.60, batch=100, max_looks=40)[-1]
        outcomes["rollback" if last.action == "rollback" else
                 "promoted" if last.action == "promoted" else "hold"] += 1
    assert outcomes["rollback"] <= 25, outcomes  # <= 5% of 500


def test_guard_failure_increase_is_rolled_back_in_simulation() -> None:
    runs = [simulate(seed, 0.60, 0.60, g_cand=0.15) for seed in range(20)]
    for r in runs:
        assert r[-1].action == "rollback"
        assert r[-1].rule == "guardrail_guard_failure_rate"
        assert r[-1].figures["guard_failure_rate_cs_low"] > 0.0


# ----------------------------------------------------------------------------- the rules


def test_critical_failure_beyond_max_rolls_back_at_once() -> None:
    c = make_canary()
    # everything else says "promote": a much better candidate with plenty of samples
    figs = CanaryFigures(arm(600, 1000), arm(900, 1000, critical_failures=1))
    d = decide(c, 5, figs)
    assert (d.action, d.rule, d.from_stage, d.to_stage) == ("rollback", "critical_failures", 5, 0)
    assert d.figures["candidate_critical_failures"] == 1
    assert d.figures["critical_failures_max"] == 0
    assert "had 1 requests with a critical failure in this run" in d.reason
    # ... also with no samples at all, and at 100%
    d = decide(c, 1, CanaryFigures(arm(0, 0), arm(0, 0, requests=1, critical_failures=1)))
    assert d.rule == "critical_failures"
    d = decide(c, 100, CanaryFigures(arm(600, 1000), arm(900, 1000, critical_failures=3)))
    assert d.action == "rollback"
    # at the max it's allowed
    c2 = make_canary(guardrails={"critical_failures": {"max": 2}})
    d = decide(c2, 5, CanaryFigures(arm(600, 1000), arm(900, 1000, critical_failures=2)))
    assert d.action == "promote"


def test_critical_failure_rate_rolls_back_on_evidence_of_an_increase_not_on_a_baseline_that_has_some_too() -> None:
    """`max: 0` rolls back an A/A candidate as soon as it has one critical failure; when the baseline has
    them too, the relative rule (max_increase) is the one to use."""
    rel = make_canary(guardrails={"critical_failures": {"max_increase": 0.005}})
    same = CanaryFigures(arm(60_000, 100_000, critical_failures=300), arm(60_000, 100_000, critical_failures=310))
    d = decide(rel, 5, same)
    assert d.action == "promote" and d.figures["critical_failure_rate_cs_low"] < 0.005
    assert decide(make_canary(), 5, same).rule == "critical_failures"  # the absolute count: rolled back
    worse = CanaryFigures(arm(60_000, 100_000, critical_failures=300), arm(60_000, 100_000, critical_failures=1500))
    d = decide(rel, 5, worse)
    assert (d.action, d.rule) == ("rollback", "guardrail_critical_failure_rate")
    assert d.figures["critical_failure_rate_cs_low"] > 0.005
    # reference: a one-sided z test of 1500 vs 300 in 100,000 against an increase of 0.005 is far beyond α
    from scipy.stats import norm
    p1, p2 = 300 / 100_000, 1500 / 100_000
    z = (p2 - p1 - 0.005) / math.sqrt(p1 * (1 - p1) / 100_000 + p2 * (1 - p2) / 100_000)
    assert norm.sf(z) < d.figures["alpha_rollback"]


def test_critical_failures_needs_max_or_max_increase() -> None:
    with pytest.raises(ValueError, match="max .*and/or max_increase"):
        make_canary(guardrails={"critical_failures": {}})
    both = make_canary(guardrails={"critical_failures": {"max": 3, "max_increase": 0.01}})
    assert (both.guardrails.critical_failures.max, both.guardrails.critical_failures.max_increase) == (3, 0.01)


def test_the_rollback_rules_share_alpha() -> None:
    c = make_canary()  # guard failure rate, latency, critical max (a count: not a test)
    assert rollback_rules(c) == ["guardrail_guard_failure_rate", "guardrail_latency", "inferior"]
    d = decide(c, 5, CanaryFigures(arm(600, 1000), arm(600, 1000)))
    assert d.figures["alpha_rollback"] == pytest.approx(0.05 / 3)
    bare = make_canary(guardrails={})
    assert rollback_rules(bare) == ["inferior"]
    assert decide(bare, 5, CanaryFigures(arm(600, 1000), arm(600, 1000))).figures["alpha_rollback"] == 0.05


def test_latency_rolls_back_on_evidence_from_per_unit_log_latency() -> None:
    c = make_canary()  # max_ratio 1.5
    counts = CanaryFigures(arm(600, 1000), arm(600, 1000))

    def with_latency(diff: float, variance: float, n: int = 1000) -> CanaryFigures:
        return dataclasses.replace(counts, evidence=Evidence(log_latency=Estimate(diff, variance, n, n)))

    # 1.8x slower (ln 1.8 = 0.588), precisely: rolled back
    d = decide(c, 25, with_latency(math.log(1.8), 0.0005))
    assert (d.action, d.rule, d.to_stage) == ("rollback", "guardrail_latency", 0)
    assert d.figures["latency_ratio"] == pytest.approx(1.8)
    assert d.figures["latency_ratio_cs_low"] > 1.5 and d.figures["latency_max_ratio"] == 1.5
    # 1.8x on a noisy estimate: no evidence beyond 1.5x yet
    assert decide(c, 25, with_latency(math.log(1.8), 0.05)).rule != "guardrail_latency"
    # 1.3x however precise: within the allowed ratio
    assert decide(c, 25, with_latency(math.log(1.3), 1e-6)).rule != "guardrail_latency"
    # counts carry no latency: no latency rule without evidence (a p95 ratio alone never rolls back)
    slow = CanaryFigures(arm(60_000, 100_000, latency_p95_ms=800.0), arm(60_000, 100_000, latency_p95_ms=3000.0))
    assert decide(c, 25, slow).rule == "non_inferior"


def test_the_plan_uses_the_stage_allocation_and_the_current_rate() -> None:
    from proxy.reports import outcomes_needed

    c = make_canary(min_samples=200)
    # 2 h into the 5% stage: 950 baseline and 50 candidate outcomes in it (500 per hour)
    figs = CanaryFigures(arm(600, 1000, stage_outcomes=950), arm(30, 50, stage_outcomes=50), stage_elapsed_s=7200)
    d = decide(c, 5, figs)
    assert d.rule == "need_samples"
    here, *later = d.figures["plan"]
    assert here["stage"] == 5.0 and [r["stage"] for r in later] == [25.0, 50.0]
    need = outcomes_needed(0.6, 0.02, allocation=0.05, p_candidate=0.6, power=0.8)  # the actual split
    assert here["for_non_inferiority"] == [need.baseline - 1000, need.candidate - 50]
    assert here["for_sample_gate"] == [0, 150]
    assert (here["baseline_outcomes_needed"], here["candidate_outcomes_needed"]) == (
        need.baseline - 1000, need.candidate - 50)
    rate = 1000 / 7200  # outcomes per second, both arms
    hours = max((need.baseline - 1000) / (rate * 0.95), (need.candidate - 50) / (rate * 0.05)) / 3600
    assert here["hours"] == pytest.approx(hours)
    at25 = later[0]
    assert (at25["baseline_outcomes_needed"], at25["candidate_outcomes_needed"]) == (200, 200)
    assert at25["hours"] == pytest.approx(max(200 / (rate * 0.75), 200 / (rate * 0.25)) / 3600)
    assert at25["hours_from_now"] == pytest.approx(hours + at25["hours"])
    assert "h more at the current rate" in d.reason


def test_the_readme_canary_example_is_what_decide_returns() -> None:
    """README "Canary decisions": 392/500 vs 406/500 at 5% holds (the old README said "promoted")."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    c = make_canary(baseline="prod", candidate="candidate", success_metric="task_success", stages=[5, 25, 50, 100],
                    min_samples=400, guardrails={})
    d = decide(c, 5, CanaryFigures(arm(392, 500), arm(406, 500)))
    assert (d.action, d.rule) == ("hold", "inconclusive")
    assert f"{d.action} [{d.rule}] {d.reason}\n" in readme


def test_need_samples_uses_stage_outcomes() -> None:
    c = make_canary()
    figs = CanaryFigures(arm(6000, 10_000, stage_outcomes=5000),
                         arm(900, 1200, stage_outcomes=150))
    d = decide(c, 5, figs)
    assert (d.action, d.rule, d.to_stage) == ("hold", "need_samples", 5)
    assert d.figures["candidate_stage_outcomes"] == 150
    assert "200" in d.reason and "150" in d.reason


def test_inconclusive_holds() -> None:
    c = make_canary()
    # equal rates, 300 per arm: the lower bound is far below -2 points, the upper above it
    d = decide(c, 5, CanaryFigures(arm(180, 300), arm(180, 300)))
    assert (d.action, d.rule, d.from_stage, d.to_stage) == ("hold", "inconclusive", 5, 5)
    assert d.figures["success_cs_low"] < -0.02 < d.figures["success_cs_high"]
    assert "inconclusive" in d.reason
    # slightly worse but not provably beyond the margin: still hold, never promote
    d = decide(c, 5, CanaryFigures(arm(1800, 3000), arm(1740, 3000)))
    assert d.action == "hold" and d.rule == "inconclusive"


def test_non_inferior_promotes_and_last_stage_reports_promoted() -> None:
    c = make_canary()
    figs = CanaryFigures(arm(60_000, 100_000), arm(60_000, 100_000))
    d = decide(c, 25, figs)
    assert (d.action, d.rule, d.to_stage) == ("promote", "non_inferior", 50)
    d = decide(c, 100, figs)
    assert (d.action, d.rule, d.to_stage) == ("promoted", "final_stage", 100)
    short = make_canary(stages=[1, 10])
    d = decide(short, 10, figs)
    assert (d.action, d.rule, d.from_stage, d.to_stage) == ("promoted", "non_inferior", 10, 100)


def test_margin_defaults_to_config_and_can_be_overridden() -> None:
    figs = CanaryFigures(arm(6000, 10_000), arm(5950, 10_000))  # -0.5 pt, CS ~ +-2.3 pt
    strict = make_canary(non_inferiority_margin=0.0)
    assert decide(strict, 5, figs).figures["margin"] == 0.0
    assert decide(strict, 5, figs).action == "hold"
    assert decide(strict, 5, figs, margin=0.05).action == "promote"


def test_every_decision_carries_figures_and_rule() -> None:
    for r in (simulate(1, 0.60, 0.75), simulate(2, 0.60, 0.45), simulate(3, 0.60, 0.60)):
        for d in r:
            assert d.rule in {"non_inferior", "need_samples", "inconclusive", "inferior",
                              "guardrail_guard_failure_rate", "guardrail_latency", "guardrail_critical_failure_rate",
                              "critical_failures", "final_stage"}
            assert d.reason
            for key in ("baseline_successes", "baseline_outcomes", "candidate_successes",
                        "candidate_outcomes", "candidate_requests", "candidate_guard_failures",
                        "candidate_critical_failures", "baseline_latency_p95_ms",
                        "min_samples", "alpha", "alpha_rollback", "margin", "stage_percent", "periods", "unit"):
                assert key in d.figures
            if d.rule in ("non_inferior", "inconclusive", "inferior"):
                assert {"success_cs_low", "success_cs_high", "success_diff"} <= d.figures.keys()
    d = simulate(1, 0.60, 0.75)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.action = "hold"  # type: ignore[misc]


def test_rejects_unknown_stage_and_bad_figures() -> None:
    c = make_canary()
    with pytest.raises(ValueError):
        decide(c, 7, CanaryFigures(arm(1, 2), arm(1, 2)))
    with pytest.raises(ValueError):
        ArmFigures(5, 4)
    with pytest.raises(ValueError):
        ArmFigures(1, 4, requests=2, guard_failures=3)


def test_next_stage() -> None:
    assert next_stage(STAGES, 0) == 1
    assert next_stage(STAGES, 1) == 5
    assert next_stage(STAGES, 50) == 100
    assert next_stage(STAGES, 100) is None
    assert next_stage([0.5, 2.5], 0.5) == 2.5
    assert next_stage([], 0) is None
