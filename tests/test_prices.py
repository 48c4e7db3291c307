"""The shipped price table and its precedence: the policy's `price:` wins, unknown stays unknown."""

from __future__ import annotations

import pytest

from proxy.config._models import ModelVariant, Price
from proxy.costs import cost_usd
from proxy.prices import DEFAULT_PRICES, default_price, price_for


@pytest.mark.parametrize(("model", "entry"), [
    ("gpt-4o", "gpt-4o"), ("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"), ("openai/gpt-4.1-nano", "gpt-4.1-nano"),
    ("o3-mini", "o3-mini"), ("o3", "o3"),
])
def test_longest_prefix_at_a_dash_boundary(model: str, entry: str) -> None:
    inp, out, cached = DEFAULT_PRICES[entry]
    assert default_price(model) == Price(input_per_mtok=inp, output_per_mtok=out, cached_input_per_mtok=cached)


@pytest.mark.parametrize("model", ["gpt-4omni", "my-gpt-4o", "gpt-mock-prod", "o30"])
def test_unknown_models_have_no_price(model: str) -> None:
    assert default_price(model) is None


def test_the_policy_price_wins_over_the_table() -> None:
    own = Price(input_per_mtok=1, output_per_mtok=2)
    assert price_for(ModelVariant(provider="p", model="gpt-4o", price=own)) == own
    assert price_for(ModelVariant(provider="p", model="gpt-4o")) == default_price("gpt-4o")


def test_cost_from_the_table_counts_cached_tokens_at_their_rate() -> None:
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000,
             "prompt_tokens_details": {"cached_tokens": 400_000}}
    assert cost_usd(default_price("gpt-4o"), usage) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0)
