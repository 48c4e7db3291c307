"""The ASGI application: endpoints, and the lifespan that builds and tears down the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.middleware import Middleware
from starlette.routing import Route

from proxy.canary._state import read_stages, start_runs
from proxy.config import load_policy
from proxy.errors import SluicegateError, error_response
from proxy.logs import flush_logs, get_logger, set_secrets
from proxy.records import Recorder, open_store
from proxy.server._auth import Authenticator, admin_only
from proxy.server._cache import ResponseCache
from proxy.server._crosssite import CrossSiteCheck
from proxy.server._hosts import HostCheck
from proxy.server._limits import HeaderLimit, ProviderSlots, RateLimiter
from proxy.server._metrics import Metrics, metrics_endpoint, report_figures
from proxy.server._openapi import openapi_json
from proxy.ui import is_form_post, ui_routes
from proxy.server._feedback_api import feedback, feedback_batch
from proxy.server._gateway import build_providers, compile_routes
from proxy.server._inference import serve_inference
from proxy.server._ops import healthz, list_models, readyz
from proxy.server._reload import Reloader, admin_reload, watch_policy_file
from proxy.server._reports_api import reports, route_report
from proxy.server._review_api import add_review, label_review, next_review
from proxy.server._review_page import review_page
from proxy.server._state import Gateway
from proxy.scoring import build_scoring, open_queue
from proxy.scoring._trust import judge_spent_today

__all__ = ["Settings", "create_app", "default_spill_path"]

log = get_logger("sluicegate.server")


@dataclasses.dataclass
class Settings:
    policy_path: str | Path | None = None
    policy: Any = None  # an already-loaded Policy (tests); wins over policy_path
    store_url: str = "sqlite:///./sluicegate.db"
    spill_path: str | Path | None = None
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None  # provider name -> transport (tests)
    recorder_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scoring: str = "inprocess"  # inprocess: a background task scores; external: `sluicegate worker` does
    queue_url: str = "memory"  # memory: in-process; redis://…: sampled jobs go to a Redis stream
    queue_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # RedisStreamQueue's (stream, group, …)
    watch_policy_s: float | None = None  # poll the policy file this often and reload when it changes
    report_metrics_every_s: float = 60.0  # success rate per variant for /metrics (one replica; 0: off)


def default_spill_path(store_url: str, port: int | None = None) -> Path:
    """Next to an SQLite file; else in the working directory, named by the port (two replicas on one
    host never share one, and a restarted replica replays its own)."""
    if store_url.startswith("sqlite:///"):
        return Path(store_url[len("sqlite:///"):] + ".spill.jsonl")
    return Path(f"sluicegate-{port}.spill.jsonl" if port else "sluicegate.spill.jsonl")


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    policy = settings.policy if settings.policy is not None else load_policy(settings.policy_path)
    set_secrets(policy.secrets())
    providers = build_providers(policy, settings.transports)
    store = open_store(settings.store_url)
    try:
        await store.open()
    except Exception as exc:  # the recorder spills until the store can be reached
        log.error("store_open_failed", store=store.url, error=str(exc))
    recorder = Recorder(store, spill_path=settings.spill_path or default_spill_path(settings.store_url),
                        **dict(settings.recorder_options))
    await recorder.start()
    scoring = None
    # a durable queue: this gateway offers sampled jobs to it (and consumes them too with `inprocess`)
    queue = open_queue(settings.queue_url, policy, consume=settings.scoring == "inprocess",
                       **dict(settings.queue_options))
    if settings.scoring == "inprocess" or queue is not None:
        scoring = build_scoring(policy, providers, recorder, store, await _judge_spent(store), queue=queue)
    app.state.scoring_queue = queue if scoring is not None else None
    if app.state.scoring_queue is not None:
        await app.state.scoring_queue.start()
    app.state.metrics = Metrics(state=lambda: getattr(app.state, "gateway", None))
    app.state.gateway = Gateway(policy=policy, routes=compile_routes(policy), providers=providers,
                                recorder=recorder, store=store, max_body_bytes=policy.server.max_body_bytes,
                                scoring=scoring, cache=ResponseCache(store, recorder), metrics=app.state.metrics,
                                auth=Authenticator(policy.auth), limiter=RateLimiter(policy.auth.rate_limit_store),
                                slots=ProviderSlots(policy))
    if app.state.gateway.auth.open:
        log.warning("auth_off", message="no caller keys in the policy (auth.keys): anyone who can reach this "
                                        "port may call; bind to 127.0.0.1 or add keys",
                    allowed_hosts=policy.server.allowed_hosts or "localhost, 127.0.0.1, [::1] (server.allowed_hosts)")
    app.state.scoring_task = (asyncio.create_task(scoring.run(), name="sluicegate-scoring")
                              if scoring is not None and settings.scoring == "inprocess" else None)
    app.state.reloader = Reloader(app)
    await _start_canary_runs(store, policy)
    # always running: a reload may add a canary route (the controller idles while there is none)
    app.state.canary_task = asyncio.create_task(_refresh_canary_stages(app), name="sluicegate-canary-stages")
    background = [app.state.canary_task, asyncio.create_task(app.state.gateway.limiter.run(),
                                                             name="sluicegate-ratelimit-sync")]
    if settings.report_metrics_every_s:
        background.append(asyncio.create_task(_refresh_report_metrics(app, settings.report_metrics_every_s),
                                              name="sluicegate-report-metrics"))
    if settings.watch_policy_s and settings.policy_path is not None:
        background.append(watch_policy_file(app.state.reloader, settings.policy_path, settings.watch_policy_s))
    log.info("ready", policy=str(policy.source), version=policy.version, routes=sorted(policy.routes),
             store=store.url)
    try:
        yield
    finally:
        log.info("shutting_down")
        gateway = app.state.gateway  # the current one: a reload may have replaced it
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        scoring_task = app.state.scoring_task
        if scoring_task is not None:
            scoring_task.cancel()
            await asyncio.gather(scoring_task, return_exceptions=True)
            # the in-process queue is not durable: what was not scored is counted here (use
            # `--scoring external` and `sluicegate worker` when every sampled answer must be scored)
            log.info("scoring_stopped", **gateway.scoring.stats())
        await gateway.shadows.drain(timeout=5.0)
        log.info("shadows_stopped", **gateway.shadows.stats())
        if app.state.scoring_queue is not None:  # after the shadows (they offer too); what is left is logged
            await app.state.scoring_queue.close(timeout=5.0)
            log.info("scoring_queue_closed", **app.state.scoring_queue.stats())
        await recorder.stop()
        await app.state.reloader.close_pending()
        for adapter in gateway.providers.values():
            await adapter.close()
        await store.close()
        log.info("stopped", recorder=recorder.stats())
        flush_logs()


CANARY_REFRESH_S = 2.0
REPORT_METRICS_LEASE = "report-metrics"


async def _refresh_report_metrics(app: Starlette, every_s: float) -> None:
    """The report's success rate per variant as gauges, computed by one replica (the lease holder)."""
    from proxy.canary._controller import HOLDER
    from proxy.reports import build_report, report_inputs

    while True:
        await asyncio.sleep(every_s)
        gateway = app.state.gateway
        try:
            if await gateway.store.try_lease(REPORT_METRICS_LEASE, HOLDER, ttl_s=3 * every_s):
                report = await build_report(gateway.store, **report_inputs(gateway.policy))
                app.state.metrics.report = report_figures(report)
        except Exception as exc:  # noqa: BLE001 - metrics must never take serving down
            log.warning("report_metrics_failed", error=f"{type(exc).__name__}: {exc}"[:300])


async def _start_canary_runs(store: Any, policy: Any) -> None:
    """A run for each canary route without one, before serving: its decisions read only what comes after."""
    if store.url == "none://" or not any(route.canary is not None for route in policy.routes.values()):
        return
    try:
        await asyncio.wait_for(start_runs(store, policy), timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - the store is down or slow: the controller starts the runs later
        log.warning("canary_runs_not_started", error=f"{type(exc).__name__}: {exc}"[:300])


async def _refresh_canary_stages(app: Starlette) -> None:
    """Every few seconds: the canary stages from the store, so every replica routes the same share;
    and the controller, which decides only in the process holding the store's lease."""
    from proxy.canary._controller import run_controller

    controller = asyncio.create_task(run_controller(lambda: app.state.gateway), name="sluicegate-canary")
    try:
        await _refresh_stages_forever(app)
    finally:
        controller.cancel()
        await asyncio.gather(controller, return_exceptions=True)


async def _refresh_stages_forever(app: Starlette) -> None:
    while True:
        gateway = app.state.gateway
        if not any(route.canary is not None for route in gateway.policy.routes.values()):
            await asyncio.sleep(CANARY_REFRESH_S)
            continue
        try:
            gateway.canary_stages.update(await read_stages(gateway.store))
        except Exception as exc:  # noqa: BLE001 - the store is down: keep routing on the last stages
            log.warning("canary_stages_unread", error=str(exc)[:300])
        await asyncio.sleep(CANARY_REFRESH_S)


async def _judge_spent(store: Any) -> float:
    try:
        return await judge_spent_today(store)
    except Exception as exc:  # noqa: BLE001 - the store is down: start the budget at zero, say so
        log.warning("judge_budget_unseeded", error=str(exc)[:300])
        return 0.0


async def _not_found(request: Request, exc: Exception) -> Response:
    return _shaped(404, f"no endpoint at {request.url.path}", "not_found")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return _shaped(405, f"{request.method} is not allowed on {request.url.path}", "method_not_allowed")


async def _sluicegate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SluicegateError)
    return error_response(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal_error", path=request.url.path)
    return _shaped(500, "internal error in Sluicegate (the upstream was not at fault); see the server log",
                   "internal_error", "server_error")


def _shaped(status: int, message: str, code: str, type_: str = "invalid_request_error") -> Response:
    error = SluicegateError(message, code=code)
    error.status, error.type = status, type_
    return error_response(error)


def create_app(settings: Settings) -> Starlette:
    routes = [
        Route("/v1/chat/completions", partial(serve_inference, endpoint="chat.completions"), methods=["POST"]),
        Route("/v1/completions", partial(serve_inference, endpoint="completions"), methods=["POST"]),
        Route("/v1/embeddings", partial(serve_inference, endpoint="embeddings"), methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/v1/feedback/batch", feedback_batch, methods=["POST"]),
        Route("/v1/reports", admin_only(reports), methods=["GET"]),
        Route("/v1/reports/{route}", admin_only(route_report), methods=["GET"]),
        Route("/v1/review", admin_only(add_review), methods=["POST"]),
        Route("/v1/review/next", admin_only(next_review), methods=["GET"]),
        Route("/v1/review/{id}", admin_only(label_review), methods=["POST"]),
        Route("/review", admin_only(review_page), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/admin/reload", admin_only(admin_reload), methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    routes.extend(ui_routes())  # the dashboard (/ui), admin only
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        # Host first (DNS rebinding), then header size, then cross-site state changes (CSRF)
        middleware=[Middleware(HostCheck), Middleware(HeaderLimit),
                    Middleware(CrossSiteCheck, form_post=is_form_post)],
        exception_handlers={404: _not_found, 405: _method_not_allowed, SluicegateError: _sluicegate_error,
                            Exception: _internal_error},
    )
    app.state.settings = settings
    return app
