"""GET /v1/reports and GET /v1/reports/{route}: the report engine's JSON."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import InvalidRequest, RouteNotFound, error_response
from proxy.reports import build_report, policy_sections, report_inputs
from proxy.times import time_range

__all__ = ["reports", "route_report"]


async def _report(request: Request, route: str | None) -> Response:
    gateway = request.app.state.gateway
    try:
        since, until = time_range(request.query_params)
    except InvalidRequest as exc:
        return error_response(exc)
    report = await build_report(gateway.store, route=route, since=since, until=until,
                                **report_inputs(gateway.policy))
    report.update(await policy_sections(gateway.store, gateway.policy, route=route, since=since, until=until))
    if route is not None and not report["routes"]:
        known = route in getattr(gateway.policy, "routes", {})
        if not known:
            return error_response(RouteNotFound(f"no route '{route}' in the policy and no records for it",
                                                param="route"))
    return Response(orjson.dumps(report), media_type="application/json")


async def reports(request: Request) -> Response:
    return await _report(request, None)


async def route_report(request: Request) -> Response:
    return await _report(request, request.path_params["route"])
