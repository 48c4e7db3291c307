"""Prometheus metrics at `/metrics`.

Two kinds, kept apart so the request path pays only for what only it can see:
- events, counted as they happen: requests and their latency (`request`), and per attempt record
  (`attempt`) upstream latency and errors by provider, guard failures by class and severity,
  fallbacks, retries, time to first token, cache hits;
- state, read when Prometheus scrapes (`_StateCollector`): the recorder's buffer, written, spilled
  and dropped counts, the scoring queue's depth, lag and drops, scores and judge cost, canary stages,
  and the report's success rate per variant (refreshed every minute by one replica).

Label sets are bounded: route, variant, provider, status, taxonomy class, severity, scorer — never
a request id, a user or a model name a caller chose. Every label value passes a `LabelGuard`: route,
variant and provider must be names in the current policy (a `passthrough:` request is route
`passthrough`, its model stays in the record only), and the labels our own code fills (status,
outcome, taxonomy, severity) keep their first `CODE_LABEL_LIMIT` values; anything else is counted as
`other` and in `sluicegate_metric_labels_folded_total{label}` (issue 17: 2,000 passthrough model
names had made 38,000 series and a 4.1 MB `/metrics`). Each app has its own registry (several
apps in one test process must not share counters). With `PROMETHEUS_MULTIPROC_DIR` set (several
worker processes behind one port), `/metrics` aggregates the event metrics of every process; state
is then the scraping process's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from proxy.server._answers import PASSTHROUGH_VARIANT

__all__ = ["LabelGuard", "Metrics", "metrics_endpoint", "report_figures", "scoring_families", "serve_worker_metrics"]

# seconds: LLM calls run from tens of milliseconds (cached, small) to minutes (long generations)
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER = "other"  # the value a label gets when its own value is not admitted
NONE = "-"  # no route or variant (refused before routing)
CODE_LABEL_LIMIT = 64  # distinct values of a label our code fills (status, outcome, taxonomy, severity)
POLICY_LABEL_LIMIT = 10_000  # distinct policy names a label keeps (reloads add names; this bounds them too)


class LabelGuard:
    """One label's admitted values. `known()` gives the names the value must be one of (the policy's),
    or None when there is no such set (then the first `limit` values are admitted). What is not
    admitted becomes `other` and is reported to `on_fold(label)`. Admitted values are remembered;
    `known()` is called only for a value not seen before. `Metrics._child` calls guards only when its
    cache misses, so the request path pays nothing for them."""

    __slots__ = ("label", "_known", "_limit", "_on_fold", "_admitted")

    def __init__(self, label: str, known: Callable[[], Collection[str] | None] | None, limit: int,
                 on_fold: Callable[[str], None], always: Collection[str] = ()) -> None:
        self.label = label
        self._known = known
        self._limit = limit
        self._on_fold = on_fold
        self._admitted: set[str] = set(always)

    def __call__(self, value: str) -> str:
        if value in self._admitted:
            return value
        known = self._known() if self._known is not None else None
        if len(self._admitted) < self._limit and (known is None or value in known):
            self._admitted.add(value)
            return value
        self._on_fold(self.label)
        return OTHER


class Metrics:
    def __init__(self, state: Callable[[], Any] | None = None) -> None:
        """`state()` returns the current Gateway (read at scrape time; a reload replaces it)."""
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sluicegate_requests", "Requests answered, by route, variant and HTTP status",
                                ["route", "variant", "status"], registry=r)
        self.duration = Histogram("sluicegate_request_duration_seconds", "Time from request to the end of the answer",
                                  ["route", "variant"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("sluicegate_time_to_first_token_seconds", "Time to the first streamed event",
                              ["route", "variant"], buckets=TTFT_BUCKETS, registry=r)
        self.upstream = Histogram("sluicegate_upstream_duration_seconds", "Upstream call latency per attempt",
                                  ["provider"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("sluicegate_upstream_errors", "Attempts that got no usable answer",
                                       ["provider", "outcome"], registry=r)
        self.guard_failures = Counter("sluicegate_guard_failures", "Failed guards by class and severity",
                                      ["route", "variant", "taxonomy", "severity"], registry=r)
        self.fallbacks = Counter("sluicegate_fallbacks", "Attempts on a fallback variant", ["route"], registry=r)
        self.retries = Counter("sluicegate_retries", "Attempts retried (upstream retry or after a guard failure)",
                               ["route"], registry=r)
        self.cache = Counter("sluicegate_cache_requests", "Output cache look-ups", ["result"], registry=r)
        self.folded = Counter("sluicegate_metric_labels_folded", "Metric updates whose label value was counted "
                              "as `other` (not in the policy, or past the label's limit)", ["label"], registry=r)
        self._state = state
        self._route = self._policy_guard("route", lambda policy: policy.routes, always=(NONE, PASSTHROUGH_VARIANT))
        self._variant = self._policy_guard("variant", lambda policy: policy.models, always=(NONE, PASSTHROUGH_VARIANT))
        self._provider = self._policy_guard("provider", lambda policy: policy.providers)
        self._status, self._outcome, self._taxonomy, self._severity = (
            LabelGuard(name, None, CODE_LABEL_LIMIT, self._fold)
            for name in ("status", "outcome", "taxonomy", "severity"))
        route_variant = (self._route, self._variant)
        self._guards: dict[int, tuple[LabelGuard, ...]] = {  # metric -> the guard of each of its labels
            id(self.requests): (*route_variant, self._status), id(self.duration): route_variant,
            id(self.ttft): route_variant, id(self.upstream): (self._provider,),
            id(self.upstream_errors): (self._provider, self._outcome),
            id(self.guard_failures): (*route_variant, self._taxonomy, self._severity),
            id(self.fallbacks): (self._route,), id(self.retries): (self._route,)}
        self.report: dict[tuple[str, str, str], tuple[float | None, int]] = {}  # (route, variant, metric) -> rate, n
        self._children: dict[tuple[Any, ...], Any] = {}
        if state is not None and not self.multiprocess:
            r.register(_StateCollector(state, self))

    def _policy_guard(self, label: str, names: Callable[[Any], Collection[str]],
                      always: Collection[str] = ()) -> LabelGuard:
        def known() -> Collection[str] | None:
            gateway = self._state() if self._state is not None else None
            return names(gateway.policy) if gateway is not None else None

        return LabelGuard(label, known, POLICY_LABEL_LIMIT if self._state is not None else CODE_LABEL_LIMIT,
                          self._fold, always)

    def _fold(self, label: str) -> None:
        self._child(self.folded, label).inc()

    @staticmethod
    def _route_variant(route: str | None, variant: str | None) -> tuple[str, str]:
        if variant == PASSTHROUGH_VARIANT:  # the route is then the model the caller named: never a label
            return PASSTHROUGH_VARIANT, PASSTHROUGH_VARIANT
        return route or NONE, variant or NONE

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: the lookup costs more than the increment. On a miss the
        labels pass their guards first; only values that pass are remembered as given (a folded one is
        guarded, and counted, each time), so the cache is as bounded as the series."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            guards = self._guards.get(id(metric))
            safe = labels if guards is None else tuple(guard(v) for guard, v in zip(guards, labels, strict=True))
            safe_key = (id(metric), *safe)
            child = self._children.get(safe_key)
            if child is None:
                child = self._children[safe_key] = metric.labels(*safe)
        return child

    def request(self, route: str | None, variant: str | None, status: int, seconds: float) -> None:
        route, variant = self._route_variant(route, variant)
        self._child(self.requests, route, variant, str(status)).inc()
        self._child(self.duration, route, variant).observe(seconds)

    def attempt(self, record: Any) -> None:
        """One finished attempt (its record), served or not."""
        if record.cache_hit:
            self._child(self.cache, "hit").inc()
            return
        route, variant = self._route_variant(record.route, record.variant)
        if record.latency_ms is not None and record.upstream_status is not None:
            self._child(self.upstream, record.provider).observe(record.latency_ms / 1000)
        if record.outcome not in ("ok", "guard_failed", "guard_blocked", "cancelled", "client_disconnected"):
            self._child(self.upstream_errors, record.provider, record.outcome).inc()
        for guard in record.guards:
            if not guard.get("passed"):
                self._child(self.guard_failures, route, variant, str(guard.get("taxonomy")),
                            str(guard.get("severity"))).inc()
        if record.attempt_reason == "fallback":
            self._child(self.fallbacks, route).inc()
        elif record.attempt_reason == "retry":
            self._child(self.retries, route).inc()
        if record.served and record.ttft_ms is not None:
            self._child(self.ttft, route, variant).observe(record.ttft_ms / 1000)

    def cache_miss(self) -> None:
        self._child(self.cache, "miss").inc()

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Figures that already exist as state, read at scrape time (nothing on the request path)."""

    def __init__(self, state: Callable[[], Any], metrics: Metrics) -> None:
        self._state = state
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []  # collected lazily: the families depend on what is running

    def collect(self) -> Iterator[Any]:
        gateway = self._state()
        if gateway is None:
            return
        rec = gateway.recorder.stats()
        yield GaugeMetricFamily("sluicegate_recorder_buffered", "Records waiting to be written", value=rec["buffered"])
        yield GaugeMetricFamily("sluicegate_store_writable", "1 while the last store write succeeded; 0 from a failed "
                                "write until one succeeds (a ping does not count)",
                                value=1 if rec.get("store_healthy", True) else 0)
        for name, key, help_ in (("written", "written", "Records written to the store"),
                                 ("spilled", "spilled", "Records spilled to the local file (store slow or down)"),
                                 ("dropped", "dropped", "Records lost (spill file unwritable): should stay 0")):
            yield CounterMetricFamily(f"sluicegate_recorder_{name}", help_, value=rec[key])
        yield CounterMetricFamily(  # proxy.records._conflicts: answered 202, then found taken at write time
            "sluicegate_feedback_conflicts", "Keyed outcomes kept aside in outcome_conflicts at write time "
            "(their idempotency scope already held other content)",
            value=getattr(gateway.store, "outcome_conflicts", 0))
        if gateway.scoring is not None:
            yield from scoring_families(gateway.scoring.stats())
        canary = GaugeMetricFamily("sluicegate_canary_stage_percent", "Candidate share of a canary route", labels=["route"])
        for name, route in gateway.policy.routes.items():
            if route.canary is not None:
                stored = gateway.canary_stages.get(name)
                canary.add_metric([name], stored[0] if stored is not None else float(route.canary.stages[0]))
        yield canary
        rate = GaugeMetricFamily("sluicegate_success_rate", "Success rate per variant (latest report, every minute)",
                                 labels=["route", "variant", "metric"])
        count = GaugeMetricFamily("sluicegate_outcomes", "Outcomes behind sluicegate_success_rate",
                                  labels=["route", "variant", "metric"])
        policy = gateway.policy
        for labels, (value, n) in sorted(self._metrics.report.items()):
            route, variant, metric = labels
            if route not in policy.routes or variant not in policy.models or metric not in policy.metrics:
                continue  # e.g. a passthrough model: in /v1/reports, never a label (nor folded: these are gauges)
            if value is not None:
                rate.add_metric(list(labels), value)
            count.add_metric(list(labels), n)
        yield rate
        yield count


def scoring_families(stats: dict[str, Any]) -> Iterator[Any]:
    """The scoring figures of a `Scoring.stats()`: a gateway's, or a `sluicegate worker`'s own."""
    queue = stats.get("queue") or {}
    # waiting = not yet handed to a consumer: the memory queue's `ready`, the Redis group's `lag`
    depth = _first_number(queue, "ready", "lag") or 0
    lag = _first_number(queue, "lag")
    yield GaugeMetricFamily("sluicegate_scoring_queue_depth", "Sampled jobs waiting in the queue", value=depth)
    yield GaugeMetricFamily("sluicegate_scoring_queue_lag", "Jobs offered but not yet consumed (incl. in flight)",
                            value=lag if lag is not None else depth + (queue.get("in_flight") or 0))
    yield CounterMetricFamily("sluicegate_scoring_dropped", "Sampled jobs refused (queue full or down)",
                              value=stats.get("refused", 0) + (queue.get("dropped", 0) or 0))
    scored = CounterMetricFamily("sluicegate_scored", "Scores written", labels=["scorer"])
    for scorer, n in sorted((stats.get("by_scorer") or {}).items()):
        scored.add_metric([scorer], n)
    yield scored
    budget = stats.get("judge_budget") or {}
    yield CounterMetricFamily("sluicegate_judge_cost_usd", "LLM judge spend today (UTC), USD",
                              value=budget.get("spent_today_usd", 0.0) or 0.0)


class _WorkerCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from scoring_families(self._stats())


def serve_worker_metrics(stats: Callable[[], dict[str, Any]], port: int, host: str = "0.0.0.0") -> None:
    """`sluicegate worker --metrics-port`: its scoring figures on http://host:port/metrics (a thread)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_WorkerCollector(stats))
    start_http_server(port, addr=host, registry=registry)


def _first_number(stats: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


async def metrics_endpoint(request: Request) -> Response:
    from proxy.server._disclosure import public_metrics, shows_details

    metrics: Metrics = request.app.state.metrics
    body = metrics.render()
    return Response(body if shows_details(request) else public_metrics(body), media_type=CONTENT_TYPE_LATEST)


def report_figures(report: dict[str, Any]) -> dict[tuple[str, str, str], tuple[float | None, int]]:
    """(route, variant, metric) -> (success rate, outcomes) of every boolean metric in a report."""
    out: dict[tuple[str, str, str], tuple[float | None, int]] = {}
    for route in report["routes"]:
        for arm in route["arms"]:
            for metric, figures in arm["metrics"].items():
                if "rate" in figures and figures["n"]:
                    out[(route["route"], arm["variant"], metric)] = (figures["rate"], int(figures["n"]))
    return out
