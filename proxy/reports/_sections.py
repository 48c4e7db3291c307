"""The report's sections beyond the per-arm figures: scores, shadow comparisons and canaries —
one call, so the CLI, the HTTP API and the demo show the same report."""

from __future__ import annotations

from typing import Any

from ._scores import policy_scores, scorer_labels
from ._shadow import shadow_section

__all__ = ["policy_sections"]


async def policy_sections(store: Any, policy: Any, *, route: str | None = None, since: float | None = None,
                          until: float | None = None) -> dict[str, Any]:
    """{"scores", "shadows", "canary"} for the report (`policy` may be None: no canaries then)."""
    from proxy.canary._state import canary_status  # the canary package imports the reports' statistics

    return {
        "scores": await policy_scores(store, policy, route=route, since=since, until=until),
        "shadows": await shadow_section(store, route=route, since=since, until=until, labels=scorer_labels(policy)),
        "canary": await canary_status(store, policy, route) if policy is not None else [],
    }
