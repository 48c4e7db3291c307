"""The small pure pieces: --fail-on rules, the pacer, the replayed body, the progress line, percentiles."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from proxy.replay import FailRule, Pacer, ProgressBar, parse_fail_on, percentile, replay_body, rules_met


def test_fail_on_rules_parse_and_unknown_ones_are_refused_naming_them() -> None:
    rules = parse_fail_on("new_critical, pass_rate_drop>2@0.05,regressions>0,errors>3")
    assert rules == [FailRule("new_critical", text="new_critical"),
                     FailRule("pass_rate_drop", 2.0, 0.05, "pass_rate_drop>2@0.05"),
                     FailRule("regressions", 0.0, None, "regressions>0"), FailRule("errors", 3.0, None, "errors>3")]
    assert parse_fail_on(None) == [] and parse_fail_on("") == []
    with pytest.raises(ValueError, match="cannot read rule 'critical'"):
        parse_fail_on("critical")
    with pytest.raises(ValueError, match="applies to pass_rate_drop only"):
        parse_fail_on("errors>1@0.05")


def _summary(base: float, cand: float, p: float) -> dict:
    return {"pass_rate": {"baseline": {"rate": base}, "candidate": {"rate": cand}}, "paired": {"p_value": p,
            "regressions": 0}, "errors": {"count": 0}, "new_critical": {"count": 0, "items": []}}


def test_pass_rate_drop_needs_the_drop_and_with_at_p_also_the_p_value() -> None:
    drop = parse_fail_on("pass_rate_drop>2")
    with_p = parse_fail_on("pass_rate_drop>2@0.05")
    assert rules_met(drop, _summary(0.90, 0.885, 0.01)) == []  # 1.5 points
    assert rules_met(drop, _summary(0.90, 0.87, 0.40)) != []  # 3 points
    assert rules_met(with_p, _summary(0.90, 0.87, 0.40)) == []  # 3 points, but could be chance
    assert rules_met(with_p, _summary(0.90, 0.87, 0.01)) != []


async def test_the_pacer_spaces_calls_by_the_rate_and_a_pause_holds_every_call_to_that_provider() -> None:
    now = [0.0]
    starts: list[float] = []

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    pacer = Pacer(rate=4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await pacer.acquire("a")
        starts.append(now[0])
    assert starts == [0.0, 0.25, 0.5]
    pacer.pause("a", 2.0)
    await pacer.acquire("b")  # another provider is not held
    assert now[0] == 0.75
    await pacer.acquire("a")
    assert now[0] == pytest.approx(2.5)


def test_the_replayed_body_keeps_the_original_params_under_the_targets_pins_and_drops_streaming() -> None:
    request = {"model": "old", "messages": [], "temperature": 0.2, "seed": 1, "stream": True,
               "stream_options": {"include_usage": True}, "metadata": {"k": "v"}, "logit_bias": {"1": 2}}
    model = SimpleNamespace(model="new", params={"temperature": 0})
    provider = SimpleNamespace(forward_metadata=False, strip_params=["logit_bias"])
    assert replay_body(request, {"seed": 1}, model, provider) == {"model": "new", "messages": [], "temperature": 0,
                                                                  "seed": 1}


def test_the_progress_line_shows_done_total_rate_and_eta() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = ProgressBar(10, stream, already_done=2, tty=True, clock=lambda: now[0])
    now[0] = 2.0
    bar.advance(4)
    assert stream.getvalue().endswith("6/10 (60%) 2.0 items/s ETA 0:02")
    assert stream.getvalue().startswith("\r")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile([], 50)) == (50.0, 95.0, None)
    assert percentile([3.0], 95) == 3.0
