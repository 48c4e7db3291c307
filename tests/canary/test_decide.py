"""The canary decision: rules, figures, and seeded simulations of whole canaries."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from proxy.canary import ArmFigures, CanaryFigures, Decision, decide, next_stage
from proxy.config import Canary

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
    assert "1 critical failures" in d.reason
    # ... also with no samples at all, and at 100%
    d = decide(c, 1, CanaryFigures(arm(0, 0), arm(0, 0, requests=1, critical_failures=1)))
    assert d.rule == "critical_failures"
    d = decide(c, 100, CanaryFigures(arm(600, 1000), arm(900, 1000, critical_failures=3)))
    assert d.action == "rollback"
    # at the max it's allowed
    c2 = make_canary(guardrails={"critical_failures": {"max": 2}})
    d = decide(c2, 5, CanaryFigures(arm(600, 1000), arm(900, 1000, critical_failures=2)))
    assert d.action == "promote"


def test_guard_failure_rate_rollback_needs_evidence() -> None:
    c = make_canary(guardrails={"guard_failure_rate": {"max_increase": 0.02}})
    # 5% vs 15% on 2000 requests each: clear evidence of more than +2 points
    d = decide(c, 5, CanaryFigures(arm(1200, 2000, guard_failures=100),
                                   arm(1200, 2000, guard_failures=300)))
    assert (d.action, d.rule) == ("rollback", "guardrail_guard_failure_rate")
    assert d.figures["guard_failure_rate_cs_low"] > 0.02
    # the same rates on 20 requests: no evidence, so no rollback
    d = decide(c, 5, CanaryFigures(arm(12, 20, guard_failures=1),
                                   arm(12, 20, guard_failures=3)))
    assert d.rule == "need_samples"
    # an increase within max_increase, however precise, is fine
    d = decide(c, 5, CanaryFigures(arm(60_000, 100_000, guard_failures=5_000),
                                   arm(60_000, 100_000, guard_failures=5_500)))
    assert d.rule != "guardrail_guard_failure_rate"


def test_latency_rollback_needs_min_samples_requests() -> None:
    c = make_canary()
    slow = CanaryFigures(arm(600, 1000, latency_p95_ms=800.0),
                         arm(600, 1000, latency_p95_ms=1300.0))
    d = decide(c, 25, slow)
    assert (d.action, d.rule, d.to_stage) == ("rollback", "guardrail_latency", 0)
    assert d.figures["latency_p95_ratio"] == pytest.approx(1300 / 800)
    assert d.figures["latency_max_ratio"] == 1.5
    few = CanaryFigures(arm(60, 100, latency_p95_ms=800.0), arm(60, 100, latency_p95_ms=1300.0))
    assert decide(c, 25, few).rule == "need_samples"
    ok = CanaryFigures(arm(600, 1000, latency_p95_ms=800.0), arm(600, 1000, latency_p95_ms=1100.0))
    assert decide(c, 25, ok).rule != "guardrail_latency"


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
                              "guardrail_guard_failure_rate", "guardrail_latency",
                              "critical_failures", "final_stage"}
            assert d.reason
            for key in ("baseline_successes", "baseline_outcomes", "candidate_successes",
                        "candidate_outcomes", "candidate_requests", "candidate_guard_failures",
                        "candidate_critical_failures", "baseline_latency_p95_ms",
                        "min_samples", "alpha", "margin", "stage_percent"):
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


async def test_a_decision_and_its_state_are_stored_together_and_read_back(tmp_path) -> None:
    from proxy.canary._state import decision_rows, history, read_stages
    from proxy.records import SQLiteStore

    store = SQLiteStore(tmp_path / "c.db")
    await store.open()
    try:
        await store.write_records(decision_rows("bot", action="promote", from_stage=1, to_stage=5, status="running",
                                                rule="non_inferior", reason="ok", figures={"lower": -0.01}, now=10))
        await store.write_records(decision_rows("bot", action="rollback", from_stage=5, to_stage=0,
                                                status="rolled_back", rule="manual", reason="bad", actor="ana", now=20))
        assert await read_stages(store) == {"bot": (0.0, "rolled_back")}
        log = await history(store, "bot")
        assert [(d["action"], d["from_stage"], d["to_stage"], d["actor"]) for d in log] == [
            ("rollback", 5.0, 0.0, "ana"), ("promote", 1.0, 5.0, "controller")]
    finally:
        await store.close()
