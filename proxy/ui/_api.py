"""`/ui/api/…`: each page's figures as JSON — the same dict the page is rendered from.

Tests and scripts read these to check a page without parsing HTML; they are also what the pages'
own script fetches to refresh (the review progress).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, RouteNotFound, SluicegateError, error_response
from proxy.ui._canary import canary_data
from proxy.ui._params import search_params, time_range
from proxy.ui._records import record_data, search
from proxy.ui._render import json_response
from proxy.ui._reports import full_report, overview_data, route_data
from proxy.ui._review import review_data

__all__ = ["api_canary", "api_overview", "api_record", "api_records", "api_replay", "api_review", "api_route",
           "canary_page_data", "metric_goals", "replay_json"]


def metric_goals(policy: Any) -> dict[str, str]:
    return {name: metric.goal for name, metric in policy.metrics.items()}


def _not_found(message: str, param: str) -> RouteNotFound:
    return RouteNotFound(message, param=param, code="not_found")


async def canary_page_data(gateway: Any, route: str) -> dict[str, Any]:
    """The canary page's figures, with the arms' current figures from the report."""
    report = await full_report(gateway, route)
    current = next((r for r in report["routes"] if r["route"] == route), None)
    data = await canary_data(gateway, route, current)
    if data is None:
        canaries = sorted(n for n, r in gateway.policy.routes.items() if r.canary is not None) or ["none"]
        raise _not_found(f"no canary route '{route}' in the policy; its canary routes: {', '.join(canaries)}", "route")
    return data


async def api_overview(request: Request) -> Response:
    return json_response(await overview_data(request.app.state.gateway))


async def api_route(request: Request) -> Response:
    route = request.path_params["route"]
    try:
        since, until = time_range(request.query_params)
        data = await route_data(request.app.state.gateway, route, since, until)
        if data is None:
            raise _not_found(f"no route '{route}' in the policy and no records for it", "route")
    except SluicegateError as exc:
        return error_response(exc)
    return json_response(data)


async def api_canary(request: Request) -> Response:
    try:
        return json_response(await canary_page_data(request.app.state.gateway, request.path_params["route"]))
    except SluicegateError as exc:
        return error_response(exc)


async def api_records(request: Request) -> Response:
    gateway = request.app.state.gateway
    try:
        found = await search(gateway.store, search_params(request.query_params), metric_goals(gateway.policy))
    except SluicegateError as exc:
        return error_response(exc)
    return json_response(found)


async def api_record(request: Request) -> Response:
    record_id = request.path_params["id"]
    data = await record_data(request.app.state.gateway, record_id)
    if data is None:
        return error_response(_not_found(f"no record or request with id '{record_id}' in the store", "id"))
    return json_response(data)


async def api_review(request: Request) -> Response:
    query = request.query_params
    try:
        data = await review_data(request.app.state.gateway, scorer=query.get("scorer") or None,
                                 route=query.get("route") or None)
    except SluicegateError as exc:
        return error_response(exc)
    return json_response(data)


def replay_json(result: Any) -> dict[str, Any]:
    """A `RecordReplay` with both answers' text, as the record page shows them side by side."""
    from proxy.scoring import answer_text

    out = result.to_dict()
    for side, source in (("recorded", result.recorded), ("replayed", result.replayed)):
        out[side]["text"] = answer_text(source.response) if isinstance(source.response, dict) else None
        out[side]["passed_guards"] = source.answered and not source.guards
    return out


async def api_replay(request: Request) -> Response:
    """POST {"variant": MODEL or null}: re-send the record's request (JSON only, so a form on another
    site cannot post here without the browser asking this gateway first)."""
    from proxy.replay._record import load_record, replay_record
    from proxy.replay._run import ReplayUsageError

    gateway = request.app.state.gateway
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error_response(InvalidRequest("send the replay as JSON: content-type application/json, "
                                             'body {"variant": "<model>"} (or null for the recorded model)'))
    try:
        body = await request.json()
    except ValueError:
        return error_response(InvalidRequest("the body is not JSON"))
    variant = body.get("variant") if isinstance(body, dict) else None
    if variant is not None and not isinstance(variant, str):
        return error_response(InvalidRequest("'variant' must be a model name or null", param="variant"))
    try:
        row = await load_record(gateway.store, request.path_params["id"])
        result = await replay_record(gateway.policy, row, variant=variant or None,
                                     transports=request.app.state.settings.transports)
    except ReplayUsageError as exc:
        return error_response(InvalidRequest(str(exc), param="variant"))
    return json_response(replay_json(result))
