"""The gateway's state, built from a policy in the lifespan (never at import)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from proxy.guards import DEFAULT_TAXONOMY, GuardChain, build_guards
from proxy.keys import hash_key, presented_key
from proxy.logs import get_logger
from proxy.providers import ProviderAdapter, build_provider
from proxy.routing import Splitter, StickySpec, parse_sticky

__all__ = ["AttemptPlan", "CompiledRoute", "build_providers", "compile_routes", "effective_taxonomy"]

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
    guards: GuardChain | None = None
    actions: Mapping[str, str] = dataclasses.field(default_factory=dict)  # guard or severity -> action
    max_retries: int = 1
    buffer_streams: bool = False
    conditions: tuple[tuple[Any, Splitter], ...] = ()  # (RouteMatch, splitter): first match wins
    stage_splitters: dict[float, Splitter] = dataclasses.field(default_factory=dict)  # canary: stage -> split

    def canary_splitter(self, stage: float) -> Splitter:
        """The split of a canary at `stage` percent (0: all to the baseline); same hash buckets."""
        splitter = self.stage_splitters.get(stage)
        if splitter is None:
            canary = self.config.canary
            weights = {canary.baseline: 100.0 - stage, canary.candidate: float(stage)}
            splitter = Splitter(self.splitter.experiment, {k: v for k, v in weights.items() if v > 0})
            self.stage_splitters[stage] = splitter
        return splitter

    def splitter_for(self, headers: Mapping[str, str], tags: Sequence[str],
                     metadata: Mapping[str, Any] | None, caller: str | None = None) -> Splitter:
        """The `when:` entry's splitter for the first condition the request meets, else the route's."""
        for match, splitter in self.conditions:
            if _matches(match, headers, tags, metadata, caller):
                return splitter
        return self.splitter

    def plan(self, variant: str) -> AttemptPlan:
        return AttemptPlan(variant, tuple(self.config.variants), self.fallbacks)


class AttemptPlan:
    """Which variant to try next, and why: fallbacks after an upstream fault, any other variant
    (then the fallbacks) after an answer failed a guard whose action is `retry_other_variant`."""

    __slots__ = ("tried", "_variants", "_fallbacks")

    def __init__(self, first: str, variants: tuple[str, ...], fallbacks: tuple[str, ...]) -> None:
        self.tried = [first]
        self._variants = variants
        self._fallbacks = fallbacks

    def _next(self, candidates: tuple[str, ...]) -> str | None:
        for name in candidates:
            if name not in self.tried:
                self.tried.append(name)
                return name
        return None

    def after_upstream_error(self) -> str | None:
        return self._next(self._fallbacks)

    def after_guard_failure(self, fallbacks_only: bool = False) -> str | None:
        return self._next(self._fallbacks if fallbacks_only else self._variants + self._fallbacks)


def _weights(name: str, route: Any) -> dict[str, float]:
    if route.split:
        return dict(route.split)
    if route.model:
        return {route.model: 100.0}
    canary = route.canary
    # The first stage until the store says otherwise (the controller or an operator moved it).
    first = float(canary.stages[0])
    return {canary.baseline: 100.0 - first, canary.candidate: first} if first < 100 else {canary.candidate: 100.0}


def effective_taxonomy(policy: Any) -> dict[str, str]:
    """Class -> severity: the built-in classes, overridden and extended by the policy's `taxonomy:`."""
    return {**DEFAULT_TAXONOMY, **{name: entry.severity for name, entry in policy.taxonomy.items()}}


def _matches(match: Any, headers: Mapping[str, str], tags: Sequence[str], metadata: Mapping[str, Any] | None,
             caller: str | None) -> bool:
    if match.tag is not None and match.tag not in tags:
        return False
    if match.header and any(headers.get(name) != value for name, value in match.header.items()):
        return False
    if match.metadata and any(str((metadata or {}).get(k)) != v for k, v in match.metadata.items()):
        return False
    if match.caller and caller not in match.caller:
        return False
    if match.key:
        token = presented_key(headers)
        return token is not None and hash_key(token) in match.key
    return True


def _conditions(name: str, route: Any) -> tuple[tuple[Any, Splitter], ...]:
    salt = route.salt or name  # the same buckets as the route's own split: a user keeps a stable place
    return tuple((entry.match, Splitter(salt, entry.split or {entry.model: 100.0})) for entry in route.when)


def compile_routes(policy: Any) -> dict[str, CompiledRoute]:
    taxonomy = effective_taxonomy(policy)
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
            guards=build_guards(route.guards, taxonomy) if route.guards else None,
            actions=dict(route.on_guard_failure),
            max_retries=route.max_retries,
            buffer_streams=route.stream_guard == "buffer",
            conditions=_conditions(name, route),
        )
    return compiled


def _used_providers(policy: Any) -> set[str]:
    used = set()
    for route in policy.routes.values():
        names = set(_weights("", route)) | set(route.fallbacks)
        if route.shadow is not None:
            names.add(route.shadow.model)
        for entry in route.when:
            names.update(entry.split or {entry.model: 100})
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
