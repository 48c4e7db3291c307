"""The HTTP server: the request path and the operational endpoints."""

from proxy.server._app import Settings, create_app, default_spill_path

__all__ = ["Settings", "create_app", "default_spill_path"]
