"""The gateway's state, built from a policy in the lifespan (never at import)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx

from proxy.logs import get_logger
from proxy.providers import ProviderAdapter, build_provider
from proxy.routing import Splitter, StickySpec, parse_sticky

__all__ = ["CompiledRoute", "compile_routes", "build_providers"]

log = get_logger("sluicegate.gateway")


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with everything the hot path needs precomputed."""

    name: str
    config: Any  # proxy.config.Route
    splitter: Splitter
    sticky: tuple[StickySpec, ...]
    fallbacks: tuple[str, ...]
    capture: str
    timeout: float | None

    def plan(self, variant: str) -> list[tuple[str, str]]:
        """The variants to try in order, with why: the assigned one, then each fallback once."""
        steps = [(variant, "primary")]
        steps.extend((name, "fallback") for name in self.fallbacks if name != variant)
        return steps


def _weights(name: str, route: Any) -> dict[str, float]:
    if route.split:
        return dict(route.split)
    if route.model:
        return {route.model: 100.0}
    canary = route.canary
    # The canary controller (a later issue) moves the stage; until then the first stage serves.
    first = float(canary.stages[0])
    return {canary.baseline: 100.0 - first, canary.candidate: first} if first < 100 else {canary.candidate: 100.0}


def compile_routes(policy: Any) -> dict[str, CompiledRoute]:
    compiled = {}
    for name, route in policy.routes.items():
        weights = {k: v for k, v in _weights(name, route).items() if v > 0} or _weights(name, route)
        compiled[name] = CompiledRoute(
            name=name,
            config=route,
            splitter=Splitter(route.salt or name, weights),
            sticky=parse_sticky(route.sticky_by),
            fallbacks=tuple(route.fallbacks),
            capture=route.capture,
            timeout=route.timeout,
        )
    return compiled


def _used_providers(policy: Any) -> set[str]:
    used = set()
    for route in policy.routes.values():
        names = set(_weights("", route)) | set(route.fallbacks)
        used.update(policy.models[n].provider for n in names if n in policy.models)
    if policy.passthrough is not None:
        used.add(policy.passthrough.provider)
    return used


def build_providers(policy: Any, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
                    ) -> dict[str, ProviderAdapter]:
    """One adapter (one connection pool) per provider, for the life of the process."""
    transports = transports or {}
    used = _used_providers(policy)
    adapters: dict[str, ProviderAdapter] = {}
    for name, config in policy.providers.items():
        try:
            adapters[name] = build_provider(name, config, transports.get(name))
        except NotImplementedError as exc:
            if name in used:
                raise
            log.warning("provider_skipped", provider=name, reason=str(exc))
    return adapters
