"""`sluicegate serve` with the dashboard's routes, for the browser tests.

Runs the real command (`proxy.cli.main`, uvicorn, the whole lifespan). Until the gateway's
`create_app` adds `ui_routes()` itself, this adds them to the app `serve` builds; once it does,
nothing is added twice. Usage: `python -m tests.ui._serve serve --policy … --port …`.
"""

from __future__ import annotations

import sys
from typing import Any

import proxy.server
from proxy.cli import main
from proxy.ui import ui_routes

_create_app = proxy.server.create_app


def _with_ui(settings: Any) -> Any:
    app = _create_app(settings)
    if not any(getattr(route, "path", "").startswith("/ui") for route in app.router.routes):
        app.router.routes.extend(ui_routes())
    return app


proxy.server.create_app = _with_ui  # `serve` imports it from proxy.server when it runs

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
