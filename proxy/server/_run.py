"""Running uvicorn servers in one process, stopping all of them cleanly on SIGTERM or SIGINT.

uvicorn re-raises the signal after its graceful shutdown (so the process dies of SIGTERM) and each
server installs its own handlers (so a second server steals the first one's). A gateway that
drained in-flight requests and flushed its records has done its job and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator, Sequence

import uvicorn
import uvloop

__all__ = ["QuietServer", "run_servers"]


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # run_servers owns the signals


def run_servers(configs: Sequence[uvicorn.Config]) -> None:
    servers = [QuietServer(config) for config in configs]

    def stop(signum: int, frame: object) -> None:
        for server in servers:
            server.handle_exit(signum, None)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvloop.run(_serve_all(servers))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve_all(servers: Sequence[uvicorn.Server]) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _reload_all, servers)
    await asyncio.gather(*(server.serve() for server in servers))


def _reload_all(servers: Sequence[uvicorn.Server]) -> None:
    """SIGHUP: reload the policy of every app that can (a refusal is logged and kept in /readyz)."""
    for server in servers:
        reloader = getattr(getattr(server.config.app, "state", None), "reloader", None)
        if reloader is not None:
            task = asyncio.ensure_future(reloader.reload())
            task.add_done_callback(_quiet)


def _quiet(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # a refusal is already logged by the reloader
