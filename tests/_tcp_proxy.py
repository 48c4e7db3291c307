"""A TCP proxy for fault drills: put it between a process and a service (PostgreSQL, Redis), then
`cut()` it to play the service going away and `restore()` it to play the service coming back.

Why not stop the real service: the machine's PostgreSQL and Redis are shared with other tests (and
with CI jobs), so a drill must not stop them. To the process under test a cut proxy looks like a
stopped server: every open connection is closed at once and a new connection is refused (the
listening socket is closed, so `connect()` gets ECONNREFUSED). `restore()` listens again on the
same port.

The proxy runs its own asyncio loop on a daemon thread, so tests that block (subprocesses, sync
HTTP clients) can drive it:

    with TcpProxy(5432) as proxy:              # proxy.port: where the process under test connects
        ...
        proxy.cut()
        ...
        proxy.restore()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any, Self

__all__ = ["TcpProxy"]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class TcpProxy:
    """Forwards 127.0.0.1:`port` (a free one unless given) to `target_host`:`target_port`."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or _free_port(host)
        self.accepted = 0  # connections accepted since start (all of them, across cuts)
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy:{self.port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Close every connection and stop listening: new connections are refused."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ the loop's side

    async def _listen(self) -> None:
        if self._server is not None:
            return
        # reuse_address (asyncio's default on Unix): the port can be bound again right after a cut
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connections from here on (the listening socket is closed)
        self.cuts += 1
        for writer in list(self._writers):
            self._abort(writer)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if transport is not None and not transport.is_closing():
            transport.abort()  # RST-like: the peer's next read or write fails at once

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            self._abort(client_writer)
            return
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._abort(client_writer)
            return
        self._writers.update((client_writer, upstream_writer))
        pipes = [asyncio.create_task(self._pipe(client_reader, upstream_writer)),
                 asyncio.create_task(self._pipe(upstream_reader, client_writer))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                self._abort(writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
