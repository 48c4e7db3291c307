"""Serving the mock with uvicorn: `serve()` for the command line, `MockServer` (a background thread) for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from proxy.mock_upstream._app import create_app
from proxy.mock_upstream._config import MockConfig

__all__ = ["serve", "MockServer"]


def _uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          timeout_graceful_shutdown=2)


async def serve(host: str, port: int, config: MockConfig | None = None) -> None:
    """Run the mock upstream with uvicorn until interrupted (log level warning)."""
    server = uvicorn.Server(_uvicorn_config(create_app(config), host, port))
    await server.serve()


class MockServer:
    """The mock upstream served by uvicorn in a background thread, for tests and benchmarks.

    >>> with MockServer() as mock:          # a free port on 127.0.0.1
    ...     client = openai.OpenAI(base_url=mock.base_url, api_key="x")
    """

    def __init__(self, config: MockConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app(config)
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(self.app, host, self.port))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://host:port` (the control API lives under `/_mock`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`, the OpenAI base URL."""
        return f"{self.url}/v1"

    def start(self, timeout: float = 10.0) -> MockServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"mock-upstream-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"mock upstream did not start on {self.url}")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._thread = None
        self._sock.close()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
