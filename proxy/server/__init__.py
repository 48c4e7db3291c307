"""The HTTP server: the request path and the operational endpoints."""

from proxy.server._app import Settings, create_app, default_spill_path
from proxy.server._run import QuietServer, run_servers

__all__ = ["QuietServer", "Settings", "create_app", "default_spill_path", "run_servers"]
