"""What a call cost, from its token usage and the model's price (USD per million tokens)."""

from __future__ import annotations

from typing import Any

__all__ = ["cost_usd"]


def cost_usd(price: Any, usage: dict[str, Any] | None) -> float | None:
    """None when the price or the usage is unknown: an unknown cost is not a zero cost."""
    if price is None or not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0 if isinstance(details, dict) else 0
    cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    total = (prompt - cached) * price.input_per_mtok + cached * cached_rate + completion * price.output_per_mtok
    return round(total / 1_000_000, 10)
