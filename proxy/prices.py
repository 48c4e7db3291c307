"""The shipped price table: USD per million tokens for common models, used when a model in the
policy has no `price:` of its own (a policy's `price:` always wins).

Prices change: these are the providers' list prices as published in 2025 (standard tier, no batch
discount). Check them against your contract and set `price:` in the policy where they differ.
A model name matches an entry exactly or by prefix at a `-` boundary, the longest entry winning, so
`gpt-4o-2024-08-06` is priced as `gpt-4o` and `gpt-4o-mini-2024-07-18` as `gpt-4o-mini`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from proxy.config._models import Price

__all__ = ["DEFAULT_PRICES", "default_price", "price_for"]

# model: (input, output, cached input) per million tokens
DEFAULT_PRICES: dict[str, tuple[float, float, float | None]] = {
    "gpt-4o": (2.50, 10.00, 1.25),
    "gpt-4o-mini": (0.15, 0.60, 0.075),
    "gpt-4.1": (2.00, 8.00, 0.50),
    "gpt-4.1-mini": (0.40, 1.60, 0.10),
    "gpt-4.1-nano": (0.10, 0.40, 0.025),
    "o3": (2.00, 8.00, 0.50),
    "o3-mini": (1.10, 4.40, 0.55),
    "o4-mini": (1.10, 4.40, 0.275),
    "text-embedding-3-small": (0.02, 0.0, None),
    "text-embedding-3-large": (0.13, 0.0, None),
    "claude-3-5-haiku": (0.80, 4.00, 0.08),
    "claude-3-5-sonnet": (3.00, 15.00, 0.30),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30),
    "claude-sonnet-4": (3.00, 15.00, 0.30),
    "claude-opus-4": (15.00, 75.00, 1.50),
}


@lru_cache(maxsize=1024)  # called per answer: the table is scanned once per model name
def default_price(model: str) -> Price | None:
    """The shipped price of `model` (exact, else the longest prefix ending at a `-`), or None."""
    name = model.rsplit("/", 1)[-1]
    best = None
    for known in DEFAULT_PRICES:
        if (name == known or name.startswith(known + "-")) and (best is None or len(known) > len(best)):
            best = known
    if best is None:
        return None
    inp, out, cached = DEFAULT_PRICES[best]
    return Price(input_per_mtok=inp, output_per_mtok=out, cached_input_per_mtok=cached)


def price_for(variant: Any) -> Price | None:
    """A policy model's price: its own `price:`, else the shipped table's, else None (unknown)."""
    return variant.price if variant.price is not None else default_price(variant.model)
