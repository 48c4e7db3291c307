"""The dashboard's routes: every path under /ui, each behind an admin key."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.server._auth import admin_only
from proxy.ui import _api, _pages
from proxy.ui._review import REVIEW_JS

__all__ = ["STATIC", "is_form_post", "ui_routes"]

_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}


def _load_static() -> dict[str, bytes]:
    """The package's static files, read once (a fixed set: no path from a request touches the disk),
    plus the review page's own script, served as a file so the dashboard needs no inline script."""
    files = {f.name: f.read_bytes() for f in resources.files("proxy.ui").joinpath("static").iterdir()
             if f.is_file() and f.name.rsplit(".", 1)[-1] in _TYPES}
    files["review.js"] = REVIEW_JS.encode()
    return files


STATIC = _load_static()


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    body = STATIC.get(name)
    if body is None:
        return Response(f"no static file '{name}'", status_code=404, media_type="text/plain")
    return Response(body, media_type=_TYPES[name.rsplit(".", 1)[-1]],
                    headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})


def is_form_post(path: str) -> bool:
    """The dashboard's HTML form endpoints (form bodies; their handler checks token and Origin/Referer).
    Every other POST under /ui is JSON (`/ui/api/…`), checked like the gateway's own JSON endpoints."""
    return path.startswith("/ui/") and not path.startswith("/ui/api/")


def ui_routes() -> list[BaseRoute]:
    """Every dashboard route (pages, their JSON, the forms' POSTs, static files), admin-only."""
    table = [
        ("/ui", _pages.overview_page, "GET"),
        ("/ui/routes/{route}", _pages.route_page, "GET"),
        ("/ui/canary/{route}", _pages.canary_page, "GET"),
        ("/ui/canary/{route}", _pages.canary_action, "POST"),
        ("/ui/records", _pages.records_page, "GET"),
        ("/ui/records/{id}", _pages.record_page, "GET"),
        ("/ui/records/{id}/replay", _pages.replay_page, "POST"),
        ("/ui/review", _pages.review_page, "GET"),
        ("/ui/api/overview", _api.api_overview, "GET"),
        ("/ui/api/routes/{route}", _api.api_route, "GET"),
        ("/ui/api/canary/{route}", _api.api_canary, "GET"),
        ("/ui/api/records", _api.api_records, "GET"),
        ("/ui/api/records/{id}", _api.api_record, "GET"),
        ("/ui/api/records/{id}/replay", _api.api_replay, "POST"),
        ("/ui/api/review", _api.api_review, "GET"),
        ("/ui/static/{name}", static_file, "GET"),
    ]
    return [Route(path, admin_only(handler), methods=[method], name=f"ui:{handler.__name__}")
            for path, handler, method in table]
