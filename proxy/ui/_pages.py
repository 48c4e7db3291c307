"""The dashboard's HTML pages. Each renders the dict its `/ui/api/…` twin returns, nothing more."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.errors import SluicegateError
from proxy.guards import TAXONOMY_TABLE
from proxy.server._gateway import effective_taxonomy
from proxy.server._crosssite import API_ACTION, csrf_token
from proxy.server._review_page import script_json
from proxy.ui import _csrf
from proxy.ui._api import canary_page_data, metric_goals, replay_json
from proxy.ui._canary import ACTIONS, MAX_REASON_CHARS, apply_action, plan_action
from proxy.ui._params import read_form, search_params, time_range
from proxy.ui._records import FEEDBACK, OUTCOMES, record_data, search
from proxy.ui._render import html_page
from proxy.ui._reports import overview_data, route_data
from proxy.ui._review import SHORTCUTS, review_data
from proxy.ui._views import overview_chart, route_charts

__all__ = ["canary_action", "canary_page", "overview_page", "record_page", "records_page", "replay_page",
           "review_page", "route_page"]

TIME_PRESETS = (("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"), ("30d", "last 30 days"))


def _error(request: Request, status: int, message: str, title: str = "Cannot show this") -> Response:
    return html_page(request, "error.html", {"title": title, "message": message, "status": status,
                                             "api": None}, status=status)


def _sluicegate_error(request: Request, exc: SluicegateError) -> Response:
    return _error(request, exc.status, str(exc))


async def overview_page(request: Request) -> Response:
    data = await overview_data(request.app.state.gateway)
    charts = {r["route"]: overview_chart(r) for r in data["routes"]}
    return html_page(request, "overview.html", {"data": data, "charts": charts, "api": "/ui/api/overview"})


async def route_page(request: Request) -> Response:
    route = request.path_params["route"]
    query = request.query_params
    try:
        since, until = time_range(query)
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)
    data = await route_data(request.app.state.gateway, route, since, until)
    if data is None:
        return _error(request, 404, f"No route '{route}' in the policy and no records for it.")
    api = f"/ui/api/routes/{route}" + (f"?{urlencode({k: v for k, v in query.items() if k in ('since', 'until')})}"
                                        if query.get("since") or query.get("until") else "")
    return html_page(request, "route.html", {
        "data": data, "charts": route_charts(data), "api": api, "presets": TIME_PRESETS,
        "since_text": query.get("since", ""), "until_text": query.get("until", "")})


async def _canary_context(request: Request, route: str) -> dict[str, Any]:
    data = await canary_page_data(request.app.state.gateway, route)
    action = f"/ui/canary/{route}"
    return {"data": data, "api": f"/ui/api/canary/{route}", "actions": ACTIONS, "form_action": action,
            "csrf": _csrf.token(request, action), "csrf_field": _csrf.FIELD, "confirm": None, "error": None,
            "done": request.query_params.get("done"), "max_reason": MAX_REASON_CHARS}


async def canary_page(request: Request) -> Response:
    try:
        return html_page(request, "canary.html", await _canary_context(request, request.path_params["route"]))
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)


def _refused(request: Request, fields: dict[str, str], action: str) -> Response | None:
    """The 403 page when a form did not come from this gateway's own page (CSRF); else None."""
    try:
        _csrf.check(request, fields, action)
    except _csrf.CSRFRefused as exc:
        return _error(request, 403, str(exc), "Refused")
    return None


async def canary_action(request: Request) -> Response:
    """POST: first the confirmation step (what would change, and the reason), then the write."""
    route = request.path_params["route"]
    gateway = request.app.state.gateway
    try:
        fields = await read_form(request)
        context = await _canary_context(request, route)
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)
    refused = _refused(request, fields, context["form_action"])
    if refused is not None:
        return refused
    action, reason = fields.get("action", ""), fields.get("reason", "").strip()
    problem = None
    if action not in ACTIONS:
        problem = f"Choose one of: {', '.join(ACTIONS)}."
    elif not reason:
        problem = f"A reason is required to {action} the canary: it is recorded with the decision."
    elif len(reason) > MAX_REASON_CHARS:
        problem = f"The reason is {len(reason)} characters; at most {MAX_REASON_CHARS}."
    if problem is not None:
        return html_page(request, "canary.html", {**context, "error": problem, "reason": reason}, status=400)
    plan = await plan_action(gateway.store, gateway.policy, route, action)
    expected = (fields.get("expected_stage"), fields.get("expected_status"))
    if fields.get("confirm") != "yes" or expected != (f"{plan.from_stage:g}", plan.status_before):
        # not confirmed yet, or the canary moved since the confirmation was shown: (re)confirm
        moved = fields.get("confirm") == "yes"
        return html_page(request, "canary.html", {**context, "confirm": plan, "reason": reason, "moved": moved})
    await apply_action(gateway.store, plan, reason)
    return RedirectResponse(f"/ui/canary/{route}?done={action}", status_code=303)


async def records_page(request: Request) -> Response:
    gateway = request.app.state.gateway
    try:
        s = search_params(request.query_params)
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)
    found = await search(gateway.store, s, metric_goals(gateway.policy))
    query = {k: v for k, v in request.query_params.items() if k != "offset" and v}
    page = lambda offset: "/ui/records?" + urlencode({**query, "offset": offset})  # noqa: E731
    policy = gateway.policy
    return html_page(request, "records.html", {
        "found": found, "form": {k: request.query_params.get(k, "") for k in
                                 ("request_id", "episode_id", "correlation_id", "route", "variant", "guard_class",
                                  "outcome", "metric", "feedback", "since", "until")},
        "routes": sorted(policy.routes), "variants": sorted(policy.models),
        "classes": sorted(set(effective_taxonomy(policy)) | set(TAXONOMY_TABLE)), "outcomes": OUTCOMES,
        "metrics": sorted(policy.metrics), "feedback": FEEDBACK,
        "newer": page(max(0, s.offset - found["page_size"])) if s.offset else None,
        "older": page(s.offset + found["page_size"]) if found["more"] else None,
        "api": "/ui/api/records" + (f"?{urlencode(dict(request.query_params))}" if request.query_params else "")})


async def _record_context(request: Request, record_id: str) -> dict[str, Any] | None:
    data = await record_data(request.app.state.gateway, record_id)
    if data is None:
        return None
    action = f"/ui/records/{record_id}/replay"
    return {"data": data, "api": f"/ui/api/records/{record_id}", "replay": None, "replay_error": None,
            "form_action": action, "csrf": _csrf.token(request, action), "csrf_field": _csrf.FIELD, "chosen": ""}


async def record_page(request: Request) -> Response:
    record_id = request.path_params["id"]
    context = await _record_context(request, record_id)
    if context is None:
        return _error(request, 404, f"No record or request with id '{record_id}' in the store.")
    return html_page(request, "record.html", context)


async def replay_page(request: Request) -> Response:
    """POST: send the record's request again (to the recorded model or a chosen one) and show both."""
    from proxy.replay._record import load_record, replay_record
    from proxy.replay._run import ReplayUsageError

    record_id = request.path_params["id"]
    context = await _record_context(request, record_id)
    if context is None:
        return _error(request, 404, f"No record or request with id '{record_id}' in the store.")
    try:
        fields = await read_form(request)
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)
    refused = _refused(request, fields, context["form_action"])
    if refused is not None:
        return refused
    variant = fields.get("variant") or None
    context["chosen"] = variant or ""
    gateway = request.app.state.gateway
    try:
        row = await load_record(gateway.store, record_id)
        result = await replay_record(gateway.policy, row, variant=variant,
                                     transports=request.app.state.settings.transports)
    except ReplayUsageError as exc:
        return html_page(request, "record.html", {**context, "replay_error": str(exc)}, status=400)
    return html_page(request, "record.html", {**context, "replay": replay_json(result)})


async def review_page(request: Request) -> Response:
    query = request.query_params
    scorer, route = query.get("scorer") or None, query.get("route") or None
    try:
        data = await review_data(request.app.state.gateway, scorer=scorer, route=route)
    except SluicegateError as exc:
        return _sluicegate_error(request, exc)
    initial = script_json({"item": data["item"], "pending": data["pending"], "scorer": scorer, "route": route,
                           "csrf": csrf_token(request.headers, API_ACTION)})  # for the label POST (Basic login)
    api = "/ui/api/review" + (f"?{urlencode({k: v for k, v in query.items() if v})}" if query else "")
    return html_page(request, "review.html", {"data": data, "initial": initial, "shortcuts": SHORTCUTS,
                                              "api": api})
